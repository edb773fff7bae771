//! `StdNetwork` against real sockets on 127.0.0.1.
//!
//! Every listener is domain port 80, 81, ... forwarded to host port 0, so
//! the OS picks a free port and the tests run in parallel; the test asks
//! the network which port it got. Waits are bounded polls (a loopback
//! packet arrives in microseconds; [`DEADLINE`] only bounds a failure).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use vm::net::{ConnectionId, NetError, Network};
use vm::{DomainId, PortMap, StdNetwork};

const DEADLINE: Duration = Duration::from_secs(5);
const ALICE: DomainId = DomainId(1);
const BOB: DomainId = DomainId(2);

/// A network whose domain ports `ports` are forwarded to OS-chosen ports.
fn network(ports: &[u16]) -> StdNetwork {
    let mut map = PortMap::identity();
    for &port in ports {
        map.forward(0, port);
    }
    StdNetwork::new(map)
}

/// Polls `condition` until it holds or the deadline passes.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn client(network: &StdNetwork, domain: DomainId, port: u16) -> TcpStream {
    let host_port = network.bound_port(domain, port).expect("listening");
    let stream = TcpStream::connect(("127.0.0.1", host_port)).expect("connecting");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("setting a read timeout");
    stream
}

fn accept(network: &StdNetwork, domain: DomainId, port: u16) -> ConnectionId {
    eventually("a client", || network.listener_has_client(domain, port));
    network.accept(domain, port).expect("accepting")
}

/// Reads until `length` bytes or the deadline.
fn read_exactly(network: &StdNetwork, connection: ConnectionId, length: usize) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    eventually("data", || {
        match network.read(connection, &mut buffer) {
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(NetError::WouldBlock) => {}
            Err(error) => panic!("read failed: {error}"),
        }
        received.len() >= length
    });
    received
}

#[test]
fn listens_accepts_and_talks_both_ways() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    // Listening again on a port the domain holds is fine.
    network.listen(ALICE, 80).expect("listening again");
    let host_port = network.bound_port(ALICE, 80).expect("bound");
    assert_ne!(host_port, 0);
    assert!(!network.listener_has_client(ALICE, 80));
    assert_eq!(network.accept(ALICE, 80), Err(NetError::WouldBlock));

    let mut peer = client(&network, ALICE, 80);
    let connection = accept(&network, ALICE, 80);
    assert!(network.connection_readiness(connection).writable);
    assert!(!network.connection_readiness(connection).readable);
    let mut buffer = [0_u8; 16];
    assert_eq!(
        network.read(connection, &mut buffer),
        Err(NetError::WouldBlock)
    );

    peer.write_all(b"PING\r\n").expect("client writes");
    eventually("readable", || {
        network.connection_readiness(connection).readable
    });
    assert_eq!(read_exactly(&network, connection, 6), b"PING\r\n");

    assert_eq!(network.write(connection, b"+PONG\r\n"), Ok(7));
    let mut reply = [0_u8; 7];
    peer.read_exact(&mut reply).expect("client reads");
    assert_eq!(&reply, b"+PONG\r\n");

    // The peer closes: the connection reads the end of the stream.
    drop(peer);
    eventually("hangup", || network.connection_readiness(connection).hangup);
    assert_eq!(network.read(connection, &mut buffer), Ok(0));
    network.close(connection);
    assert_eq!(network.read(connection, &mut buffer), Err(NetError::Closed));
    assert!(network.connection_readiness(connection).hangup);
}

#[test]
fn shutdown_sends_the_end_after_the_queue() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    let mut peer = client(&network, ALICE, 80);
    let connection = accept(&network, ALICE, 80);
    // More than the kernel's socket buffer takes at once, so some is queued.
    let message: Vec<u8> = (0..8_000_000_u32).map(|index| index as u8).collect();
    let mut sent = 0;
    while sent < message.len() {
        match network.write(connection, &message[sent..]) {
            Ok(written) => sent += written,
            Err(NetError::WouldBlock) => break,
            Err(error) => panic!("write failed: {error}"),
        }
    }
    assert!(sent > 0 && sent < message.len(), "sent {sent}");
    assert!(
        !network.connection_readiness(connection).writable,
        "a full queue is not writable"
    );
    network.shutdown(connection);
    assert_eq!(network.write(connection, b"x"), Err(NetError::Closed));
    // Reading drains the socket; the network's queue follows as the calls
    // below push it, then the end of the stream.
    let reader = std::thread::spawn(move || {
        let mut received = Vec::new();
        peer.read_to_end(&mut received)
            .expect("client reads to the end");
        received
    });
    let started = Instant::now();
    while !reader.is_finished() {
        assert!(started.elapsed() < DEADLINE, "the queue was never sent");
        let _ = network.connection_readiness(connection);
        std::thread::sleep(Duration::from_millis(1));
    }
    let received = reader.join().expect("reader thread");
    assert_eq!(received.len(), sent);
    assert_eq!(received, message[..sent]);
}

#[test]
fn a_reply_written_before_close_is_still_sent() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    let mut peer = client(&network, ALICE, 80);
    let connection = accept(&network, ALICE, 80);
    // More than the kernel's socket buffer takes at once, so some is queued.
    let message = vec![7_u8; 8_000_000];
    let mut sent = 0;
    while sent < message.len() {
        match network.write(connection, &message[sent..]) {
            Ok(written) => sent += written,
            Err(_) => break,
        }
    }
    assert!(sent < message.len(), "the socket took all {sent} bytes");
    network.close(connection);
    // Still counted while it lingers with bytes to send.
    assert_eq!(network.connection_count(ALICE), 1);
    let reader = std::thread::spawn(move || {
        let mut received = Vec::new();
        peer.read_to_end(&mut received)
            .expect("client reads to the end");
        received.len()
    });
    let started = Instant::now();
    while !reader.is_finished() {
        assert!(
            started.elapsed() < DEADLINE,
            "the lingering queue was never sent"
        );
        let _ = network.listener_has_client(ALICE, 80);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reader.join().expect("reader thread"), sent);
    eventually("the lingering connection gone", || {
        let _ = network.listener_has_client(ALICE, 80);
        network.connection_count(ALICE) == 0
    });
}

#[test]
fn a_reset_reads_as_reset() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    let peer = client(&network, ALICE, 80);
    let connection = accept(&network, ALICE, 80);
    // A client that closes with unread data makes its kernel send RST.
    assert_eq!(network.write(connection, b"unread"), Ok(6));
    std::thread::sleep(Duration::from_millis(20));
    drop(peer);
    let mut buffer = [0_u8; 16];
    eventually("the reset", || {
        network.connection_readiness(connection).hangup
    });
    let mut outcome = network.read(connection, &mut buffer);
    // A write after the RST fails too, whichever the read saw.
    if outcome == Ok(0) {
        outcome = network.write(connection, b"more").map(|_| 0);
        if outcome.is_ok() {
            std::thread::sleep(Duration::from_millis(20));
            outcome = network.write(connection, b"more").map(|_| 0);
        }
    }
    assert_eq!(outcome, Err(NetError::Reset));
    let readiness = network.connection_readiness(connection);
    assert!(readiness.hangup && readiness.readable);
    assert_eq!(network.read(connection, &mut buffer), Err(NetError::Reset));
}

#[test]
fn the_connection_cap_leaves_clients_in_the_backlog() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    let mut peers = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..abi::MAX_CONNECTIONS_PER_DOMAIN {
        peers.push(client(&network, ALICE, 80));
        connections.push(accept(&network, ALICE, 80));
    }
    assert_eq!(
        network.connection_count(ALICE),
        abi::MAX_CONNECTIONS_PER_DOMAIN
    );
    // One more client: it waits in the OS backlog, not accepted.
    let mut late = client(&network, ALICE, 80);
    std::thread::sleep(Duration::from_millis(20));
    assert!(!network.listener_has_client(ALICE, 80));
    assert_eq!(network.accept(ALICE, 80), Err(NetError::LimitReached));
    // Connecting out counts against the same cap.
    let other = TcpListener::bind("127.0.0.1:0").expect("binding");
    let other_port = other.local_addr().expect("address").port();
    assert_eq!(
        network.connect(ALICE, [127, 0, 0, 1], other_port),
        Err(NetError::LimitReached)
    );
    // Closing one makes room: the late client is accepted and served.
    let first = connections.remove(0);
    network.close(first);
    let connection = accept(&network, ALICE, 80);
    late.write_all(b"hi").expect("late client writes");
    assert_eq!(read_exactly(&network, connection, 2), b"hi");
}

#[test]
fn a_port_belongs_to_one_domain() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    assert_eq!(network.listen(BOB, 80), Err(NetError::PortTaken));
    assert_eq!(network.accept(BOB, 80), Err(NetError::NotListening));
    assert!(!network.listener_has_client(BOB, 80));
    // Bob cannot take Alice's port away.
    network.unlisten(BOB, 80);
    assert!(network.bound_port(ALICE, 80).is_some());
    network.unlisten(ALICE, 80);
    network
        .listen(BOB, 80)
        .expect("Bob listens once Alice let go");
}

#[test]
fn a_host_port_in_use_is_taken() {
    let squatter = TcpListener::bind("127.0.0.1:0").expect("binding");
    let port = squatter.local_addr().expect("address").port();
    let network = StdNetwork::new(PortMap::identity());
    assert_eq!(network.listen(ALICE, port), Err(NetError::PortTaken));
}

#[test]
fn listeners_are_on_loopback_only() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    let host_port = network.bound_port(ALICE, 80).expect("bound");
    // The same port is free on another loopback address, which it would
    // not be had the listener bound 0.0.0.0.
    let _other = TcpListener::bind(("127.0.0.2", host_port)).expect("127.0.0.2 is free");
    let _ = client(&network, ALICE, 80);
}

#[test]
fn the_port_map_offsets_and_forwards() {
    let mut map = PortMap::with_offset(10_000);
    assert_eq!(map.host_port(6379), Some(16_379));
    assert_eq!(map.host_port(60_000), None);
    map.forward(8080, 80);
    assert_eq!(map.host_port(80), Some(8080));
    assert_eq!(PortMap::identity().host_port(6379), Some(6379));
    let network = StdNetwork::new(PortMap::with_offset(u16::MAX));
    assert_eq!(network.listen(ALICE, 5), Err(NetError::Refused));
}

#[test]
fn connects_to_loopback_only() {
    let network = network(&[80]);
    for address in [
        [10, 0, 0, 1],
        [192, 168, 1, 1],
        [127, 0, 0, 2],
        [0, 0, 0, 0],
    ] {
        assert_eq!(
            network.connect(ALICE, address, 80),
            Err(NetError::Refused),
            "{address:?}"
        );
    }
    // Nothing listens: refused.
    let unused = TcpListener::bind("127.0.0.1:0").expect("binding");
    let unused_port = unused.local_addr().expect("address").port();
    drop(unused);
    assert_eq!(
        network.connect(ALICE, [127, 0, 0, 1], unused_port),
        Err(NetError::Refused)
    );
    // A host server on 127.0.0.1.
    let server = TcpListener::bind("127.0.0.1:0").expect("binding");
    let server_port = server.local_addr().expect("address").port();
    let connection = network
        .connect(ALICE, [127, 0, 0, 1], server_port)
        .expect("connecting");
    let (mut accepted, _) = server.accept().expect("server accepts");
    eventually("writable", || {
        network.connection_readiness(connection).writable
    });
    assert_eq!(network.write(connection, b"ok"), Ok(2));
    let mut reply = [0_u8; 2];
    accepted.read_exact(&mut reply).expect("server reads");
    assert_eq!(&reply, b"ok");
}

#[test]
fn a_domain_reaches_another_at_its_domain_port() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    // Bob connects to domain port 80, which is at an OS-chosen host port.
    let outgoing = network
        .connect(BOB, [127, 0, 0, 1], 80)
        .expect("connecting");
    let incoming = accept(&network, ALICE, 80);
    assert_eq!(network.write(outgoing, b"hello"), Ok(5));
    assert_eq!(read_exactly(&network, incoming, 5), b"hello");
}

#[test]
fn forget_domain_closes_everything() {
    let network = network(&[80, 81]);
    network.listen(ALICE, 80).expect("listening");
    network.listen(ALICE, 81).expect("listening");
    let mut peer = client(&network, ALICE, 80);
    let connection = accept(&network, ALICE, 80);
    let host_port = network.bound_port(ALICE, 81).expect("bound");
    network.forget_domain(ALICE);
    assert_eq!(network.connection_count(ALICE), 0);
    assert_eq!(network.bound_port(ALICE, 80), None);
    assert_eq!(network.accept(ALICE, 80), Err(NetError::NotListening));
    let mut buffer = [0_u8; 4];
    assert_eq!(network.read(connection, &mut buffer), Err(NetError::Closed));
    // The client sees the end of the stream (or a reset), never a hang.
    match peer.read(&mut buffer) {
        Ok(0) => {}
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("unexpected {other:?}"),
    }
    // The port is free again on the host.
    let _again = TcpListener::bind(("127.0.0.1", host_port)).expect("the port is free");
    // Another domain's sockets are untouched.
    network.listen(BOB, 80).expect("Bob takes the port");
    peer.shutdown(Shutdown::Both).ok();
}

#[test]
fn the_platform_hands_out_its_network() {
    use vm::{Platform, StdPlatform};
    let network = std::sync::Arc::new(network(&[80]));
    let platform = StdPlatform::with_network(network.clone());
    platform.network().listen(ALICE, 80).expect("listening");
    assert!(network.bound_port(ALICE, 80).is_some());
    // Without one, the platform has no network.
    assert_eq!(
        StdPlatform::default().network().listen(ALICE, 80),
        Err(NetError::Unsupported)
    );
}

/// `wait` ends when what a readiness question found idle becomes ready: a
/// client on a watched listener, then bytes on a watched connection; with
/// nothing watched it sleeps its whole timeout.
#[test]
fn wait_wakes_for_what_was_found_idle() {
    let network = network(&[80]);
    network.listen(ALICE, 80).expect("listening");
    let host_port = network.bound_port(ALICE, 80).expect("bound");

    // Nothing asked about yet: the whole timeout passes.
    let started = Instant::now();
    network.wait(Duration::from_millis(50));
    assert!(started.elapsed() >= Duration::from_millis(50));

    // The listener was found idle, so a client ends the wait.
    assert!(!network.listener_has_client(ALICE, 80));
    let connecting = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        TcpStream::connect(("127.0.0.1", host_port)).expect("connecting")
    });
    let started = Instant::now();
    network.wait(DEADLINE * 4);
    assert!(
        started.elapsed() < DEADLINE,
        "a client did not end the wait"
    );
    let mut peer = connecting.join().expect("the client thread");
    let connection = accept(&network, ALICE, 80);

    // The connection was found with nothing to read: a byte ends the wait.
    assert!(!network.connection_readiness(connection).readable);
    let sending = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        peer.write_all(b"x").expect("sending");
        peer
    });
    let started = Instant::now();
    network.wait(DEADLINE * 4);
    assert!(started.elapsed() < DEADLINE, "bytes did not end the wait");
    let _peer = sending.join().expect("the sender thread");
    assert!(network.connection_readiness(connection).readable);
}

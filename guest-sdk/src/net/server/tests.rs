//! The server loop against a fake network: clients that send, stall,
//! leave, reset and flood.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::{Backend, Flow, Server, ServerLimits, Service};
use crate::net::{NetError, PollEntry, Ready, Socket};

const LISTENER: Socket = Socket(3);

/// One client, as the fake network sees it.
#[derive(Debug, Default)]
struct Client {
    /// Bytes sent to the server, not read yet.
    sent: VecDeque<u8>,
    has_ended: bool,
    is_reset: bool,
    /// Bytes the server wrote.
    received: Vec<u8>,
    /// How many more bytes a write may take.
    room: usize,
    is_closed: bool,
}

#[derive(Debug, Default)]
struct FakeNetwork {
    now_ns: u64,
    waiting: VecDeque<u32>,
    clients: BTreeMap<u32, Client>,
    polls: Vec<Vec<(u32, u16)>>,
}

impl FakeNetwork {
    /// A client with `room` bytes of room for replies, waiting to be accepted.
    fn connect(&mut self, number: u32, room: usize) {
        self.waiting.push_back(number);
        self.clients.insert(
            number,
            Client {
                room,
                ..Client::default()
            },
        );
    }

    fn client(&mut self, number: u32) -> &mut Client {
        self.clients.get_mut(&number).expect("a known client")
    }

    fn send(&mut self, number: u32, bytes: &[u8]) {
        self.client(number).sent.extend(bytes);
    }

    fn received(&mut self, number: u32) -> String {
        String::from_utf8(self.client(number).received.clone()).expect("text")
    }

    fn open_client(&mut self, socket: Socket) -> Result<&mut Client, NetError> {
        match self.clients.get_mut(&socket.number()) {
            Some(client) if !client.is_closed => Ok(client),
            _ => Err(NetError::NoSuchSocket),
        }
    }
}

impl Backend for FakeNetwork {
    fn now_ns(&mut self) -> u64 {
        self.now_ns
    }

    fn poll(&mut self, entries: &mut [PollEntry], _: Duration) -> Result<usize, NetError> {
        self.polls.push(
            entries
                .iter()
                .map(|entry| (entry.socket.number(), entry.interest.bits()))
                .collect(),
        );
        let mut ready_count = 0;
        for entry in entries.iter_mut() {
            let mut bits = 0;
            if entry.socket == LISTENER {
                if !self.waiting.is_empty() {
                    bits |= abi::readiness::READABLE;
                }
            } else {
                let client = self.open_client(entry.socket)?;
                if !client.sent.is_empty() || client.has_ended {
                    bits |= abi::readiness::READABLE;
                }
                if client.room > 0 {
                    bits |= abi::readiness::WRITABLE;
                }
                bits &= entry.interest.bits();
                if client.is_reset {
                    bits |= abi::readiness::HANGUP;
                }
            }
            entry.ready = Ready::from_bits(bits);
            if bits != 0 {
                ready_count += 1;
            }
        }
        Ok(ready_count)
    }

    fn accept(&mut self, listener: Socket) -> Result<Socket, NetError> {
        assert_eq!(listener, LISTENER);
        self.waiting
            .pop_front()
            .map(Socket)
            .ok_or(NetError::Timeout)
    }

    fn read(&mut self, socket: Socket, buffer: &mut [u8]) -> Result<usize, NetError> {
        let client = self.open_client(socket)?;
        if client.is_reset {
            return Err(NetError::ConnectionReset);
        }
        if client.sent.is_empty() {
            return if client.has_ended {
                Ok(0)
            } else {
                Err(NetError::Timeout)
            };
        }
        let len_bytes = buffer.len().min(client.sent.len());
        for (slot, byte) in buffer.iter_mut().zip(client.sent.drain(..len_bytes)) {
            *slot = byte;
        }
        Ok(len_bytes)
    }

    fn write(&mut self, socket: Socket, bytes: &[u8]) -> Result<usize, NetError> {
        let client = self.open_client(socket)?;
        if client.is_reset {
            return Err(NetError::ConnectionReset);
        }
        let taken = bytes.len().min(client.room);
        if taken == 0 {
            return Err(NetError::Timeout);
        }
        client.room -= taken;
        client.received.extend_from_slice(&bytes[..taken]);
        Ok(taken)
    }

    fn close(&mut self, socket: Socket) {
        if let Some(client) = self.clients.get_mut(&socket.number()) {
            assert!(!client.is_closed, "closed once");
            client.is_closed = true;
        }
    }
}

/// Answers every line with it in upper case; `quit` closes; `big` answers
/// with 100 bytes.
#[derive(Debug, Default)]
struct Shout {
    opened: usize,
    ticks: Vec<u64>,
}

impl Service for Shout {
    type Session = Vec<u8>;

    fn open(&mut self) -> Vec<u8> {
        self.opened += 1;
        Vec::new()
    }

    fn receive(&mut self, line: &mut Vec<u8>, bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        for &byte in bytes {
            if byte != b'\n' {
                line.push(byte);
                continue;
            }
            match line.as_slice() {
                b"quit" => {
                    out.extend_from_slice(b"BYE\n");
                    return Flow::Close;
                }
                b"big" => out.extend_from_slice(&[b'x'; 100]),
                _ => {
                    out.extend(line.iter().map(u8::to_ascii_uppercase));
                    out.push(b'\n');
                }
            }
            line.clear();
        }
        Flow::KeepOpen
    }

    fn tick(&mut self, now_ns: u64) {
        self.ticks.push(now_ns);
    }
}

fn server(limits: ServerLimits) -> Server<Shout> {
    Server::with_socket(LISTENER, limits)
}

fn steps(server: &mut Server<Shout>, network: &mut FakeNetwork, shout: &mut Shout, count: usize) {
    for _ in 0..count {
        server.step(network, shout).expect("a step");
    }
}

#[test]
fn many_clients_are_served_at_once_each_with_its_own_session() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits::default());
    for number in 4..8 {
        network.connect(number, 1000);
    }
    steps(&mut server, &mut network, &mut shout, 1);
    assert_eq!(server.connection_count(), 4);
    network.send(4, b"hel");
    network.send(5, b"one\n");
    network.send(6, b"two\nthree\n");
    steps(&mut server, &mut network, &mut shout, 2);
    network.send(4, b"lo\n");
    steps(&mut server, &mut network, &mut shout, 1);
    assert_eq!(network.received(4), "HELLO\n");
    assert_eq!(network.received(5), "ONE\n");
    assert_eq!(network.received(6), "TWO\nTHREE\n");
    assert_eq!(network.received(7), "");
    assert_eq!(shout.opened, 4);
}

#[test]
fn a_client_that_ends_its_stream_gets_its_replies_then_is_closed() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits::default());
    network.connect(4, 1000);
    network.send(4, b"last\n");
    network.client(4).has_ended = true;
    steps(&mut server, &mut network, &mut shout, 3);
    assert_eq!(network.received(4), "LAST\n");
    assert!(network.client(4).is_closed);
    assert_eq!(server.connection_count(), 0);
}

#[test]
fn flow_close_sends_the_reply_then_closes_even_when_it_waits_for_room() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits::default());
    network.connect(4, 2);
    network.send(4, b"quit\nignored\n");
    steps(&mut server, &mut network, &mut shout, 3);
    assert_eq!(network.received(4), "BY");
    assert!(!network.client(4).is_closed);
    network.client(4).room = 100;
    steps(&mut server, &mut network, &mut shout, 1);
    assert_eq!(network.received(4), "BYE\n");
    assert!(network.client(4).is_closed);
}

#[test]
fn a_reset_connection_is_closed_and_the_others_go_on() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits::default());
    network.connect(4, 1000);
    network.connect(5, 1000);
    steps(&mut server, &mut network, &mut shout, 1);
    network.client(4).is_reset = true;
    network.send(5, b"still here\n");
    steps(&mut server, &mut network, &mut shout, 2);
    assert!(network.client(4).is_closed);
    assert_eq!(network.received(5), "STILL HERE\n");
    assert_eq!(server.connection_count(), 1);
}

#[test]
fn a_client_that_does_not_read_is_not_read_from_past_the_pending_limit() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits {
        max_pending_output_bytes: 250,
        read_chunk_bytes: 4,
        ..ServerLimits::default()
    });
    network.connect(4, 0);
    network.send(4, &b"big\n".repeat(10));
    steps(&mut server, &mut network, &mut shout, 10);
    // Three replies (300 bytes) are pending: the other seven requests stay
    // unread with the client.
    assert_eq!(network.client(4).sent.len(), 7 * 4);
    assert_eq!(network.polls.last(), Some(&vec![(3, 1), (4, 2)]));
    network.client(4).room = 10_000;
    steps(&mut server, &mut network, &mut shout, 10);
    assert_eq!(network.received(4).len(), 1000);
    assert!(network.client(4).sent.is_empty());
}

#[test]
fn past_the_connection_limit_clients_wait_in_the_backlog() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits {
        max_connections: 2,
        ..ServerLimits::default()
    });
    for number in 4..7 {
        network.connect(number, 1000);
    }
    steps(&mut server, &mut network, &mut shout, 2);
    assert_eq!(server.connection_count(), 2);
    assert_eq!(network.waiting, [6]);
    // The listener is not polled while the server is full.
    assert!(network.polls.last().is_some_and(|poll| poll[0].0 != 3));
    network.send(4, b"quit\n");
    steps(&mut server, &mut network, &mut shout, 2);
    assert_eq!(server.connection_count(), 2);
    assert!(network.waiting.is_empty());
    network.send(6, b"third\n");
    steps(&mut server, &mut network, &mut shout, 1);
    assert_eq!(network.received(6), "THIRD\n");
}

#[test]
fn idle_connections_are_closed_and_ticks_come_at_their_interval() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits {
        tick_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        ..ServerLimits::default()
    });
    network.now_ns = 1_000_000_000;
    network.connect(4, 1000);
    network.connect(5, 1000);
    steps(&mut server, &mut network, &mut shout, 1);
    network.now_ns = 6_000_000_000;
    network.send(5, b"awake\n");
    steps(&mut server, &mut network, &mut shout, 2);
    network.now_ns = 12_000_000_000;
    steps(&mut server, &mut network, &mut shout, 1);
    assert!(network.client(4).is_closed);
    assert!(!network.client(5).is_closed);
    assert_eq!(shout.ticks, [1_000_000_000, 6_000_000_000, 12_000_000_000]);
}

#[test]
fn a_failing_listener_ends_the_loop_with_its_error() {
    struct BrokenListener(FakeNetwork);
    impl Backend for BrokenListener {
        fn now_ns(&mut self) -> u64 {
            0
        }
        fn poll(
            &mut self,
            entries: &mut [PollEntry],
            timeout: Duration,
        ) -> Result<usize, NetError> {
            self.0.poll(entries, timeout)
        }
        fn accept(&mut self, _: Socket) -> Result<Socket, NetError> {
            Err(NetError::WrongSocket)
        }
        fn read(&mut self, socket: Socket, buffer: &mut [u8]) -> Result<usize, NetError> {
            self.0.read(socket, buffer)
        }
        fn write(&mut self, socket: Socket, bytes: &[u8]) -> Result<usize, NetError> {
            self.0.write(socket, bytes)
        }
        fn close(&mut self, socket: Socket) {
            self.0.close(socket);
        }
    }
    let mut network = BrokenListener(FakeNetwork::default());
    network.0.connect(4, 0);
    let mut server = server(ServerLimits::default());
    assert_eq!(
        server.step(&mut network, &mut Shout::default()),
        Err(NetError::WrongSocket)
    );
}

#[test]
fn connections_the_host_does_not_know_are_dropped_and_serving_goes_on() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server = server(ServerLimits::default());
    network.connect(4, 1000);
    network.connect(5, 1000);
    steps(&mut server, &mut network, &mut shout, 1);
    // As if restored on a host that forgot the commit's connections.
    network.clients.remove(&4);
    steps(&mut server, &mut network, &mut shout, 1);
    assert_eq!(server.connection_count(), 0);
    assert!(network.client(5).is_closed);
    network.connect(6, 1000);
    network.send(6, b"new\n");
    steps(&mut server, &mut network, &mut shout, 2);
    assert_eq!(network.received(6), "NEW\n");
}

#[test]
fn an_unknown_listener_ends_the_loop() {
    let (mut network, mut shout) = (FakeNetwork::default(), Shout::default());
    let mut server: Server<Shout> = Server::with_socket(Socket(9), ServerLimits::default());
    assert_eq!(
        server.step(&mut network, &mut shout),
        Err(NetError::NoSuchSocket)
    );
}

//! The peer's own tests: two peers on one link, with no machine.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use kernel_core::migration::{ClusterSecret, FrameError, Framed, LinkError, SecureLink};
use smoltcp::socket::tcp;
use smoltcp::wire::Ipv4Address;
use xtask::private::SECRET_BYTES;

use super::speech::HostEntropy;
use super::*;

#[test]
fn the_secret_file_xtask_writes_is_one_the_kernel_parses() -> Result<()> {
    let file = xtask::private::ClusterSecretFile::generate()?;
    let text = std::fs::read(file.path())?;
    let parsed = ClusterSecret::parse(&text).map_err(|error| anyhow!("{error}"))?;
    let expected = ClusterSecret::from_bytes(file.bytes()).map_err(|error| anyhow!("{error}"))?;
    assert!(parsed == expected);
    Ok(())
}

/// Two peers on one link, one playing the machine: the secure link
/// carries a frame both ways with the same secret, and fails with
/// another.
#[test]
fn two_peers_speak_the_secure_link_over_their_own_tcp() -> Result<()> {
    let secret = [7u8; SECRET_BYTES];
    let listener = PeerListener::bind()?;
    let client = Peer::connect_to_link(listener.port(), 2, 2)?;
    let server = listener.accept(1, 1, Duration::from_secs(5))?;
    let timeout = Duration::from_secs(10);
    let accepted = server.listen_on(7070)?;
    let opened = client.open(Ipv4Address::new(169, 254, 0, 1), 7070)?;
    let deadline = Instant::now() + timeout;
    while opened.state() != tcp::State::Established || accepted.state() != tcp::State::Established {
        assert!(
            Instant::now() < deadline,
            "no TCP connection between the peers"
        );
        client.wait_a_moment()?;
        server.poll()?;
    }
    let key = ClusterSecret::from_bytes(secret).map_err(|error| anyhow!("{error}"))?;
    let mut initiator = Framed::new(PeerLink::Secure(Box::new(SecureLink::initiator(
        opened,
        &key,
        &mut HostEntropy,
    ))));
    let mut responder = Framed::new(PeerLink::Secure(Box::new(SecureLink::responder(
        accepted,
        &key,
        &mut HostEntropy,
    ))));
    initiator.queue(b"begin");
    let deadline = Instant::now() + timeout;
    let frame = loop {
        let _ = initiator.flush();
        if let Ok(Some(frame)) = responder.next_frame() {
            break frame;
        }
        let _ = responder.flush();
        assert!(
            Instant::now() < deadline,
            "no frame through the secure link"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(frame, b"begin");
    responder.queue(b"refused");
    assert_eq!(
        loop {
            let _ = responder.flush();
            if let Reply::Frame(frame) = next_reply(&mut initiator, Duration::from_millis(5)) {
                break frame;
            }
            assert!(
                Instant::now() < deadline,
                "no answer through the secure link"
            );
        },
        b"refused"
    );

    // Another secret: the responder refuses the first handshake message.
    let accepted = server.listen_on(7071)?;
    let opened = client.open(Ipv4Address::new(169, 254, 0, 1), 7071)?;
    while opened.state() != tcp::State::Established || accepted.state() != tcp::State::Established {
        assert!(Instant::now() < deadline, "no second TCP connection");
        client.wait_a_moment()?;
        server.poll()?;
    }
    let stranger =
        ClusterSecret::from_bytes([9u8; SECRET_BYTES]).map_err(|error| anyhow!("{error}"))?;
    let mut initiator = Framed::new(PeerLink::Secure(Box::new(SecureLink::initiator(
        opened,
        &stranger,
        &mut HostEntropy,
    ))));
    let mut responder = Framed::new(PeerLink::Secure(Box::new(SecureLink::responder(
        accepted,
        &key,
        &mut HostEntropy,
    ))));
    initiator.queue(b"begin");
    let error = loop {
        let _ = initiator.flush();
        match responder.next_frame() {
            Err(error) => break error,
            Ok(Some(_)) => panic!("a frame passed with another secret"),
            Ok(None) => {}
        }
        assert!(
            Instant::now() < deadline,
            "the wrong secret was not refused"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(error, FrameError::Link(LinkError::NotInCluster));
    Ok(())
}

#[test]
fn the_default_address_follows_the_kernels_rule() {
    assert_eq!(default_address(0), Ipv4Address::new(169, 254, 0, 1));
    assert_eq!(default_address(0x11), Ipv4Address::new(169, 254, 0, 0x11));
    assert_eq!(default_address(255), Ipv4Address::new(169, 254, 0, 254));
}

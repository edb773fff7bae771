//! How the peer speaks on a migration connection: in clear or the secure link.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kernel_core::migration::{Entropy, Framed, Link, LinkError, SecureLink};
use xtask::private::SECRET_BYTES;

use super::Connection;

/// How the peer speaks on a migration connection.
#[derive(Clone, Copy)]
pub enum Speech {
    /// Frames in clear, as before the links were encrypted.
    Plaintext,
    /// Kernel-core's secure link (the Noise handshake, then ciphertext)
    /// with this secret: the cluster's, or another one on purpose.
    Secret([u8; SECRET_BYTES]),
}

impl std::fmt::Debug for Speech {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret's bytes.
        match self {
            Speech::Plaintext => formatter.write_str("Plaintext"),
            Speech::Secret(_) => formatter.write_str("Secret(..)"),
        }
    }
}

/// A migration connection's link, in one of the peer's [`Speech`]es.
#[derive(Debug)]
pub enum PeerLink {
    /// Bytes in clear.
    Plain(Connection),
    /// Kernel-core's secure link, as the peer's initiator.
    Secure(Box<SecureLink<Connection>>),
}

impl Link for PeerLink {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        match self {
            PeerLink::Plain(connection) => connection.send(bytes),
            PeerLink::Secure(link) => link.send(bytes),
        }
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        match self {
            PeerLink::Plain(connection) => connection.receive(buffer),
            PeerLink::Secure(link) => link.receive(buffer),
        }
    }

    fn push(&mut self) {
        match self {
            PeerLink::Plain(connection) => connection.push(),
            PeerLink::Secure(link) => link.push(),
        }
    }
}

/// The handshake's randomness from the host's random source.
#[derive(Debug)]
pub(super) struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, bytes: &mut [u8]) {
        // Without randomness the handshake must not go on with guessable
        // keys: a test that cannot read /dev/urandom fails loudly.
        let read =
            std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(bytes));
        if let Err(error) = read {
            panic!("reading /dev/urandom for the peer's handshake: {error}");
        }
    }
}

/// What a [`Framed`] connection gave within a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A whole frame.
    Frame(Vec<u8>),
    /// The machine closed or reset the connection.
    Closed,
    /// Nothing within the deadline.
    Silence,
}

/// Frames `message` and sends it whole within `timeout`.
pub fn send_frame<L: Link>(
    framed: &mut Framed<L>,
    message: &[u8],
    timeout: Duration,
) -> Result<()> {
    framed.queue(message);
    let deadline = Instant::now() + timeout;
    loop {
        match framed.flush() {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(false) => bail!("a frame did not leave within {timeout:?}"),
            Err(error) => bail!("sending a frame: {error}"),
        }
    }
}

/// The next frame from the machine, its closing, or silence for `timeout`.
pub fn next_reply<L: Link>(framed: &mut Framed<L>, timeout: Duration) -> Reply {
    let deadline = Instant::now() + timeout;
    loop {
        match framed.next_frame() {
            Ok(Some(frame)) => return Reply::Frame(frame),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => return Reply::Silence,
            Err(_) => return Reply::Closed,
        }
    }
}

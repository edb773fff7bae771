//! The secure link in the fakes: machines with or without the cluster secret.

use std::sync::atomic::{AtomicU64, Ordering};

use kernel_core::migration::{
    ClusterSecret, ConnectError, Entropy, Link, LinkError, Network, SecureLink, SecureNetwork,
};

use super::network::{FakeNetwork, MemoryLink};

/// The secret of the tests' cluster.
pub fn cluster_secret() -> ClusterSecret {
    ClusterSecret::parse(b"6d1f0c2a9e8b7d4c3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a\n")
        .expect("64 hex digits")
}

/// Another cluster's secret.
pub fn stranger_secret() -> ClusterSecret {
    ClusterSecret::from_bytes([0x5a; 32]).expect("not all zeros")
}

/// Every draw of every machine differs (splitmix64 over one counter):
/// the tests need distinct ephemeral keys, not unpredictable ones.
#[derive(Debug, Default)]
pub struct TestEntropy;

static DRAWS: AtomicU64 = AtomicU64::new(0x1234_5678);

impl Entropy for TestEntropy {
    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let draw = DRAWS.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
            let mut value = draw;
            value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            value ^= value >> 31;
            chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A test peer's end of a secure link made with `secret`, as initiator.
pub fn secure_initiator(link: MemoryLink, secret: &ClusterSecret) -> SecureLink<MemoryLink> {
    SecureLink::initiator(link, secret, &mut TestEntropy)
}

/// A test peer's end of a secure link made with `secret`, as responder.
pub fn secure_responder(link: MemoryLink, secret: &ClusterSecret) -> SecureLink<MemoryLink> {
    SecureLink::responder(link, secret, &mut TestEntropy)
}

/// A machine's link: plaintext frames (the state machines' own tests) or
/// the secure link the kernel uses.
#[derive(Debug)]
pub enum TestLink {
    Plain(MemoryLink),
    Secure(SecureLink<MemoryLink>),
}

impl Link for TestLink {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        match self {
            TestLink::Plain(link) => link.send(bytes),
            TestLink::Secure(link) => link.send(bytes),
        }
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        match self {
            TestLink::Plain(link) => link.receive(buffer),
            TestLink::Secure(link) => link.receive(buffer),
        }
    }

    fn push(&mut self) {
        match self {
            TestLink::Plain(link) => link.push(),
            TestLink::Secure(link) => link.push(),
        }
    }
}

/// A machine's network: the switch, plain or through [`SecureNetwork`].
#[derive(Debug)]
pub enum TestNetwork {
    Plain(FakeNetwork),
    Secure(SecureNetwork<FakeNetwork, TestEntropy>),
}

impl Network for TestNetwork {
    type Connection = TestLink;
    type Listener = ();

    fn listen(&mut self) -> Result<Option<()>, String> {
        match self {
            TestNetwork::Plain(network) => network.listen(),
            TestNetwork::Secure(network) => network.listen(),
        }
    }

    fn accept(&mut self, listener: &mut ()) -> Option<(TestLink, String)> {
        match self {
            TestNetwork::Plain(network) => network
                .accept(listener)
                .map(|(link, peer)| (TestLink::Plain(link), peer)),
            TestNetwork::Secure(network) => network
                .accept(listener)
                .map(|(link, peer)| (TestLink::Secure(link), peer)),
        }
    }

    fn connect(&mut self, address: &str) -> Result<TestLink, ConnectError> {
        match self {
            TestNetwork::Plain(network) => network.connect(address).map(TestLink::Plain),
            TestNetwork::Secure(network) => network.connect(address).map(TestLink::Secure),
        }
    }

    fn poll(&mut self) {
        match self {
            TestNetwork::Plain(network) => network.poll(),
            TestNetwork::Secure(network) => network.poll(),
        }
    }
}

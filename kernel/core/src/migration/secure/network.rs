//! SecureNetwork: every connection of a network through a SecureLink.

use alloc::string::String;
use core::fmt;

use super::CipherClock;
use super::link::SecureLink;
use super::secret::{ClusterSecret, Entropy};
use crate::migration::network::{ConnectError, Network};

/// Why a machine without a cluster secret starts no migration.
pub const NO_SECRET_REASON: &str = "this machine has no cluster secret, so it starts no migration";

/// A network whose every connection is a [`SecureLink`]: accepted ones
/// are responders, ones it makes are initiators. Without a cluster secret
/// it is secure by default: it listens on nothing (no incoming migration
/// or question is accepted) and refuses to connect (none starts).
pub struct SecureNetwork<N, E> {
    network: N,
    secret: Option<ClusterSecret>,
    entropy: E,
    cipher_clock: Option<CipherClock>,
}

impl<N: fmt::Debug, E> fmt::Debug for SecureNetwork<N, E> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SecureNetwork")
            .field("network", &self.network)
            .field("has_secret", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl<N: Network, E: Entropy> SecureNetwork<N, E> {
    /// `network` with `secret` (none: no migration in or out), the
    /// handshakes' randomness drawn from `entropy`.
    pub fn new(network: N, secret: Option<ClusterSecret>, entropy: E) -> Self {
        SecureNetwork {
            network,
            secret,
            entropy,
            cipher_clock: None,
        }
    }

    /// Counts the links' time encrypting and decrypting on `clock`.
    pub fn counting(mut self, clock: CipherClock) -> Self {
        self.cipher_clock = Some(clock);
        self
    }

    /// Whether the machine holds a cluster secret.
    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The network underneath.
    pub fn inner_mut(&mut self) -> &mut N {
        &mut self.network
    }
}

impl<N: Network, E: Entropy> Network for SecureNetwork<N, E> {
    type Connection = SecureLink<N::Connection>;
    type Listener = N::Listener;

    fn listen(&mut self) -> Result<Option<N::Listener>, String> {
        if self.secret.is_none() {
            return Ok(None);
        }
        self.network.listen()
    }

    fn accept(&mut self, listener: &mut N::Listener) -> Option<(Self::Connection, String)> {
        let secret = self.secret.as_ref()?;
        let (connection, peer) = self.network.accept(listener)?;
        let link = SecureLink::responder(connection, secret, &mut self.entropy)
            .counting(self.cipher_clock);
        Some((link, peer))
    }

    fn connect(&mut self, address: &str) -> Result<Self::Connection, ConnectError> {
        let Some(secret) = &self.secret else {
            return Err(ConnectError::Failed(NO_SECRET_REASON.into()));
        };
        let connection = self.network.connect(address)?;
        Ok(
            SecureLink::initiator(connection, secret, &mut self.entropy)
                .counting(self.cipher_clock),
        )
    }

    fn poll(&mut self) {
        self.network.poll();
    }
}

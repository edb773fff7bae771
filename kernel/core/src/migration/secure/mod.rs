//! The migration link's security: Noise with the cluster secret as the PSK.
//!
//! Every connection between machines, the migration stream and the parked
//! copies' questions alike, runs through a [`SecureLink`]: a Noise
//! `NNpsk0` handshake (through the `snow` crate) in which both ends prove
//! they hold the [`ClusterSecret`], with fresh ephemeral keys on both
//! sides, then ChaChaPoly records whose nonces refuse anything reordered,
//! dropped or replayed. [`SecureNetwork`] wraps a machine's network so
//! that every connection it accepts or makes is one, and a machine without
//! a secret neither listens nor connects.

mod link;
mod network;
mod resolver;
mod secret;
#[cfg(test)]
mod tests;

use core::sync::atomic::{AtomicU64, Ordering};

pub use link::{MAX_PLAINTEXT_BYTES, MAX_RECORD_BYTES, NOISE_PARAMS, PROLOGUE, Role, SecureLink};
pub use network::{NO_SECRET_REASON, SecureNetwork};
pub use secret::{ClusterSecret, Entropy, SECRET_BYTES, SECRET_HEX_DIGITS, SecretError};

/// Where the links add the time they spend encrypting and decrypting: a
/// clock and a total the machine reads into its transfer reports.
#[derive(Debug, Clone, Copy)]
pub struct CipherClock {
    now_ns: fn() -> u64,
    total_ns: &'static AtomicU64,
}

impl CipherClock {
    /// Times with `now_ns` and adds to `total_ns`.
    pub fn new(now_ns: fn() -> u64, total_ns: &'static AtomicU64) -> CipherClock {
        CipherClock { now_ns, total_ns }
    }

    /// The time now.
    pub fn now_ns(&self) -> u64 {
        (self.now_ns)()
    }

    /// Adds the time since `started_ns` to the total.
    pub fn add_since(&self, started_ns: u64) {
        let elapsed = self.now_ns().saturating_sub(started_ns);
        self.total_ns.fetch_add(elapsed, Ordering::Relaxed);
    }

    /// Everything added so far.
    pub fn total_ns(&self) -> u64 {
        self.total_ns.load(Ordering::Relaxed)
    }
}

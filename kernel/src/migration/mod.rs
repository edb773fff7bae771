//! Live migration in the kernel: kernel-core's state machines on TCP.
//!
//! The state machines (framing, rounds, the hand-over, parked copies'
//! questions) are `kernel_core::migration`, tested on the host. The kernel
//! gives them what only it has: TCP connections over smoltcp (`network.rs`),
//! made secure with the cluster secret from fw_cfg (`secret.rs`), and the
//! domain table with its disks (`host.rs`), and prints what they report.

use kernel_core::migration::secure::CipherClock;
use kernel_core::migration::{self, DecideError, Decision, SecureNetwork, StartError};

use crate::arch::timer;
use crate::domains::Domains;
use network::{CIPHER_NS, KernelNetwork};
use secret::KernelEntropy;

mod host;
mod network;
mod secret;

/// Migration's network: TCP, authenticated and encrypted.
type Network = SecureNetwork<KernelNetwork, KernelEntropy>;

/// Every migration in flight on this machine, the listener for the next
/// incoming one, and the questions of parked copies.
#[derive(Debug)]
pub struct Migrations {
    inner: migration::Migrations<Network, Domains>,
}

impl Migrations {
    /// Reads the cluster secret (saying whether there is one) and, with
    /// one, listens for incoming migrations when there is a network card.
    #[expect(
        clippy::new_without_default,
        reason = "new opens a listening socket: not a default value"
    )]
    pub fn new() -> Migrations {
        Migrations {
            inner: migration::Migrations::new(Self::network()),
        }
    }

    fn network() -> Network {
        let secret = secret::load();
        let entropy = KernelEntropy::seeded(secret.as_ref());
        SecureNetwork::new(KernelNetwork, secret, entropy)
            .counting(CipherClock::new(timer::uptime_ns, &CIPHER_NS))
    }

    /// `migrate NAME ADDRESS`: starts sending domain `name` to the machine
    /// at `address` (IPv4, port [`migration::MIGRATION_PORT`]).
    pub fn start(
        &mut self,
        domains: &mut Domains,
        name: &str,
        address: &str,
    ) -> Result<(), StartError> {
        self.inner.start(domains, name, address)
    }

    /// An operator's word on a parked copy whose source does not answer.
    pub fn decide(
        &mut self,
        domains: &mut Domains,
        name: &str,
        decision: Decision,
    ) -> Result<(), DecideError> {
        self.inner.decide(domains, name, decision)
    }

    /// Whether domain `name` is being sent to another machine now (its
    /// image must not change under the migration but by its own commits).
    pub fn is_sending(&self, name: &str) -> bool {
        self.inner.is_sending(name)
    }

    /// Moves every migration on; true when any has work left.
    pub fn poll(&mut self, domains: &mut Domains) -> bool {
        self.inner.poll(domains)
    }
}

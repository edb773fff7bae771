//! Live migration in the kernel: kernel-core's state machines on TCP.
//!
//! The state machines (framing, rounds, the hand-over, parked copies'
//! questions) are `kernel_core::migration`, tested on the host. The kernel
//! gives them what only it has: TCP connections over smoltcp (`network.rs`)
//! and the domain table with its disks (`host.rs`), and prints what they
//! report.

use kernel_core::migration::{self, StartError};

use crate::domains::Domains;
use network::KernelNetwork;

mod host;
mod network;

/// Every migration in flight on this machine, the listener for the next
/// incoming one, and the questions of parked copies.
#[derive(Debug)]
pub struct Migrations {
    inner: migration::Migrations<KernelNetwork, Domains>,
}

impl Migrations {
    /// Listens for incoming migrations when there is a network card.
    #[expect(
        clippy::new_without_default,
        reason = "new opens a listening socket: not a default value"
    )]
    pub fn new() -> Migrations {
        Migrations {
            inner: migration::Migrations::new(KernelNetwork),
        }
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

    /// Moves every migration on; true when any has work left.
    pub fn poll(&mut self, domains: &mut Domains) -> bool {
        self.inner.poll(domains)
    }
}

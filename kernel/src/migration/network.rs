//! Migration's network in the kernel: TCP connections over smoltcp.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel_core::migration::{ConnectError, Link, LinkError, MIGRATION_PORT, Network};
use smoltcp::wire::Ipv4Address;

use crate::arch::timer;
use crate::net::{self, NetError, TcpConnection, TcpListener, TcpState};

/// Time spent in `net::poll` within transfer slices, since boot: a transfer
/// reports the difference between its end and its start.
pub static NETWORK_POLL_NS: AtomicU64 = AtomicU64::new(0);

/// Time the secure links spent encrypting and decrypting, since boot.
pub static CIPHER_NS: AtomicU64 = AtomicU64::new(0);

impl Link for TcpConnection {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        match self.state() {
            TcpState::Established | TcpState::CloseWait => TcpConnection::send(self, bytes)
                .map_err(|error| LinkError::Failed(format!("{error}"))),
            TcpState::SynSent | TcpState::SynReceived | TcpState::Listen => Ok(0),
            _ => Err(LinkError::Closed),
        }
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        match self.state() {
            TcpState::SynSent | TcpState::SynReceived | TcpState::Listen => Ok(0),
            TcpState::Closed => Err(LinkError::Closed),
            _ => match TcpConnection::receive(self, buffer) {
                Ok(count) => Ok(count),
                Err(NetError::Finished) => Err(LinkError::Closed),
                Err(error) => Err(LinkError::Failed(format!("{error}"))),
            },
        }
    }

    fn push(&mut self) {
        net::poll();
    }
}

/// Sockets listening on the migration port at once: peers connecting
/// together (a migration and a parked copy's question, or several
/// questions) are each taken, not reset. Each costs a socket's buffers
/// while it waits.
const LISTEN_BACKLOG: usize = 4;

/// The kernel's network stack, as migration sees it.
#[derive(Debug)]
pub struct KernelNetwork;

impl Network for KernelNetwork {
    type Connection = TcpConnection;
    type Listener = TcpListener;

    fn listen(&mut self) -> Result<Option<TcpListener>, String> {
        match TcpListener::bind(MIGRATION_PORT, LISTEN_BACKLOG) {
            Ok(listener) => Ok(Some(listener)),
            Err(NetError::NoCard) => Ok(None),
            Err(error) => Err(format!("{error}")),
        }
    }

    fn accept(&mut self, listener: &mut TcpListener) -> Option<(TcpConnection, String)> {
        let connection = listener.accept()?;
        let peer = connection.remote().map_or_else(
            || String::from("?"),
            |endpoint| format!("{}", endpoint.addr),
        );
        Some((connection, peer))
    }

    fn connect(&mut self, address: &str) -> Result<TcpConnection, ConnectError> {
        let address: Ipv4Address = address.parse().map_err(|_| ConnectError::NotAnAddress)?;
        TcpConnection::connect(address, MIGRATION_PORT)
            .map_err(|error| ConnectError::Failed(format!("{error}")))
    }

    fn poll(&mut self) {
        let started = timer::uptime_ns();
        net::poll();
        let elapsed = timer::uptime_ns().saturating_sub(started);
        NETWORK_POLL_NS.fetch_add(elapsed, Ordering::Relaxed);
    }
}

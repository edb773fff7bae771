//! TCP for domains: listeners on declared ports, streams, and `poll`.
//!
//! A domain listens only on the ports its image declares (`[package.metadata.amber]
//! listen = [...]` in the app's Cargo.toml, `image new --listen`): the host
//! binds them for the domain, again after every restore, and
//! [`TcpListener::bind`] only looks the port up. Connections are ordinary
//! byte streams ([`TcpStream`], `std::io::Read` and `Write`); one that was
//! open when the domain last committed reads and writes as
//! [`NetError::ConnectionReset`] after a restore, and its client
//! reconnects. [`poll`] waits on many sockets at once, and [`serve`] is a
//! single-threaded server loop over it that serves many clients.

mod error;
mod poll;
mod server;
mod tcp;

pub use error::NetError;
pub use poll::{Interest, PollEntry, Ready, poll};
pub use server::{Flow, Server, ServerLimits, Service, serve};
pub use tcp::{Incoming, Socket, TcpListener, TcpStream};

/// A host result that is a count or a socket number (>= 0) or `-status`.
fn count_or_error(result: i32) -> Result<u32, NetError> {
    u32::try_from(result).map_err(|_| NetError::from_code(result.checked_neg().unwrap_or(i32::MAX)))
}

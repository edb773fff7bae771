//! What the listener needs of the network: listen, accept, connect, poll.

use alloc::string::String;
use core::fmt;

use super::framing::Link;

/// The TCP port every machine with a network card listens on for migrations.
pub const MIGRATION_PORT: u16 = 7070;

/// The network the migrations travel over (smoltcp in the kernel, queues
/// in memory in the tests). Every connection is to or from
/// [`MIGRATION_PORT`].
pub trait Network {
    /// A connection being set up, or set up.
    type Connection: Link;
    /// A socket listening for the next connection.
    type Listener;

    /// Listens for the next connection; `Ok(None)` when the machine has no
    /// network card (nothing to say then).
    fn listen(&mut self) -> Result<Option<Self::Listener>, String>;

    /// The next connection a listener got, and the peer's name (its
    /// address); `None` while no one has connected. The listener goes on
    /// listening: peers that connect at the same moment are all taken in
    /// turn, not refused.
    fn accept(&mut self, listener: &mut Self::Listener) -> Option<(Self::Connection, String)>;

    /// Connects to the machine at `address`: the connection may still be
    /// setting up (a [`Link`] then sends and receives nothing yet).
    fn connect(&mut self, address: &str) -> Result<Self::Connection, ConnectError>;

    /// Moves packets: called between transfer steps within a slice.
    fn poll(&mut self);
}

/// Why a connection could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The address is not one this network can connect to.
    NotAnAddress,
    /// Connecting failed at once, said in words.
    Failed(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NotAnAddress => formatter.write_str("not an IPv4 address"),
            ConnectError::Failed(reason) => formatter.write_str(reason),
        }
    }
}

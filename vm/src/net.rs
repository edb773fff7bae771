//! What the vm needs from the machine's network: TCP listeners and
//! connections, reached through [`Network`] as storage is through
//! `Storage` and the clock through `Platform`.
//!
//! The embedder owns the sockets (the kernel over smoltcp, the host runner
//! over the host's network stack on 127.0.0.1); the vm owns each domain's
//! socket *numbers* (shared with WASI's fds, see `abi::FIRST_LISTENER_FD`)
//! and what survives a commit: the declared ports, which are bound again
//! before a restored domain runs, and the connections, which read and
//! write as reset after a restore. Every call is nonblocking: a call that
//! would wait returns [`NetError::WouldBlock`], and the vm suspends the
//! domain (asyncify) until [`Network::connection_readiness`] or
//! [`Network::listener_has_client`] says it can go on.

use core::fmt;

use abi::DomainId;

/// A connection, as the embedder numbers them: unique on the machine for
/// as long as it is open, never shown to the guest.
pub type ConnectionId = u64;

/// Why a network call did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// Nothing to do now: no client waiting, no data, no room.
    WouldBlock,
    /// The peer reset the connection (or it was lost).
    Reset,
    /// Nothing listens at the address, or it cannot be reached.
    Refused,
    /// Another domain on this machine holds the port.
    PortTaken,
    /// The domain does not listen on the port.
    NotListening,
    /// The domain's connection cap, or the machine's room for buffers, is
    /// used up.
    LimitReached,
    /// The connection is closed on this side (or never was).
    Closed,
    /// This embedder has no network.
    Unsupported,
}

impl fmt::Display for NetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::WouldBlock => "nothing to do yet",
            Self::Reset => "the connection was reset",
            Self::Refused => "the connection was refused",
            Self::PortTaken => "another domain listens on the port",
            Self::NotListening => "the domain does not listen on the port",
            Self::LimitReached => "no room for another connection",
            Self::Closed => "the connection is closed",
            Self::Unsupported => "this machine has no network",
        })
    }
}

impl core::error::Error for NetError {}

/// What a connection can do now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A read would return data, or the end of the stream.
    pub readable: bool,
    /// A write would take at least one byte.
    pub writable: bool,
    /// The peer reset or closed the connection.
    pub hangup: bool,
}

/// The machine's TCP stack, shared by every domain. Implementations keep
/// their own locks; every method returns at once.
pub trait Network: Send + Sync {
    /// Starts listening on `port` for `domain`: the port becomes the
    /// domain's until [`Network::unlisten`] or [`Network::forget_domain`].
    /// Listening again on a port the domain holds is not an error.
    fn listen(&self, domain: DomainId, port: u16) -> Result<(), NetError>;
    /// Stops listening on `port`, if `domain` holds it.
    fn unlisten(&self, domain: DomainId, port: u16);
    /// A client waiting on `domain`'s `port`, now the domain's connection.
    fn accept(&self, domain: DomainId, port: u16) -> Result<ConnectionId, NetError>;
    /// Whether a client waits on `domain`'s `port` (an `accept` would take it).
    fn listener_has_client(&self, domain: DomainId, port: u16) -> bool;
    /// Starts connecting to `address:port` for `domain`. The connection is
    /// usable once [`Network::connection_readiness`] says writable; a
    /// refused one reads as [`NetError::Refused`].
    fn connect(
        &self,
        domain: DomainId,
        address: [u8; 4],
        port: u16,
    ) -> Result<ConnectionId, NetError>;
    /// Reads what has arrived into `buffer`: `Ok(0)` is the end of the stream.
    fn read(&self, connection: ConnectionId, buffer: &mut [u8]) -> Result<usize, NetError>;
    /// Queues as much of `bytes` as there is room for (at least one byte,
    /// or [`NetError::WouldBlock`]).
    fn write(&self, connection: ConnectionId, bytes: &[u8]) -> Result<usize, NetError>;
    /// Ends the writing side: the peer reads the end of the stream once
    /// what was queued is sent.
    fn shutdown(&self, connection: ConnectionId);
    /// Closes the connection; its number may be reused.
    fn close(&self, connection: ConnectionId);
    /// What `connection` can do now.
    fn connection_readiness(&self, connection: ConnectionId) -> Readiness;
    /// Drops every listener and connection of `domain` (it stopped, ended,
    /// or moved to another machine).
    fn forget_domain(&self, domain: DomainId);
}

/// The network of an embedder that has none: every call is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNetwork;

impl Network for NoNetwork {
    fn listen(&self, _domain: DomainId, _port: u16) -> Result<(), NetError> {
        Err(NetError::Unsupported)
    }

    fn unlisten(&self, _domain: DomainId, _port: u16) {}

    fn accept(&self, _domain: DomainId, _port: u16) -> Result<ConnectionId, NetError> {
        Err(NetError::Unsupported)
    }

    fn listener_has_client(&self, _domain: DomainId, _port: u16) -> bool {
        false
    }

    fn connect(
        &self,
        _domain: DomainId,
        _address: [u8; 4],
        _port: u16,
    ) -> Result<ConnectionId, NetError> {
        Err(NetError::Unsupported)
    }

    fn read(&self, _connection: ConnectionId, _buffer: &mut [u8]) -> Result<usize, NetError> {
        Err(NetError::Closed)
    }

    fn write(&self, _connection: ConnectionId, _bytes: &[u8]) -> Result<usize, NetError> {
        Err(NetError::Closed)
    }

    fn shutdown(&self, _connection: ConnectionId) {}

    fn close(&self, _connection: ConnectionId) {}

    fn connection_readiness(&self, _connection: ConnectionId) -> Readiness {
        Readiness {
            hangup: true,
            ..Readiness::default()
        }
    }

    fn forget_domain(&self, _domain: DomainId) {}
}

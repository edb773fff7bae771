//! `NetError`: why a network call failed, from the ABI's status codes.

use std::fmt;
use std::io;

use abi::StatusCode;

/// Why a call of [`net`](crate::net) did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetError {
    /// Nothing happened before the timeout (with a zero timeout: nothing
    /// was ready).
    Timeout,
    /// The connection was reset by the peer, or because the domain was
    /// restored from a commit taken while it was open. Close it.
    ConnectionReset,
    /// The image does not declare the port, so the domain may not listen.
    PortNotDeclared,
    /// No open socket has this number (it was closed).
    NoSuchSocket,
    /// Nothing listens at the address, or it cannot be reached.
    ConnectionRefused,
    /// The domain holds as many connections as it may
    /// ([`MAX_CONNECTIONS_PER_DOMAIN`](abi::MAX_CONNECTIONS_PER_DOMAIN)), or
    /// the machine has no room for another.
    LimitReached,
    /// A listener where a connection is needed or the other way round, or a
    /// write after [`TcpStream::shutdown`](crate::net::TcpStream::shutdown).
    WrongSocket,
    /// More poll entries than
    /// [`MAX_POLL_ENTRIES`](abi::MAX_POLL_ENTRIES) (checked before calling
    /// the host).
    TooManyEntries,
    /// The host answered with a code this call does not expect (the raw
    /// code, or a count past the buffer).
    Unexpected(i32),
}

impl NetError {
    /// The error for a call that returned the status `code` (not `Ok`).
    pub(crate) fn from_code(code: i32) -> Self {
        match StatusCode::from_code(code) {
            Some(StatusCode::Timeout) => Self::Timeout,
            Some(StatusCode::ConnectionReset) => Self::ConnectionReset,
            Some(StatusCode::PortNotDeclared) => Self::PortNotDeclared,
            Some(StatusCode::NoSuchSocket) => Self::NoSuchSocket,
            Some(StatusCode::ConnectionRefused) => Self::ConnectionRefused,
            Some(StatusCode::LimitReached) => Self::LimitReached,
            Some(StatusCode::WrongSocket) => Self::WrongSocket,
            _ => Self::Unexpected(code),
        }
    }

    /// The `std::io` kind closest to this error.
    pub fn io_kind(self) -> io::ErrorKind {
        match self {
            Self::Timeout => io::ErrorKind::TimedOut,
            Self::ConnectionReset => io::ErrorKind::ConnectionReset,
            Self::PortNotDeclared => io::ErrorKind::PermissionDenied,
            Self::NoSuchSocket => io::ErrorKind::NotConnected,
            Self::ConnectionRefused => io::ErrorKind::ConnectionRefused,
            Self::LimitReached => io::ErrorKind::QuotaExceeded,
            Self::WrongSocket | Self::TooManyEntries => io::ErrorKind::InvalidInput,
            Self::Unexpected(_) => io::ErrorKind::Other,
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => formatter.write_str("nothing happened before the timeout"),
            Self::ConnectionReset => formatter.write_str("the connection was reset"),
            Self::PortNotDeclared => formatter.write_str("the image does not declare the port"),
            Self::NoSuchSocket => formatter.write_str("no open socket has that number"),
            Self::ConnectionRefused => formatter.write_str("the connection was refused"),
            Self::LimitReached => formatter.write_str("no room for another connection"),
            Self::WrongSocket => {
                formatter.write_str("the socket cannot do that (listener, or shut down)")
            }
            Self::TooManyEntries => write!(
                formatter,
                "more than {} poll entries",
                abi::MAX_POLL_ENTRIES
            ),
            Self::Unexpected(code) => match StatusCode::from_code(*code) {
                Some(status) => write!(
                    formatter,
                    "unexpected network status {code} ({})",
                    status.name()
                ),
                None => write!(formatter, "unexpected network status {code}"),
            },
        }
    }
}

impl std::error::Error for NetError {}

impl From<NetError> for io::Error {
    fn from(error: NetError) -> io::Error {
        io::Error::new(error.io_kind(), error)
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::NetError;

    #[test]
    fn codes_become_errors_and_io_kinds() {
        assert_eq!(NetError::from_code(3), NetError::Timeout);
        assert_eq!(NetError::from_code(7), NetError::ConnectionReset);
        assert_eq!(NetError::from_code(8), NetError::PortNotDeclared);
        assert_eq!(NetError::from_code(9), NetError::NoSuchSocket);
        assert_eq!(NetError::from_code(10), NetError::ConnectionRefused);
        assert_eq!(NetError::from_code(11), NetError::LimitReached);
        assert_eq!(NetError::from_code(12), NetError::WrongSocket);
        assert_eq!(NetError::from_code(1), NetError::Unexpected(1));
        assert_eq!(NetError::from_code(99), NetError::Unexpected(99));
        let error = io::Error::from(NetError::ConnectionReset);
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(error.to_string(), "the connection was reset");
        assert_eq!(
            io::Error::from(NetError::Timeout).kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn unexpected_codes_are_named_when_known() {
        assert_eq!(
            NetError::Unexpected(2).to_string(),
            "unexpected network status 2 (MAILBOX_FULL)"
        );
        assert_eq!(
            NetError::Unexpected(-5).to_string(),
            "unexpected network status -5"
        );
    }
}

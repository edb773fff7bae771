//! The status codes Amber's imports return, one table for host and guest.

/// What an `amber` host call returns to the guest for a *bad request*; guest
/// misbehaviour (a wild pointer) traps the domain instead.
///
/// The numbers are stable: new codes are only ever added at the end. `send`
/// and `checkpoint` return the code; `recv` and the `tcp_*` calls that
/// return a length or a socket number return its negation (so that lengths
/// stay positive).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusCode {
    /// The call did what was asked.
    Ok = 0,
    /// No domain has the name or ID given to `send`.
    NoSuchDomain = 1,
    /// The receiver's mailbox holds as many messages, or bytes, as it may
    /// (or the sender keeps as many unacknowledged copies to it as it may).
    MailboxFull = 2,
    /// `recv` waited its whole timeout without a message.
    Timeout = 3,
    /// A message is larger than [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES),
    /// or a name longer than [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES).
    TooLarge = 4,
    /// `recv`'s buffer is smaller than the next message (the message stays queued).
    BufferTooSmall = 5,
    /// `checkpoint` could not make the domain durable (storage failed or the
    /// module cannot be resumed mid-computation); the last commit stays valid.
    CheckpointFailed = 6,
    /// The connection was reset: by the peer, or because the domain was
    /// restored (after a reboot, a rollback or a migration) from a commit
    /// taken while it was open. Close it; the client reconnects.
    ConnectionReset = 7,
    /// The domain's image does not declare this port (`image new --listen`),
    /// so it may not listen on it.
    PortNotDeclared = 8,
    /// No open socket has this number (never opened, or closed).
    NoSuchSocket = 9,
    /// Nothing listens at the address `tcp_connect` was given, or it is
    /// unreachable.
    ConnectionRefused = 10,
    /// The domain holds as many connections, or buffered bytes, as it may
    /// ([`MAX_CONNECTIONS_PER_DOMAIN`](crate::MAX_CONNECTIONS_PER_DOMAIN)),
    /// or the machine has no room for another.
    LimitReached = 11,
    /// The socket is a listener where a connection is needed, or the other
    /// way round, or its writing side was shut down.
    WrongSocket = 12,
}

impl StatusCode {
    /// Every code, in numeric order.
    pub const ALL: [Self; 13] = [
        Self::Ok,
        Self::NoSuchDomain,
        Self::MailboxFull,
        Self::Timeout,
        Self::TooLarge,
        Self::BufferTooSmall,
        Self::CheckpointFailed,
        Self::ConnectionReset,
        Self::PortNotDeclared,
        Self::NoSuchSocket,
        Self::ConnectionRefused,
        Self::LimitReached,
        Self::WrongSocket,
    ];

    /// The value handed to the guest (an `i32` in every import signature).
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The value `recv` returns for this status.
    pub const fn negated(self) -> i32 {
        -(self as i32)
    }

    /// The status with ABI code `code`, if this crate knows it (a newer host
    /// may return codes an older guest does not).
    pub const fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => Self::Ok,
            1 => Self::NoSuchDomain,
            2 => Self::MailboxFull,
            3 => Self::Timeout,
            4 => Self::TooLarge,
            5 => Self::BufferTooSmall,
            6 => Self::CheckpointFailed,
            7 => Self::ConnectionReset,
            8 => Self::PortNotDeclared,
            9 => Self::NoSuchSocket,
            10 => Self::ConnectionRefused,
            11 => Self::LimitReached,
            12 => Self::WrongSocket,
            _ => return None,
        })
    }

    /// The name guest-sdk/README.md's table gives the code.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::NoSuchDomain => "NO_SUCH_DOMAIN",
            Self::MailboxFull => "MAILBOX_FULL",
            Self::Timeout => "TIMEOUT",
            Self::TooLarge => "TOO_LARGE",
            Self::BufferTooSmall => "BUFFER_TOO_SMALL",
            Self::CheckpointFailed => "CHECKPOINT_FAILED",
            Self::ConnectionReset => "CONNECTION_RESET",
            Self::PortNotDeclared => "PORT_NOT_DECLARED",
            Self::NoSuchSocket => "NO_SUCH_SOCKET",
            Self::ConnectionRefused => "CONNECTION_REFUSED",
            Self::LimitReached => "LIMIT_REACHED",
            Self::WrongSocket => "WRONG_SOCKET",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StatusCode;

    #[test]
    fn codes_round_trip() {
        for (index, status) in StatusCode::ALL.iter().enumerate() {
            assert_eq!(status.code(), index as i32);
            assert_eq!(StatusCode::from_code(status.code()), Some(*status));
            assert_eq!(status.negated(), -status.code());
        }
        for code in -2..20 {
            if let Some(status) = StatusCode::from_code(code) {
                assert_eq!(status.code(), code);
            }
        }
        assert_eq!(StatusCode::from_code(3), Some(StatusCode::Timeout));
        assert_eq!(StatusCode::from_code(5), Some(StatusCode::BufferTooSmall));
        assert_eq!(StatusCode::from_code(13), None);
        assert_eq!(StatusCode::from_code(-1), None);
    }
}

//! The ABI's status codes and the typed errors built from them.

use std::fmt;

/// A status code returned by `send`, `recv` (negated) and `checkpoint`.
///
/// The numbers are stable (README, "Status codes"); a code this SDK does not
/// know yet, from a newer host, becomes [`Status::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 0: done.
    Ok,
    /// 1: no domain has that name or ID.
    NoSuchDomain,
    /// 2: the receiver's mailbox is full.
    MailboxFull,
    /// 3: nothing arrived before the timeout.
    Timeout,
    /// 4: a message or a name is over its limit.
    TooLarge,
    /// 5: `recv`'s buffer is shorter than the next message.
    BufferTooSmall,
    /// 6: the domain could not be made durable; the last commit stays valid.
    CheckpointFailed,
    /// A code this SDK does not know.
    Unknown(i32),
}

impl Status {
    /// The status for ABI code `code`.
    pub const fn from_code(code: i32) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::NoSuchDomain,
            2 => Self::MailboxFull,
            3 => Self::Timeout,
            4 => Self::TooLarge,
            5 => Self::BufferTooSmall,
            6 => Self::CheckpointFailed,
            other => Self::Unknown(other),
        }
    }

    /// The ABI code of this status.
    pub const fn code(self) -> i32 {
        match self {
            Self::Ok => 0,
            Self::NoSuchDomain => 1,
            Self::MailboxFull => 2,
            Self::Timeout => 3,
            Self::TooLarge => 4,
            Self::BufferTooSmall => 5,
            Self::CheckpointFailed => 6,
            Self::Unknown(code) => code,
        }
    }
}

/// Why [`send`](crate::send) did not deliver a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendError {
    /// No domain has that name or ID.
    NoSuchDomain,
    /// The receiver's mailbox is full; try again later.
    MailboxFull,
    /// The message is over [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES).
    TooLarge,
    /// The name is empty or over [`MAX_NAME_BYTES`](crate::MAX_NAME_BYTES)
    /// (checked before calling the host).
    InvalidName,
    /// The host answered with a status `send` does not expect.
    Unexpected(Status),
}

impl SendError {
    pub(crate) fn from_status(status: Status) -> Self {
        match status {
            Status::NoSuchDomain => Self::NoSuchDomain,
            Status::MailboxFull => Self::MailboxFull,
            Status::TooLarge => Self::TooLarge,
            other => Self::Unexpected(other),
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchDomain => formatter.write_str("no domain has that name or ID"),
            Self::MailboxFull => formatter.write_str("the receiver's mailbox is full"),
            Self::TooLarge => formatter.write_str("the message is too large"),
            Self::InvalidName => formatter.write_str("the domain name is empty or too long"),
            Self::Unexpected(status) => write!(formatter, "unexpected send status {status:?}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`recv`](crate::recv) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecvError {
    /// No message arrived before the timeout.
    Timeout,
    /// The oldest message is longer than the buffer; it stays in the mailbox.
    /// A buffer of [`MAX_MESSAGE_BYTES`](crate::MAX_MESSAGE_BYTES) always fits.
    BufferTooSmall,
    /// The host answered with a status `recv` does not expect.
    Unexpected(Status),
}

impl RecvError {
    pub(crate) fn from_status(status: Status) -> Self {
        match status {
            Status::Timeout => Self::Timeout,
            Status::BufferTooSmall => Self::BufferTooSmall,
            other => Self::Unexpected(other),
        }
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => formatter.write_str("no message arrived before the timeout"),
            Self::BufferTooSmall => {
                formatter.write_str("the next message is larger than the buffer")
            }
            Self::Unexpected(status) => write!(formatter, "unexpected recv status {status:?}"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Why [`checkpoint`](crate::checkpoint) did not commit the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointError {
    /// The domain could not be made durable (storage failed, or the module
    /// cannot be resumed mid-computation); the previous commit stays valid.
    Failed,
    /// The host answered with a status `checkpoint` does not expect.
    Unexpected(Status),
}

impl CheckpointError {
    pub(crate) fn from_status(status: Status) -> Self {
        match status {
            Status::CheckpointFailed => Self::Failed,
            other => Self::Unexpected(other),
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed => formatter.write_str("the domain could not be made durable"),
            Self::Unexpected(status) => {
                write!(formatter, "unexpected checkpoint status {status:?}")
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn codes_round_trip() {
        for code in -2..12 {
            assert_eq!(Status::from_code(code).code(), code);
        }
        assert_eq!(Status::from_code(3), Status::Timeout);
        assert_eq!(Status::from_code(5), Status::BufferTooSmall);
        assert_eq!(Status::from_code(9), Status::Unknown(9));
    }
}

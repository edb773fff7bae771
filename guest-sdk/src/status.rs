//! Typed errors built from the ABI's status codes (`abi::StatusCode`).
//!
//! The codes themselves are the abi crate's, the one table the vm returns
//! them from. A code this SDK does not know yet (from a newer host) becomes
//! an `Unexpected` error holding the raw code, never a panic.

use std::fmt;

use abi::StatusCode;

/// Writes `code`, with its name when this SDK knows it.
fn write_code(formatter: &mut fmt::Formatter<'_>, code: i32) -> fmt::Result {
    match StatusCode::from_code(code) {
        Some(status) => write!(formatter, "{code} ({})", status.name()),
        None => write!(formatter, "{code}"),
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
    /// The host answered with a code `send` does not expect (the raw code;
    /// [`StatusCode::from_code`] names it when this SDK knows it).
    Unexpected(i32),
}

impl SendError {
    /// The error for a `send` that returned `code`, which is not `Ok`.
    pub(crate) fn from_code(code: i32) -> Self {
        match StatusCode::from_code(code) {
            Some(StatusCode::NoSuchDomain) => Self::NoSuchDomain,
            Some(StatusCode::MailboxFull) => Self::MailboxFull,
            Some(StatusCode::TooLarge) => Self::TooLarge,
            _ => Self::Unexpected(code),
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
            Self::Unexpected(code) => {
                formatter.write_str("unexpected send status ")?;
                write_code(formatter, *code)
            }
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
    /// The host answered with a code `recv` does not expect (the raw code,
    /// or a length past the buffer).
    Unexpected(i32),
}

impl RecvError {
    /// The error for a `recv` that returned `-code`.
    pub(crate) fn from_code(code: i32) -> Self {
        match StatusCode::from_code(code) {
            Some(StatusCode::Timeout) => Self::Timeout,
            Some(StatusCode::BufferTooSmall) => Self::BufferTooSmall,
            _ => Self::Unexpected(code),
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
            Self::Unexpected(code) => {
                formatter.write_str("unexpected recv status ")?;
                write_code(formatter, *code)
            }
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
    /// The host answered with a code `checkpoint` does not expect (the raw
    /// code).
    Unexpected(i32),
}

impl CheckpointError {
    /// The error for a `checkpoint` that returned `code`, which is not `Ok`.
    pub(crate) fn from_code(code: i32) -> Self {
        match StatusCode::from_code(code) {
            Some(StatusCode::CheckpointFailed) => Self::Failed,
            _ => Self::Unexpected(code),
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed => formatter.write_str("the domain could not be made durable"),
            Self::Unexpected(code) => {
                formatter.write_str("unexpected checkpoint status ")?;
                write_code(formatter, *code)
            }
        }
    }
}

impl std::error::Error for CheckpointError {}

#[cfg(test)]
mod tests {
    use super::{CheckpointError, RecvError, SendError};

    #[test]
    fn codes_become_the_errors_each_call_expects() {
        assert_eq!(SendError::from_code(1), SendError::NoSuchDomain);
        assert_eq!(SendError::from_code(2), SendError::MailboxFull);
        assert_eq!(SendError::from_code(4), SendError::TooLarge);
        assert_eq!(SendError::from_code(3), SendError::Unexpected(3));
        assert_eq!(RecvError::from_code(3), RecvError::Timeout);
        assert_eq!(RecvError::from_code(5), RecvError::BufferTooSmall);
        assert_eq!(RecvError::from_code(9), RecvError::Unexpected(9));
        assert_eq!(CheckpointError::from_code(6), CheckpointError::Failed);
        assert_eq!(
            CheckpointError::from_code(-2),
            CheckpointError::Unexpected(-2)
        );
    }

    #[test]
    fn unexpected_codes_are_named_when_known() {
        assert_eq!(
            SendError::Unexpected(3).to_string(),
            "unexpected send status 3 (TIMEOUT)"
        );
        assert_eq!(
            RecvError::Unexpected(99).to_string(),
            "unexpected recv status 99"
        );
    }
}

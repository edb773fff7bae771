//! Why a migration step failed: the wire, the protocol, or an image.

use core::fmt;

use super::record::MigrationId;
use super::wire::Refusal;

/// Everything that can go wrong in a migration.
///
/// A separate enum from [`crate::Error`] because most causes are about a
/// peer's messages, not about an image; image failures are wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// An image (the source's, or the target's spare disk) failed.
    Image(crate::Error),
    /// Fewer bytes than the frame needs.
    Truncated {
        /// Bytes the frame needs.
        needed_bytes: usize,
        /// Bytes there are.
        got_bytes: usize,
    },
    /// Bytes after the frame's end.
    TrailingBytes {
        /// How many.
        extra_bytes: usize,
    },
    /// The frame does not start with `AMIG`.
    BadMagic,
    /// A wire version this code does not speak.
    UnsupportedWireVersion {
        /// The version in the frame.
        found: u16,
        /// The version this code speaks.
        supported: u16,
    },
    /// A payload longer than any message has.
    PayloadTooLong {
        /// The length the header claims.
        len_bytes: usize,
        /// The bound.
        max_bytes: usize,
    },
    /// The frame's CRC-32C does not match its bytes.
    ChecksumMismatch,
    /// A message kind this version does not know.
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A payload of the wrong length for its kind.
    BadLength {
        /// The kind of message.
        message: &'static str,
        /// The payload's length.
        len_bytes: usize,
    },
    /// A field with a value no message has.
    BadValue {
        /// The field.
        field: &'static str,
    },
    /// A valid message that makes no sense now.
    Unexpected {
        /// The message.
        message: &'static str,
        /// What the receiver was doing.
        state: &'static str,
    },
    /// A message about another migration.
    WrongMigration {
        /// This migration.
        expected: MigrationId,
        /// The message's.
        found: MigrationId,
    },
    /// A module or metadata record larger than a migration carries.
    TooLarge {
        /// What.
        what: &'static str,
        /// Its length.
        len_bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
    /// A chunk that does not continue where the last one ended.
    OutOfOrderChunk {
        /// What.
        what: &'static str,
        /// The offset expected.
        expected_offset: u64,
        /// The offset received.
        found_offset: u64,
    },
    /// The module received does not hash to the announced SHA-256.
    ModuleSha256Mismatch,
    /// The metadata received does not decode, or names another domain.
    BadMetadata {
        /// What is wrong.
        reason: &'static str,
    },
    /// The metadata received decodes but breaks a rule of
    /// [`crate::validate`]: the copy is refused like a local image would be.
    MetadataRefused(crate::MetadataError),
    /// A round's counts or page digest differ between source and target:
    /// something was lost or changed on the way.
    RoundMismatch {
        /// Which check failed.
        what: &'static str,
        /// The source's figure.
        expected: u64,
        /// The target's.
        found: u64,
    },
    /// The source image was committed during the final round: the caller
    /// must keep the domain paused from `begin_final_round` until the end.
    CommittedDuringFinalRound,
    /// The source has already committed the hand-over: it can no longer
    /// abort (the domain belongs to the target).
    AlreadyHandedOver,
    /// The target refused the migration.
    Refused {
        /// Why.
        reason: Refusal,
    },
    /// This image may not be discarded: it owns a runnable domain.
    NotDiscardable,
}

impl From<crate::Error> for Error {
    fn from(error: crate::Error) -> Self {
        Self::Image(error)
    }
}

impl From<crate::DeviceError> for Error {
    fn from(error: crate::DeviceError) -> Self {
        Self::Image(crate::Error::Device(error))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Image(error) => write!(formatter, "image: {error}"),
            Self::Truncated {
                needed_bytes,
                got_bytes,
            } => write!(
                formatter,
                "truncated message: {got_bytes} bytes of {needed_bytes}"
            ),
            Self::TrailingBytes { extra_bytes } => {
                write!(formatter, "{extra_bytes} bytes after the message")
            }
            Self::BadMagic => write!(formatter, "not a migration message (bad magic)"),
            Self::UnsupportedWireVersion { found, supported } => write!(
                formatter,
                "migration wire version {found} is not supported (this code speaks {supported})"
            ),
            Self::PayloadTooLong {
                len_bytes,
                max_bytes,
            } => write!(
                formatter,
                "message payload of {len_bytes} bytes is over the {max_bytes}-byte bound"
            ),
            Self::ChecksumMismatch => write!(formatter, "message checksum mismatch"),
            Self::UnknownKind { kind } => write!(formatter, "unknown message kind {kind}"),
            Self::BadLength { message, len_bytes } => {
                write!(
                    formatter,
                    "{message} message of the wrong length {len_bytes}"
                )
            }
            Self::BadValue { field } => write!(formatter, "invalid {field} in a message"),
            Self::Unexpected { message, state } => {
                write!(formatter, "unexpected {message} message while {state}")
            }
            Self::WrongMigration { expected, found } => write!(
                formatter,
                "message for migration {found:032x}, not {expected:032x}"
            ),
            Self::TooLarge {
                what,
                len_bytes,
                max_bytes,
            } => write!(
                formatter,
                "{what} of {len_bytes} bytes is over the {max_bytes}-byte bound"
            ),
            Self::OutOfOrderChunk {
                what,
                expected_offset,
                found_offset,
            } => write!(
                formatter,
                "{what} chunk at offset {found_offset}, expected {expected_offset}"
            ),
            Self::ModuleSha256Mismatch => write!(
                formatter,
                "the module received does not match its announced hash"
            ),
            Self::BadMetadata { reason } => write!(formatter, "bad metadata received: {reason}"),
            Self::MetadataRefused(error) => write!(formatter, "metadata refused: {error}"),
            Self::RoundMismatch {
                what,
                expected,
                found,
            } => write!(
                formatter,
                "{what}: the source says {expected}, the target has {found}"
            ),
            Self::CommittedDuringFinalRound => write!(
                formatter,
                "the source image was committed during the final round"
            ),
            Self::AlreadyHandedOver => write!(
                formatter,
                "the domain is already handed over: the migration cannot be aborted"
            ),
            Self::Refused { reason } => write!(formatter, "the target refused: {reason:?}"),
            Self::NotDiscardable => write!(
                formatter,
                "the image owns a runnable domain and may not be discarded"
            ),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Image(error) => Some(error),
            _ => None,
        }
    }
}

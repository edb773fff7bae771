//! The domain itself: its ID, checkpoints, randomness and exit.

use std::fmt;
use std::str::FromStr;

use crate::status::{CheckpointError, Status};
use crate::sys;

/// A domain's stable 128-bit ID.
///
/// It never changes, not across reboots nor moves, so an app may store it. In
/// text it is 32 lowercase hex digits, which is also a name `send` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u128);

impl DomainId {
    /// The ID from the 16 little-endian bytes the ABI writes.
    pub const fn from_le_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_le_bytes(bytes))
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

/// The text is not 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseDomainIdError;

impl fmt::Display for ParseDomainIdError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a domain ID is 32 hex digits")
    }
}

impl std::error::Error for ParseDomainIdError {}

impl FromStr for DomainId {
    type Err = ParseDomainIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(ParseDomainIdError);
        }
        u128::from_str_radix(text, 16)
            .map(Self)
            .map_err(|_| ParseDomainIdError)
    }
}

/// This domain's ID.
pub fn self_id() -> DomainId {
    DomainId::from_le_bytes(sys::self_id())
}

/// Commits the domain (memory, globals and where it is suspended) durably.
///
/// Returns once the commit is on disk, so what the app did before the call
/// survives any crash after it. The host also commits by itself every so often;
/// call this where an app must not lose work, e.g. before acknowledging it.
pub fn checkpoint() -> Result<(), CheckpointError> {
    match Status::from_code(sys::checkpoint()) {
        Status::Ok => Ok(()),
        status => Err(CheckpointError::from_status(status)),
    }
}

/// Fills `buffer` with random bytes from the host.
pub fn random(buffer: &mut [u8]) {
    sys::random(buffer);
}

/// Ends the domain with exit `code` (the host commits it first).
pub fn exit(code: i32) -> ! {
    sys::exit(code)
}

#[cfg(test)]
mod tests {
    use super::DomainId;

    #[test]
    fn ids_print_and_parse_as_32_hex_digits() {
        let id = DomainId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<DomainId>(), Ok(id));
        assert!(
            "+123456789abcdef0011223344556677"
                .parse::<DomainId>()
                .is_err()
        );
        assert!("kv".parse::<DomainId>().is_err());
    }

    #[test]
    fn ids_are_little_endian_in_memory() {
        let mut bytes = [0u8; 16];
        bytes[0] = 1;
        assert_eq!(DomainId::from_le_bytes(bytes), DomainId(1));
    }
}

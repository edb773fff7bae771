//! A domain's stable 128-bit ID, the one type every crate uses for it.

use core::fmt;
use core::str::FromStr;

/// A domain's stable 128-bit ID.
///
/// It never changes, not across reboots nor moves, so an app may store it.
/// Written to guest memory it is 16 bytes little-endian ([`Self::to_le_bytes`]);
/// in text it is 32 lowercase hex digits, most significant first, which is
/// also a name `send` accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u128);

impl DomainId {
    /// The bytes the ID takes in guest memory (`self_id`, `recv`'s `from`).
    pub const BYTES: usize = 16;

    /// The ID from the 16 little-endian bytes the ABI writes.
    pub const fn from_le_bytes(bytes: [u8; Self::BYTES]) -> Self {
        Self(u128::from_le_bytes(bytes))
    }

    /// The 16 little-endian bytes the ABI writes.
    pub const fn to_le_bytes(self) -> [u8; Self::BYTES] {
        self.0.to_le_bytes()
    }

    /// The ID a text names: exactly 32 hex digits (either case), nothing else.
    pub fn parse_hex(text: &[u8]) -> Option<Self> {
        if text.len() != 32 || !text.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let text = core::str::from_utf8(text).ok()?;
        u128::from_str_radix(text, 16).ok().map(Self)
    }
}

/// 32 lowercase hex digits.
impl fmt::Display for DomainId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

/// The number in hex, as `u128` formats it (`{:032x}` is the text form).
impl fmt::LowerHex for DomainId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, formatter)
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

impl core::error::Error for ParseDomainIdError {}

impl FromStr for DomainId {
    type Err = ParseDomainIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_hex(text.as_bytes()).ok_or(ParseDomainIdError)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::DomainId;

    #[test]
    fn ids_print_and_parse_as_32_hex_digits() {
        let id = DomainId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<DomainId>(), Ok(id));
        assert_eq!(std::format!("{id:032x}"), text);
        assert!(
            "+123456789abcdef0011223344556677"
                .parse::<DomainId>()
                .is_err()
        );
        assert!("kv".parse::<DomainId>().is_err());
        assert_eq!(
            DomainId::parse_hex(b"0123456789ABCDEF0011223344556677"),
            Some(id)
        );
    }

    #[test]
    fn ids_are_little_endian_in_memory() {
        let mut bytes = [0u8; 16];
        bytes[0] = 1;
        assert_eq!(DomainId::from_le_bytes(bytes), DomainId(1));
        assert_eq!(DomainId(1).to_le_bytes(), bytes);
    }
}

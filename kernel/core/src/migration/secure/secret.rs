//! The cluster secret: 32 bytes every machine of one cluster holds.

use core::fmt;

use zeroize::Zeroize;

/// Bytes of a cluster secret.
pub const SECRET_BYTES: usize = 32;

/// Hex digits of a cluster secret as an operator writes it.
pub const SECRET_HEX_DIGITS: usize = 2 * SECRET_BYTES;

/// The secret the machines of one cluster share: it is the pre-shared key
/// of the migration link's Noise handshake, so holding it is what makes a
/// machine a member. It never leaves the machine in any form: `Debug`
/// shows no byte of it, and its bytes are overwritten when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    bytes: [u8; SECRET_BYTES],
}

impl ClusterSecret {
    /// The secret as an operator gives it: exactly 64 hex digits (either
    /// case), optionally followed by one newline (what `openssl rand -hex
    /// 32 > file` writes). Nothing else is accepted, nor a secret of all
    /// zeros (an unset secret, not a chosen one).
    pub fn parse(text: &[u8]) -> Result<ClusterSecret, SecretError> {
        let digits = text.strip_suffix(b"\n").unwrap_or(text);
        if digits.len() != SECRET_HEX_DIGITS {
            return Err(SecretError::WrongLength {
                length_bytes: text.len(),
            });
        }
        let mut secret = ClusterSecret {
            bytes: [0; SECRET_BYTES],
        };
        for (index, pair) in digits.chunks_exact(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(SecretError::NotHex {
                position: 2 * index,
            })?;
            let low = hex_value(pair[1]).ok_or(SecretError::NotHex {
                position: 2 * index + 1,
            })?;
            secret.bytes[index] = (high << 4) | low;
        }
        if secret.bytes.iter().all(|&byte| byte == 0) {
            return Err(SecretError::AllZero);
        }
        Ok(secret)
    }

    /// A secret made of these bytes (tests, and peers that hold the bytes
    /// already); all zeros is refused as in [`ClusterSecret::parse`].
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Result<ClusterSecret, SecretError> {
        let secret = ClusterSecret { bytes };
        if secret.bytes.iter().all(|&byte| byte == 0) {
            return Err(SecretError::AllZero);
        }
        Ok(secret)
    }

    /// The key for the handshake; only the link reads it.
    /// Feeds the secret's bytes to `sink`, for mixing into a random
    /// generator's seed (the kernel's, where the CPU has no RDRAND): the
    /// bytes go nowhere else, and `sink` must not keep or show them.
    pub fn feed_into(&self, sink: &mut dyn FnMut(&[u8])) {
        sink(&self.bytes);
    }

    pub(super) fn as_key(&self) -> &[u8; SECRET_BYTES] {
        &self.bytes
    }
}

impl Drop for ClusterSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ClusterSecret(..)")
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Why a cluster secret was refused. No variant carries the bytes given:
/// an error message must not leak a near-miss of the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    /// Not 64 hex digits (with at most one trailing newline).
    WrongLength {
        /// How many bytes were given.
        length_bytes: usize,
    },
    /// A byte that is not a hex digit.
    NotHex {
        /// Where, counting from 0.
        position: usize,
    },
    /// All 64 digits are zero.
    AllZero,
}

impl fmt::Display for SecretError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::WrongLength { length_bytes } => write!(
                formatter,
                "it is {length_bytes} bytes long, not {SECRET_HEX_DIGITS} hex digits \
                 (and at most one newline)"
            ),
            SecretError::NotHex { position } => {
                write!(formatter, "byte {position} is not a hex digit")
            }
            SecretError::AllZero => formatter.write_str("it is all zeros"),
        }
    }
}

/// Where the randomness for the handshake's ephemeral keys comes from: a
/// CSPRNG seeded by the hardware in the kernel, the OS on a host.
pub trait Entropy {
    /// Fills `bytes` with unpredictable bytes.
    fn fill(&mut self, bytes: &mut [u8]);
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, bytes: &mut [u8]) {
        (**self).fill(bytes);
    }
}

impl<E: Entropy + ?Sized> Entropy for alloc::boxed::Box<E> {
    fn fill(&mut self, bytes: &mut [u8]) {
        (**self).fill(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    const HEX: &[u8] = b"00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn sixty_four_hex_digits_parse_with_or_without_a_newline() {
        let secret = ClusterSecret::parse(HEX).unwrap();
        assert_eq!(secret.as_key()[..4], [0x00, 0x11, 0x22, 0x33]);
        assert_eq!(secret.as_key()[31], 0xff);
        let mut line = HEX.to_vec();
        line.push(b'\n');
        assert_eq!(ClusterSecret::parse(&line), Ok(secret));
    }

    #[test]
    fn anything_else_is_refused_without_echoing_it() {
        assert_eq!(
            ClusterSecret::parse(&HEX[..63]),
            Err(SecretError::WrongLength { length_bytes: 63 })
        );
        let mut long = HEX.to_vec();
        long.extend_from_slice(b"\n\n");
        assert_eq!(
            ClusterSecret::parse(&long),
            Err(SecretError::WrongLength { length_bytes: 66 })
        );
        let mut spaced = HEX.to_vec();
        spaced.push(b' ');
        assert!(ClusterSecret::parse(&spaced).is_err());
        let mut bad = HEX.to_vec();
        bad[10] = b'g';
        let error = ClusterSecret::parse(&bad).unwrap_err();
        assert_eq!(error, SecretError::NotHex { position: 10 });
        assert_eq!(format!("{error}"), "byte 10 is not a hex digit");
        assert_eq!(ClusterSecret::parse(&[b'0'; 64]), Err(SecretError::AllZero));
        assert_eq!(
            ClusterSecret::from_bytes([0; 32]),
            Err(SecretError::AllZero)
        );
        assert!(ClusterSecret::parse(b"").is_err());
    }

    #[test]
    fn debug_shows_no_byte_of_the_secret() {
        let secret = ClusterSecret::from_bytes([0xab; 32]).unwrap();
        let shown = format!("{secret:?} {secret:#?}");
        assert_eq!(shown, "ClusterSecret(..) ClusterSecret(..)");
        assert!(!shown.to_lowercase().contains("ab"));
    }
}

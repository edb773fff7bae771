//! snow's crypto for the link, with randomness the machine supplies.

use alloc::boxed::Box;

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroize;

use super::secret::Entropy;

/// Random bytes one handshake may use: an X25519 ephemeral key is 32.
const HANDSHAKE_RANDOM_BYTES: usize = 64;

/// snow's own implementations of X25519, ChaChaPoly and BLAKE2s (the
/// RustCrypto and dalek crates), and for randomness the bytes drawn from
/// the machine's [`Entropy`] when the link was made: without `std`, snow
/// has no source of its own.
pub(super) struct LinkResolver {
    random: [u8; HANDSHAKE_RANDOM_BYTES],
}

impl LinkResolver {
    pub(super) fn new(entropy: &mut dyn Entropy) -> LinkResolver {
        let mut random = [0u8; HANDSHAKE_RANDOM_BYTES];
        entropy.fill(&mut random);
        LinkResolver { random }
    }
}

impl Drop for LinkResolver {
    fn drop(&mut self) {
        self.random.zeroize();
    }
}

impl CryptoResolver for LinkResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(DrawnBytes {
            bytes: self.random,
            used: 0,
        }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// Bytes drawn in advance, each given out once; asking for more than are
/// left fails the handshake rather than reusing any.
struct DrawnBytes {
    bytes: [u8; HANDSHAKE_RANDOM_BYTES],
    used: usize,
}

impl Random for DrawnBytes {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        let end = self
            .used
            .checked_add(dest.len())
            .filter(|&end| end <= HANDSHAKE_RANDOM_BYTES)
            .ok_or(snow::Error::Rng)?;
        dest.copy_from_slice(&self.bytes[self.used..end]);
        self.bytes[self.used..end].zeroize();
        self.used = end;
        Ok(())
    }
}

impl Drop for DrawnBytes {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

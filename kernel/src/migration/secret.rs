//! The cluster secret from fw_cfg, and the randomness of the link's keys.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use kernel_core::migration::secure::SECRET_HEX_DIGITS;
use kernel_core::migration::{ClusterSecret, Entropy};
use sha2::{Digest, Sha256};

use crate::arch::{cpu, timer};
use crate::drivers::fw_cfg::{self, FwCfgError};
use crate::println;

/// The fw_cfg file holding the secret: QEMU's
/// `-fw_cfg name=opt/amber/cluster-secret,file=PATH`, PATH holding 64 hex
/// digits. Never the kernel command line, which the console can print.
pub const SECRET_FILE: &str = "opt/amber/cluster-secret";

/// The secret's file is refused, unread, past this many bytes.
const MAX_SECRET_FILE_BYTES: usize = 4096;

/// Reads the cluster secret and says in one line what the machine will do;
/// the line never shows the secret.
pub fn load() -> Option<ClusterSecret> {
    let text = match fw_cfg::read_file(SECRET_FILE, MAX_SECRET_FILE_BYTES) {
        Ok(Some(text)) => text,
        Ok(None) => {
            println!(
                "migration: no cluster secret (fw_cfg {SECRET_FILE}): this machine accepts \
                 no incoming migration and starts none"
            );
            return None;
        }
        Err(FwCfgError::TooLong { size_bytes, .. }) => {
            println!(
                "migration: the cluster secret (fw_cfg {SECRET_FILE}) is refused: it is \
                 {size_bytes} bytes, not {SECRET_HEX_DIGITS} hex digits; no migration in or out"
            );
            return None;
        }
    };
    match ClusterSecret::parse(&text) {
        Ok(secret) => {
            println!(
                "migration: cluster secret loaded: only machines holding it can migrate to \
                 or from this one"
            );
            Some(secret)
        }
        Err(error) => {
            println!(
                "migration: the cluster secret (fw_cfg {SECRET_FILE}) is refused: {error}; \
                 no migration in or out"
            );
            None
        }
    }
}

/// The ephemeral keys' randomness: a ChaCha20 keystream whose key is the
/// SHA-256 of RDRAND output, TSC readings and the cluster secret.
///
/// With RDRAND (KVM, and the TCG machines xtask starts, which it gives
/// `-cpu qemu64,+rdrand`) the keys are unpredictable to anyone. A CPU
/// without it (QEMU's bare default TCG model) leaves the TSC and the boot
/// time, guessable within a range, mixed with the secret: keys stay
/// unpredictable to everyone outside the cluster, which is what the
/// handshake needs, but forward secrecy then rests on the secret too, and
/// the boot says so.
pub struct KernelEntropy {
    stream: ChaCha20,
}

impl core::fmt::Debug for KernelEntropy {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str("KernelEntropy(..)")
    }
}

impl KernelEntropy {
    /// A generator seeded now, with `secret` mixed in when there is one.
    pub fn seeded(secret: Option<&ClusterSecret>) -> KernelEntropy {
        if secret.is_some() && cpu::hardware_random_u64().is_none() {
            log::warn!(
                "migration: this CPU has no RDRAND: the links' ephemeral keys come from TSC \
                 readings and the cluster secret, so forward secrecy rests on the secret"
            );
        }
        let mut hash = Sha256::new();
        hash.update(b"amber migration entropy 1");
        for _ in 0..8 {
            hash.update(cpu::hardware_random_u64().unwrap_or(0).to_le_bytes());
            hash.update(cpu::read_tsc().to_le_bytes());
        }
        hash.update(timer::since_reset_ns().to_le_bytes());
        if let Some(secret) = secret {
            secret.feed_into(&mut |bytes| hash.update(bytes));
        }
        let key: [u8; 32] = hash.finalize().into();
        KernelEntropy {
            stream: ChaCha20::new(&key.into(), &[0u8; 12].into()),
        }
    }
}

impl Entropy for KernelEntropy {
    fn fill(&mut self, bytes: &mut [u8]) {
        bytes.fill(0);
        self.stream.apply_keystream(bytes);
        // Fresh hardware randomness where there is some, so that a state
        // read out of memory does not give every later key.
        if let Some(extra) = cpu::hardware_random_u64() {
            for (byte, extra) in bytes.iter_mut().zip(extra.to_le_bytes().iter().cycle()) {
                *byte ^= extra;
            }
        }
    }
}

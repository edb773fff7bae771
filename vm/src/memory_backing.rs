//! Where a domain's linear memory lives and how its dirty pages are found.
//!
//! The embedder decides: the kernel hands out a demand-paged window and reads
//! the CPU's dirty bits; the host keeps memory on the heap and finds dirty pages
//! by hashing each 4 KiB page against its hash at the last commit.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::Error;
use crate::storage::Storage;

/// The page size of the image (persist's blocks), not Wasm's 64 KiB page.
pub const PAGE_BYTES: usize = 4096;

/// Wasm's page size.
pub const WASM_PAGE_BYTES: usize = 65536;

/// Backing store of one domain's memory.
pub trait MemoryBacking: Send {
    /// A buffer as large as the memory's maximum to hand to wasmi
    /// (`Memory::new_static`), or `None` to let wasmi own a growable heap vector.
    /// The kernel returns its window here; wasmi zero-fills what it uses.
    fn static_buffer(&mut self, maximum_bytes: u64) -> Option<&'static mut [u8]>;

    /// Indices of the 4 KiB pages of `memory` that differ from the last commit,
    /// ascending. A page never committed counts as zero in the image.
    fn dirty_pages(&mut self, memory: &[u8]) -> Vec<u64>;

    /// The pages last reported by `dirty_pages` are now durable.
    fn commit_succeeded(&mut self);

    /// `memory` as it is now equals the image (after a restore).
    fn reset_to(&mut self, memory: &[u8]);

    /// For a backing whose buffer reads as zero wherever nothing wrote (a
    /// demand-paged window, with wasmi's zero-filling patched out), the pages
    /// written since the memory was created: a restore then zeroes only those
    /// (data segments) instead of all of memory. `None`: zero everything.
    fn pages_written_since_creation(&mut self, _memory: &[u8]) -> Option<Vec<u64>> {
        None
    }

    /// How many 4 KiB pages of `memory` are in RAM (a demand-paged backing
    /// has fewer than all).
    fn resident_pages(&self, memory: &[u8]) -> u64 {
        memory.len().div_ceil(PAGE_BYTES) as u64
    }

    /// Restores lazily: a backing that pages in from the storage on demand
    /// makes `memory` read as the storage's last commit without copying a
    /// page (dropping what instantiation wrote) and returns `Ok(true)`.
    /// `Ok(false)`: the vm copies every stored page in.
    fn restore_lazily(
        &mut self,
        _memory: &[u8],
        _storage: &mut dyn Storage,
    ) -> Result<bool, Error> {
        Ok(false)
    }

    /// Called before every commit that writes memory: hands the storage
    /// what the backing wrote out on its own (evicted dirty pages), so the
    /// commit includes it.
    fn before_commit(&mut self, _storage: &mut dyn Storage) -> Result<(), Error> {
        Ok(())
    }

    /// Called after every commit that wrote memory, after `commit_succeeded`.
    fn after_commit(&mut self, _storage: &mut dyn Storage) -> Result<(), Error> {
        Ok(())
    }

    /// Called before each slice the domain runs, outside the guest: the
    /// time to prepare for it (blocks to evict into, room for pages that
    /// `memory.grow` added).
    fn before_slice(&mut self, _memory: &[u8], _storage: &mut dyn Storage) -> Result<(), Error> {
        Ok(())
    }

    /// Gives back to the storage the blocks the backing holds in reserve
    /// (a pager's pool for page-outs), so that a commit that found the disk
    /// full can use them; returns how many. The backing asks again before
    /// its next slice, for what is free then.
    fn release_reserve(&mut self, _storage: &mut dyn Storage) -> usize {
        0
    }

    /// Why memory can no longer be trusted (a page could not be read back
    /// or written out), if it cannot. The domain then traps and its memory
    /// is never committed again.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Host backing: wasmi's heap vector plus a 128-bit hash per page.
///
/// A changed page goes unnoticed only if both 64-bit lanes collide, which for
/// a non-adversarial guest is about 2^-128 per page and commit. Guests cannot
/// learn the seeds, which are fixed but private to the host.
#[derive(Debug, Default)]
pub struct HashedHeapBacking {
    committed: Vec<PageHash>,
    pending: Vec<PageHash>,
}

type PageHash = (u64, u64);

/// The hash of a page of zeros is irrelevant: absent pages are compared by
/// content, so this only marks "never committed".
const UNKNOWN: PageHash = (0, 0);

impl HashedHeapBacking {
    /// A backing that has committed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MemoryBacking for HashedHeapBacking {
    fn static_buffer(&mut self, _maximum_bytes: u64) -> Option<&'static mut [u8]> {
        None
    }

    fn dirty_pages(&mut self, memory: &[u8]) -> Vec<u64> {
        let mut dirty = Vec::new();
        self.pending.clear();
        for (page_index, page) in memory.chunks(PAGE_BYTES).enumerate() {
            let hash = hash_page(page);
            let previous = self.committed.get(page_index).copied().unwrap_or(UNKNOWN);
            let is_dirty = if previous == UNKNOWN {
                page.iter().any(|&byte| byte != 0)
            } else {
                previous != hash
            };
            if is_dirty {
                dirty.push(page_index as u64);
            }
            self.pending.push(hash);
        }
        dirty
    }

    fn commit_succeeded(&mut self) {
        core::mem::swap(&mut self.committed, &mut self.pending);
        self.pending.clear();
    }

    fn reset_to(&mut self, memory: &[u8]) {
        self.committed = memory.chunks(PAGE_BYTES).map(hash_page).collect();
        self.pending.clear();
    }
}

/// Two independent multiply-rotate lanes over the page's 64-bit words, with a
/// final avalanche (the finalizer of SplitMix64).
fn hash_page(page: &[u8]) -> PageHash {
    const MULTIPLIER_A: u64 = 0x9E37_79B9_7F4A_7C15;
    const MULTIPLIER_B: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mut lane_a: u64 = 0x243F_6A88_85A3_08D3;
    let mut lane_b: u64 = 0x1319_8A2E_0370_7344;
    let mut words = page.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let value = u64::from_le_bytes(bytes);
        lane_a = (lane_a ^ value).wrapping_mul(MULTIPLIER_A).rotate_left(29);
        lane_b = (lane_b.rotate_left(17) ^ value).wrapping_mul(MULTIPLIER_B);
    }
    for &byte in words.remainder() {
        lane_a = (lane_a ^ u64::from(byte)).wrapping_mul(MULTIPLIER_A);
        lane_b = (lane_b ^ u64::from(byte)).wrapping_mul(MULTIPLIER_B);
    }
    let hash = (finish(lane_a), finish(lane_b ^ lane_a.rotate_left(32)));
    // Keep UNKNOWN free for "never committed".
    if hash == UNKNOWN { (1, 0) } else { hash }
}

fn finish(mut value: u64) -> u64 {
    value ^= value >> 30;
    value = value.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value ^= value >> 27;
    value = value.wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

/// A 128-bit fingerprint of module bytes, kept with a suspension record so
/// that a saved stack is never rewound into other code. It is a fast
/// non-cryptographic hash (the page hash below), not the SHA-256 persist
/// names a stored module by (`persist::module_sha256`): it guards against
/// mistakes, not against an adversary who picks the module.
pub fn module_fingerprint(module: &[u8]) -> [u8; 16] {
    let mut lanes = (0u64, 0u64);
    for chunk in module.chunks(PAGE_BYTES) {
        let (a, b) = hash_page(chunk);
        lanes = (
            finish(lanes.0 ^ a).wrapping_add(b),
            finish(lanes.1.rotate_left(7) ^ b),
        );
    }
    let lanes = (finish(lanes.0 ^ module.len() as u64), lanes.1);
    let mut hash = [0; 16];
    hash[..8].copy_from_slice(&lanes.0.to_le_bytes());
    hash[8..].copy_from_slice(&lanes.1.to_le_bytes());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn fresh_memory_reports_only_nonzero_pages() {
        let mut memory = vec![0u8; PAGE_BYTES * 4];
        memory[PAGE_BYTES * 2 + 5] = 7;
        let mut backing = HashedHeapBacking::new();
        assert_eq!(backing.dirty_pages(&memory), vec![2]);
        backing.commit_succeeded();
        assert!(backing.dirty_pages(&memory).is_empty());
    }

    #[test]
    fn a_changed_byte_dirties_its_page_only() {
        let mut memory = vec![3u8; PAGE_BYTES * 3];
        let mut backing = HashedHeapBacking::new();
        backing.reset_to(&memory);
        memory[PAGE_BYTES + 100] = 4;
        assert_eq!(backing.dirty_pages(&memory), vec![1]);
    }

    #[test]
    fn a_failed_commit_keeps_pages_dirty() {
        let mut memory = vec![0u8; PAGE_BYTES];
        let mut backing = HashedHeapBacking::new();
        backing.reset_to(&memory);
        memory[0] = 1;
        assert_eq!(backing.dirty_pages(&memory), vec![0]);
        assert_eq!(backing.dirty_pages(&memory), vec![0]);
    }

    #[test]
    fn module_fingerprints_differ_for_different_bytes() {
        assert_ne!(module_fingerprint(b"abc"), module_fingerprint(b"abd"));
        assert_eq!(module_fingerprint(b"abc"), module_fingerprint(b"abc"));
    }
}

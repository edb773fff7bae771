//! Forging images byte by byte, with every checksum signed again.
//!
//! A hostile image is one whose checksums are all right and whose contents
//! are not: this module edits superblock fields and page-map nodes of a
//! real image and re-signs every CRC on the way up (page-map pointers, the
//! free-space bitmap and root, the superblock), so that what it forges
//! reaches the structure checks instead of failing a checksum. The
//! structure-aware image fuzz body and persist/tests/hostile_image.rs use it.
//! Offsets follow persist's `layout.rs` (format version 1).

use persist::{BLOCK_SIZE, crc32c};

/// Offset of the sequence number in a superblock.
pub const SEQUENCE: usize = 16;
/// Offset of the page-map root pointer.
pub const PAGE_MAP_ROOT: usize = 32;
/// Offset of the free-space root pointer.
pub const FREE_SPACE_ROOT: usize = 80;
/// Offset of the stored page count.
pub const PAGES_STORED: usize = 96;
/// Offset of the used block count.
pub const BLOCKS_USED: usize = 104;
/// Offset of the rollback count.
pub const ROLLBACKS: usize = 112;

/// Bytes of one pointer (block, CRC, reserved).
const POINTER_LEN: usize = 16;
/// Entries in a page-map node.
pub const FANOUT: usize = BLOCK_SIZE / POINTER_LEN;
const CHECKSUM_OFFSET: usize = BLOCK_SIZE - 4;

/// An image's bytes, being forged.
#[derive(Debug, Clone)]
pub struct Forge {
    pub bytes: Vec<u8>,
}

impl Forge {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// Blocks in the image.
    pub fn block_count(&self) -> u64 {
        (self.bytes.len() / BLOCK_SIZE) as u64
    }

    /// Block `index`, or none past the end.
    pub fn block(&self, index: u64) -> Option<&[u8]> {
        let start = usize::try_from(index).ok()?.checked_mul(BLOCK_SIZE)?;
        self.bytes.get(start..start.checked_add(BLOCK_SIZE)?)
    }

    fn block_mut(&mut self, index: u64) -> Option<&mut [u8]> {
        let start = usize::try_from(index).ok()?.checked_mul(BLOCK_SIZE)?;
        self.bytes.get_mut(start..start.checked_add(BLOCK_SIZE)?)
    }

    /// The CRC-32C of block `index` (of zeros past the end).
    pub fn crc_of(&self, index: u64) -> u32 {
        self.block(index)
            .map_or_else(|| crc32c(&[0; BLOCK_SIZE]), crc32c)
    }

    /// The `u64` at `offset` of block `index`.
    pub fn u64_at(&self, index: u64, offset: usize) -> u64 {
        self.block(index)
            .and_then(|block| block.get(offset..offset + 8))
            .map_or(0, |bytes| {
                u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
            })
    }

    /// Sets the `u64` at `offset` of block `index` (nothing past the end).
    pub fn set_u64(&mut self, index: u64, offset: usize, value: u64) {
        if let Some(bytes) = self
            .block_mut(index)
            .and_then(|block| block.get_mut(offset..offset + 8))
        {
            bytes.copy_from_slice(&value.to_le_bytes());
        }
    }

    /// The pointer at `offset` of block `index`: (block, CRC).
    pub fn pointer_at(&self, index: u64, offset: usize) -> (u64, u32) {
        let block = self.u64_at(index, offset);
        let crc = self.u64_at(index, offset + 8) as u32;
        (block, crc)
    }

    /// Sets the pointer at `offset` of block `index`.
    pub fn set_pointer(&mut self, index: u64, offset: usize, block: u64, crc: u32) {
        self.set_u64(index, offset, block);
        self.set_u64(index, offset + 8, u64::from(crc));
    }

    /// The superblock slot holding the newest commit (by sequence).
    pub fn newest_slot(&self) -> u64 {
        u64::from(self.u64_at(1, SEQUENCE) > self.u64_at(0, SEQUENCE))
    }

    /// Signs superblock `slot` again after an edit.
    pub fn sign_superblock(&mut self, slot: u64) {
        if let Some(block) = self.block_mut(slot) {
            let checksum = crc32c(&block[..CHECKSUM_OFFSET]);
            block[CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
        }
    }

    /// Writes a page-map node into block `index`: `entries` are (slot,
    /// child block); each child's CRC is taken as the child is now.
    pub fn write_node(&mut self, index: u64, entries: &[(usize, u64)]) {
        let mut node = vec![0u8; BLOCK_SIZE];
        for &(slot, child) in entries {
            let at = (slot % FANOUT) * POINTER_LEN;
            node[at..at + 8].copy_from_slice(&child.to_le_bytes());
            node[at + 8..at + 12].copy_from_slice(&self.crc_of(child).to_le_bytes());
        }
        if let Some(block) = self.block_mut(index) {
            block.copy_from_slice(&node);
        }
    }

    /// Fills block `index` with `byte` (a page of data).
    pub fn write_page(&mut self, index: u64, byte: u8) {
        if let Some(block) = self.block_mut(index) {
            block.fill(byte);
        }
    }

    /// Points superblock `slot`'s page map at `root` and signs it.
    pub fn set_root(&mut self, slot: u64, root: u64) {
        let crc = self.crc_of(root);
        self.set_pointer(slot, PAGE_MAP_ROOT, root, crc);
        self.sign_superblock(slot);
    }

    /// Marks `blocks` used in the bitmap of superblock `slot`'s commit,
    /// writing the changed first bitmap block into `spare` (a bitmap block
    /// may be shared with the other commit) and re-signing the free-space
    /// root and the superblock.
    pub fn mark_used(&mut self, slot: u64, blocks: &[u64], spare: u64) {
        let (root, _) = self.pointer_at(slot, FREE_SPACE_ROOT);
        let (bitmap, _) = self.pointer_at(root, 8);
        let Some(mut contents) = self.block(bitmap).map(<[u8]>::to_vec) else {
            return;
        };
        for &block in blocks {
            if let Some(byte) = usize::try_from(block / 8)
                .ok()
                .and_then(|at| contents.get_mut(at))
            {
                *byte |= 1 << (block % 8);
            }
        }
        if let Some(target) = self.block_mut(spare) {
            target.copy_from_slice(&contents);
        }
        let spare_crc = self.crc_of(spare);
        self.set_pointer(root, 8, spare, spare_crc);
        let root_crc = self.crc_of(root);
        self.set_pointer(slot, FREE_SPACE_ROOT, root, root_crc);
        self.sign_superblock(slot);
    }

    /// The page-map blocks superblock `slot` reaches, level by level from
    /// the root (nodes, then at the last level the pages), each block once
    /// per level however many entries name it.
    pub fn page_map_levels(&self, slot: u64) -> Vec<Vec<u64>> {
        let (root, _) = self.pointer_at(slot, PAGE_MAP_ROOT);
        if root == 0 || root >= self.block_count() {
            return Vec::new();
        }
        let mut levels: Vec<Vec<u64>> = vec![vec![root]];
        for _ in 0..3 {
            let mut next = Vec::new();
            for &node in levels.last().into_iter().flatten() {
                for slot_index in 0..FANOUT {
                    let (child, _) = self.pointer_at(node, slot_index * POINTER_LEN);
                    if child != 0 && child < self.block_count() && !next.contains(&child) {
                        next.push(child);
                    }
                }
            }
            levels.push(next);
        }
        levels
    }

    /// Signs again, bottom up, every pointer of the page map superblock
    /// `slot` reaches, and the superblock: whatever a mutation did to the
    /// nodes, their parents vouch for them again. Shared children are
    /// signed once per level; the depth is the format's three levels.
    pub fn sign_page_map(&mut self, slot: u64) {
        let mut levels = self.page_map_levels(slot);
        // The last level holds pages: they are signed by their parents.
        levels.pop();
        for nodes in levels.iter().rev() {
            for &node in nodes {
                for slot_index in 0..FANOUT {
                    let offset = slot_index * POINTER_LEN;
                    let (child, _) = self.pointer_at(node, offset);
                    if child != 0 {
                        let crc = self.crc_of(child);
                        self.set_pointer(node, offset, child, crc);
                    }
                }
            }
        }
        let (root, _) = self.pointer_at(slot, PAGE_MAP_ROOT);
        self.set_root(slot, root);
    }
}

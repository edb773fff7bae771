//! Free space: bitmaps that never hand out a block either superblock reaches.
//!
//! Three sets matter. `working` is the block usage of the state being built
//! (it becomes the next commit's bitmap). `committed` holds every block the
//! newest superblock reaches and `previous` every block the older one
//! reaches, bitmap blocks and free-space root included. A block may be
//! allocated only when it is in none of them, so a block freed by commit `n`
//! is reused only once commit `n + 1` is durable and has replaced the older
//! superblock: no block reachable from either valid superblock is ever
//! overwritten, whatever a power cut keeps.

use alloc::vec;
use alloc::vec::Vec;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::blob::read_checked;
use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{Error, Structure};
use crate::layout::{BLOCKS_PER_BITMAP_BLOCK, FreeSpaceRoot, MAX_BITMAP_BLOCKS, Pointer, crc32c};

const WORDS_PER_BITMAP_BLOCK: usize = BLOCK_SIZE / 8;

/// A set of blocks, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
}

impl Bitmap {
    /// An empty set able to hold blocks `0..block_count`, rounded up to whole
    /// bitmap blocks.
    pub(crate) fn new(block_count: u64) -> Self {
        let bitmap_blocks = block_count.div_ceil(BLOCKS_PER_BITMAP_BLOCK).max(1) as usize;
        Self {
            words: vec![0; bitmap_blocks * WORDS_PER_BITMAP_BLOCK],
        }
    }

    pub(crate) fn contains(&self, block: u64) -> bool {
        self.words
            .get((block / 64) as usize)
            .is_some_and(|word| word & (1 << (block % 64)) != 0)
    }

    pub(crate) fn insert(&mut self, block: u64) {
        if let Some(word) = self.words.get_mut((block / 64) as usize) {
            *word |= 1 << (block % 64);
        }
    }

    pub(crate) fn remove(&mut self, block: u64) {
        if let Some(word) = self.words.get_mut((block / 64) as usize) {
            *word &= !(1 << (block % 64));
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    fn union_with(&mut self, other: &Self) {
        for (word, other_word) in self.words.iter_mut().zip(&other.words) {
            *word |= other_word;
        }
    }

    fn bitmap_block_count(&self) -> usize {
        self.words.len() / WORDS_PER_BITMAP_BLOCK
    }

    fn to_bitmap_block(&self, bitmap_index: usize) -> [u8; BLOCK_SIZE] {
        let mut buffer = [0u8; BLOCK_SIZE];
        let words = &self.words[bitmap_index * WORDS_PER_BITMAP_BLOCK..][..WORDS_PER_BITMAP_BLOCK];
        for (bytes, word) in buffer.chunks_exact_mut(8).zip(words) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        buffer
    }

    fn load_bitmap_block(&mut self, bitmap_index: usize, buffer: &[u8; BLOCK_SIZE]) {
        let words =
            &mut self.words[bitmap_index * WORDS_PER_BITMAP_BLOCK..][..WORDS_PER_BITMAP_BLOCK];
        for (word, bytes) in words.iter_mut().zip(buffer.chunks_exact(8)) {
            let mut word_bytes = [0u8; 8];
            word_bytes.copy_from_slice(bytes);
            *word = u64::from_le_bytes(word_bytes);
        }
    }
}

/// One commit's free-space structures as read from disk.
#[derive(Debug, Clone)]
pub(crate) struct LoadedSpace {
    /// Blocks in use (the bitmap contents).
    pub(crate) used: Bitmap,
    /// Where the bitmap blocks live.
    pub(crate) bitmap_locations: Vec<Pointer>,
    /// The free-space root block.
    pub(crate) root_block: u64,
}

impl LoadedSpace {
    /// Every block this commit reaches: used blocks, its own free-space
    /// blocks and both superblocks.
    fn all_blocks(&self) -> Bitmap {
        let mut all = self.used.clone();
        all.insert(0);
        all.insert(1);
        all.insert(self.root_block);
        for location in &self.bitmap_locations {
            all.insert(location.block.get());
        }
        all
    }
}

/// Reads a commit's free-space root and bitmap blocks.
pub(crate) fn load<D: BlockDevice>(
    device: &mut D,
    root: &Pointer,
    image_blocks: u64,
) -> Result<LoadedSpace, Error> {
    let buffer = read_checked(device, root, image_blocks, Structure::FreeSpaceRoot)?;
    let root_block = root.block.get();
    let free_space_root = FreeSpaceRoot::read_from_bytes(&buffer[..])
        .map_err(|_| Error::malformed(root_block, Structure::FreeSpaceRoot, "unreadable root"))?;
    let mut used = Bitmap::new(image_blocks);
    let expected_count = used.bitmap_block_count();
    if free_space_root.bitmap_count.get() as usize != expected_count {
        return Err(Error::malformed(
            root_block,
            Structure::FreeSpaceRoot,
            "bitmap block count does not fit the image size",
        ));
    }
    let bitmap_locations = free_space_root.bitmaps[..expected_count].to_vec();
    for (bitmap_index, location) in bitmap_locations.iter().enumerate() {
        let bitmap = read_checked(device, location, image_blocks, Structure::FreeSpaceBitmap)?;
        used.load_bitmap_block(bitmap_index, &bitmap);
    }
    Ok(LoadedSpace {
        used,
        bitmap_locations,
        root_block,
    })
}

/// The allocator for one open image.
#[derive(Debug, Clone)]
pub(crate) struct SpaceMap {
    image_blocks: u64,
    /// Usage of the state being built: the next bitmap.
    working: Bitmap,
    /// Which bitmap blocks of `working` changed since the last commit.
    is_bitmap_dirty: Vec<bool>,
    /// Where the newest commit keeps its bitmap blocks.
    bitmap_locations: Vec<Pointer>,
    /// Everything the newest commit reaches.
    committed: Bitmap,
    /// `committed` plus everything the older superblock reaches: never
    /// allocated.
    reserved: Bitmap,
    /// Blocks lent to a pager (`Image::reserve_blocks`): never allocated,
    /// never written down as used, so a power cut leaves them free.
    pinned: Bitmap,
    /// Where the next search starts, so that streams of pages land in order.
    cursor: u64,
}

/// The free-space blocks a commit writes, ready for its superblock.
#[derive(Debug)]
pub(crate) struct WrittenSpace {
    pub(crate) root: Pointer,
    pub(crate) blocks_used: u64,
    next: SpaceMap,
}

impl SpaceMap {
    /// A fresh image: only the superblocks are in use.
    pub(crate) fn fresh(image_blocks: u64) -> Self {
        let mut committed = Bitmap::new(image_blocks);
        committed.insert(0);
        committed.insert(1);
        let mut map = Self {
            image_blocks,
            working: Bitmap::new(image_blocks),
            is_bitmap_dirty: Vec::new(),
            bitmap_locations: Vec::new(),
            reserved: committed.clone(),
            committed,
            pinned: Bitmap::new(image_blocks),
            cursor: 2,
        };
        map.is_bitmap_dirty = vec![true; map.working.bitmap_block_count()];
        map.bitmap_locations = vec![Pointer::NONE; map.working.bitmap_block_count()];
        map.mark_past_end_reserved();
        map
    }

    /// An opened image: the newest commit's space and, when the older
    /// superblock is valid and its free space readable, the older one's.
    pub(crate) fn opened(
        image_blocks: u64,
        newest: LoadedSpace,
        older: Option<LoadedSpace>,
    ) -> Self {
        let committed = newest.all_blocks();
        let mut reserved = committed.clone();
        if let Some(older) = older {
            reserved.union_with(&older.all_blocks());
        }
        let mut map = Self {
            image_blocks,
            is_bitmap_dirty: vec![false; newest.used.bitmap_block_count()],
            working: newest.used,
            bitmap_locations: newest.bitmap_locations,
            committed,
            reserved,
            pinned: Bitmap::new(image_blocks),
            cursor: 2,
        };
        map.mark_past_end_reserved();
        map
    }

    fn mark_past_end_reserved(&mut self) {
        let capacity = self.working.bitmap_block_count() as u64 * BLOCKS_PER_BITMAP_BLOCK;
        for block in self.image_blocks..capacity {
            self.reserved.insert(block);
        }
    }

    /// Blocks that cannot be allocated now: used by the state being built or
    /// reached by either superblock.
    pub(crate) fn unavailable(&self) -> u64 {
        let taken: u64 = self
            .working
            .words
            .iter()
            .zip(&self.reserved.words)
            .zip(&self.pinned.words)
            .map(|((working, reserved), pinned)| {
                u64::from((working | reserved | pinned).count_ones())
            })
            .sum();
        let capacity = self.working.bitmap_block_count() as u64 * BLOCKS_PER_BITMAP_BLOCK;
        taken - (capacity - self.image_blocks)
    }

    fn find_free(&self, avoid: &[u64]) -> Option<u64> {
        let words = self.working.words.len();
        let start_word = (self.cursor / 64) as usize % words.max(1);
        for step in 0..=words {
            let word_index = (start_word + step) % words;
            let taken = self.working.words[word_index]
                | self.reserved.words[word_index]
                | self.pinned.words[word_index];
            let mut free_bits = !taken;
            while free_bits != 0 {
                let bit = u64::from(free_bits.trailing_zeros());
                free_bits &= free_bits - 1;
                let block = word_index as u64 * 64 + bit;
                // In the cursor's own word, prefer blocks past the cursor
                // first; the wrap-around pass (step == words) takes the rest.
                if step == 0 && block < self.cursor {
                    continue;
                }
                if !avoid.contains(&block) {
                    return Some(block);
                }
            }
        }
        None
    }

    /// Takes a free block for the state being built.
    pub(crate) fn allocate(&mut self) -> Result<u64, Error> {
        let block = self.find_free(&[]).ok_or(Error::NoSpace {
            device_blocks: self.image_blocks,
        })?;
        self.working.insert(block);
        self.mark_dirty(block);
        self.cursor = block + 1;
        Ok(block)
    }

    /// Lends a free block to a pager: it stays out of every allocation and
    /// of the written bitmap until [`SpaceMap::adopt`] or [`SpaceMap::unpin`].
    pub(crate) fn pin(&mut self) -> Result<u64, Error> {
        let block = self.find_free(&[]).ok_or(Error::NoSpace {
            device_blocks: self.image_blocks,
        })?;
        self.pinned.insert(block);
        self.cursor = block + 1;
        Ok(block)
    }

    /// Takes back a block lent by [`SpaceMap::pin`], unused.
    pub(crate) fn unpin(&mut self, block: u64) {
        self.pinned.remove(block);
    }

    /// Makes a pinned block part of the state being built.
    pub(crate) fn adopt(&mut self, block: u64) {
        self.pinned.remove(block);
        self.working.insert(block);
        self.mark_dirty(block);
    }

    /// Drops `block` from the state being built. A block the last commits
    /// reach stays reserved until they are superseded.
    pub(crate) fn free(&mut self, block: u64) {
        if self.working.contains(block) {
            self.working.remove(block);
            self.mark_dirty(block);
        }
    }

    fn mark_dirty(&mut self, block: u64) {
        if let Some(is_dirty) = self
            .is_bitmap_dirty
            .get_mut((block / BLOCKS_PER_BITMAP_BLOCK) as usize)
        {
            *is_dirty = true;
        }
    }

    /// Writes the changed bitmap blocks and a new free-space root into free
    /// blocks. Nothing changes in `self`: on success the caller installs the
    /// returned state with [`SpaceMap::install`] once the superblock is
    /// durable.
    pub(crate) fn write<D: BlockDevice>(
        &self,
        device: &mut D,
        blocks_written: &mut u64,
    ) -> Result<WrittenSpace, Error> {
        let no_space = Error::NoSpace {
            device_blocks: self.image_blocks,
        };
        let mut taken = Vec::new();
        let mut locations = self.bitmap_locations.clone();
        for (bitmap_index, location) in locations.iter_mut().enumerate() {
            if !self.is_bitmap_dirty[bitmap_index] {
                continue;
            }
            let block = self.find_free(&taken).ok_or(no_space.clone())?;
            taken.push(block);
            let buffer = self.working.to_bitmap_block(bitmap_index);
            device.write_block(block, &buffer)?;
            *blocks_written += 1;
            *location = Pointer::new(block, crc32c(&buffer));
        }
        let root_block = self.find_free(&taken).ok_or(no_space)?;
        let mut root = FreeSpaceRoot::new_zeroed();
        debug_assert!(locations.len() <= MAX_BITMAP_BLOCKS);
        root.bitmap_count = U32::new(locations.len() as u32);
        root.bitmaps[..locations.len()].copy_from_slice(&locations);
        let mut buffer = [0u8; BLOCK_SIZE];
        buffer.copy_from_slice(root.as_bytes());
        device.write_block(root_block, &buffer)?;
        *blocks_written += 1;

        let newest = LoadedSpace {
            used: self.working.clone(),
            bitmap_locations: locations.clone(),
            root_block,
        };
        let committed = newest.all_blocks();
        let mut reserved = committed.clone();
        reserved.union_with(&self.committed);
        let mut next = Self {
            image_blocks: self.image_blocks,
            working: self.working.clone(),
            is_bitmap_dirty: vec![false; locations.len()],
            bitmap_locations: locations,
            committed,
            reserved,
            pinned: self.pinned.clone(),
            cursor: self.cursor,
        };
        next.mark_past_end_reserved();
        Ok(WrittenSpace {
            root: Pointer::new(root_block, crc32c(&buffer)),
            blocks_used: next.committed.count(),
            next,
        })
    }

    /// Makes a written commit's space current (its superblock is durable).
    pub(crate) fn install(&mut self, written: WrittenSpace) {
        *self = written.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    #[test]
    fn freed_blocks_wait_for_the_next_commit_before_reuse() {
        let mut device = MemoryDevice::new(64);
        let mut space = SpaceMap::fresh(64);
        let mut written = 0;
        let first = space.allocate().unwrap();
        let commit = space.write(&mut device, &mut written).unwrap();
        space.install(commit);
        space.free(first);
        // Commit n frees `first`: not reusable until commit n + 1 is durable.
        for _ in 0..10 {
            assert_ne!(space.allocate().unwrap(), first);
        }
        let commit = space.write(&mut device, &mut written).unwrap();
        space.install(commit);
        let commit = space.write(&mut device, &mut written).unwrap();
        space.install(commit);
        let mut seen = false;
        while let Ok(block) = space.allocate() {
            seen |= block == first;
        }
        assert!(seen, "block {first} was never reused");
    }

    #[test]
    fn a_full_map_reports_no_space() {
        let mut space = SpaceMap::fresh(8);
        for _ in 0..6 {
            space.allocate().unwrap();
        }
        assert_eq!(space.allocate(), Err(Error::NoSpace { device_blocks: 8 }));
    }
}

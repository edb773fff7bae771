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
///
/// Every operation, a commit's included, costs in proportion to the blocks
/// it touches, not to the image's size: the sets are bitmaps changed bit by
/// bit, the blocks whose usage changed since the last commit are listed
/// ([`SpaceMap::changed`]), and the counts are kept as the bits change. A
/// commit is prepared without touching the map ([`SpaceMap::write`]) and
/// applied once durable ([`SpaceMap::install`]); what a failed commit
/// allocated is taken back from an undo log ([`SpaceMap::mark`],
/// [`SpaceMap::undo`]) instead of a copy of the whole map.
#[derive(Debug)]
pub(crate) struct SpaceMap {
    image_blocks: u64,
    /// Usage of the state being built: the next bitmap.
    working: Bitmap,
    /// Which bitmap blocks of `working` changed since the last commit.
    is_bitmap_dirty: Vec<bool>,
    /// Where the newest commit keeps its bitmap blocks.
    bitmap_locations: Vec<Pointer>,
    /// The newest commit's free-space root.
    root_block: Option<u64>,
    /// Everything the newest commit reaches.
    committed: Bitmap,
    /// How many blocks `committed` holds.
    committed_count: u64,
    /// `committed` plus everything the older superblock reaches: never
    /// allocated.
    reserved: Bitmap,
    /// What the older superblock reaches and the newest does not: these
    /// leave `reserved` when the next commit supersedes the older one.
    reserved_by_older_only: Vec<u64>,
    /// Blocks some snapshot reaches (a subset of `working`): freeing one
    /// from the live state keeps it in use; only deleting the snapshots
    /// that reach it gives it back ([`SpaceMap::release`]).
    held: Bitmap,
    /// Blocks lent to a pager (`Image::reserve_blocks`): never allocated,
    /// never written down as used, so a power cut leaves them free.
    pinned: Bitmap,
    /// Blocks in `working`, `reserved` or `pinned`, including the bitmap
    /// capacity past the image's end.
    taken_count: u64,
    /// Blocks whose bit in `working` changed since the last commit (a block
    /// may be listed more than once).
    changed: Vec<u64>,
    /// While a commit is being prepared: how to take back its changes.
    undo: Option<Vec<Undo>>,
    /// Where the next search starts, so that streams of pages land in order.
    cursor: u64,
    /// The lowest block that became free since the last commit: the next
    /// commit's search starts there (first fit across commits, next fit
    /// within one), so an image reuses its low blocks instead of walking
    /// through the whole device. A sparse image file then stays as large
    /// as what it stores, and a commit's writes land where the last ones
    /// did, whatever the image's size.
    lowest_freed: u64,
}

/// One change to `working` made while a commit was being prepared.
#[derive(Debug, Clone, Copy)]
struct Undo {
    block: u64,
    was_used: bool,
    was_bitmap_dirty: bool,
}

/// Where a commit's preparation started, to go back to if it fails.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    changed_len: usize,
    cursor: u64,
}

/// The free-space blocks a commit writes, ready for its superblock.
#[derive(Debug)]
pub(crate) struct WrittenSpace {
    pub(crate) root: Pointer,
    pub(crate) blocks_used: u64,
    bitmap_locations: Vec<Pointer>,
    /// Blocks the new commit reaches and the newest did not.
    arrived: Vec<u64>,
    /// Blocks the newest commit reaches and the new one does not.
    departed: Vec<u64>,
}

/// The union of the words of `sets` at `word_index`: the blocks taken there.
fn taken_word(sets: [&Bitmap; 3], word_index: usize) -> u64 {
    sets.iter()
        .map(|set| set.words.get(word_index).copied().unwrap_or(0))
        .fold(0, |taken, word| taken | word)
}

impl SpaceMap {
    /// A fresh image: only the superblocks are in use.
    pub(crate) fn fresh(image_blocks: u64) -> Self {
        let mut committed = Bitmap::new(image_blocks);
        committed.insert(0);
        committed.insert(1);
        let bitmap_blocks = committed.bitmap_block_count();
        let mut map = Self {
            image_blocks,
            working: Bitmap::new(image_blocks),
            is_bitmap_dirty: vec![true; bitmap_blocks],
            bitmap_locations: vec![Pointer::NONE; bitmap_blocks],
            root_block: None,
            reserved: committed.clone(),
            committed,
            committed_count: 2,
            reserved_by_older_only: Vec::new(),
            held: Bitmap::new(image_blocks),
            pinned: Bitmap::new(image_blocks),
            taken_count: 0,
            changed: Vec::new(),
            undo: None,
            cursor: 2,
            lowest_freed: u64::MAX,
        };
        map.mark_past_end_reserved();
        map.taken_count = map.count_taken();
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
        let mut reserved_by_older_only = Vec::new();
        if let Some(older) = older {
            let older = older.all_blocks();
            for (word_index, (word, newest_word)) in
                older.words.iter().zip(&committed.words).enumerate()
            {
                let mut only_older = word & !newest_word;
                while only_older != 0 {
                    let bit = u64::from(only_older.trailing_zeros());
                    only_older &= only_older - 1;
                    reserved_by_older_only.push(word_index as u64 * 64 + bit);
                }
            }
            reserved.union_with(&older);
        }
        let mut map = Self {
            image_blocks,
            is_bitmap_dirty: vec![false; newest.used.bitmap_block_count()],
            working: newest.used,
            bitmap_locations: newest.bitmap_locations,
            root_block: Some(newest.root_block),
            committed_count: committed.count(),
            committed,
            reserved,
            reserved_by_older_only,
            held: Bitmap::new(image_blocks),
            pinned: Bitmap::new(image_blocks),
            taken_count: 0,
            changed: Vec::new(),
            undo: None,
            cursor: 2,
            lowest_freed: u64::MAX,
        };
        map.mark_past_end_reserved();
        map.taken_count = map.count_taken();
        map
    }

    fn mark_past_end_reserved(&mut self) {
        let capacity = self.working.bitmap_block_count() as u64 * BLOCKS_PER_BITMAP_BLOCK;
        for block in self.image_blocks..capacity {
            self.reserved.insert(block);
        }
    }

    /// Counts the blocks in `working`, `reserved` or `pinned` (at open).
    fn count_taken(&self) -> u64 {
        (0..self.working.words.len())
            .map(|word_index| {
                let sets = [&self.working, &self.reserved, &self.pinned];
                u64::from(taken_word(sets, word_index).count_ones())
            })
            .sum()
    }

    fn is_taken(&self, block: u64) -> bool {
        self.working.contains(block) || self.reserved.contains(block) || self.pinned.contains(block)
    }

    /// Applies `change` to the map's sets, keeping `taken_count` right.
    fn change(&mut self, block: u64, change: impl FnOnce(&mut Self)) {
        let was_taken = self.is_taken(block);
        change(self);
        match (was_taken, self.is_taken(block)) {
            (false, true) => self.taken_count += 1,
            (true, false) => {
                self.taken_count -= 1;
                self.lowest_freed = self.lowest_freed.min(block);
            }
            _ => {}
        }
    }

    /// Blocks that cannot be allocated now: used by the state being built or
    /// reached by either superblock.
    pub(crate) fn unavailable(&self) -> u64 {
        let capacity = self.working.bitmap_block_count() as u64 * BLOCKS_PER_BITMAP_BLOCK;
        self.taken_count - (capacity - self.image_blocks)
    }

    fn find_free(&self, avoid: &[u64]) -> Option<u64> {
        let words = self.working.words.len();
        let start_word = (self.cursor / 64) as usize % words.max(1);
        for step in 0..=words {
            let word_index = (start_word + step) % words;
            let taken = taken_word([&self.working, &self.reserved, &self.pinned], word_index);
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

    /// Sets `block`'s bit in `working` to `is_used`, recording the change.
    fn set_working(&mut self, block: u64, is_used: bool) {
        let bitmap_index = (block / BLOCKS_PER_BITMAP_BLOCK) as usize;
        if let Some(undo) = &mut self.undo {
            undo.push(Undo {
                block,
                was_used: self.working.contains(block),
                was_bitmap_dirty: self
                    .is_bitmap_dirty
                    .get(bitmap_index)
                    .copied()
                    .unwrap_or(false),
            });
        }
        self.change(block, |map| {
            if is_used {
                map.working.insert(block);
            } else {
                map.working.remove(block);
            }
        });
        if let Some(is_dirty) = self.is_bitmap_dirty.get_mut(bitmap_index) {
            *is_dirty = true;
        }
        self.changed.push(block);
    }

    /// Takes a free block for the state being built.
    pub(crate) fn allocate(&mut self) -> Result<u64, Error> {
        let block = self.find_free(&[]).ok_or(Error::NoSpace {
            device_blocks: self.image_blocks,
        })?;
        self.set_working(block, true);
        self.cursor = block + 1;
        Ok(block)
    }

    /// Lends a free block to a pager: it stays out of every allocation and
    /// of the written bitmap until [`SpaceMap::adopt`] or [`SpaceMap::unpin`].
    pub(crate) fn pin(&mut self) -> Result<u64, Error> {
        let block = self.find_free(&[]).ok_or(Error::NoSpace {
            device_blocks: self.image_blocks,
        })?;
        self.change(block, |map| map.pinned.insert(block));
        self.cursor = block + 1;
        Ok(block)
    }

    /// Takes back a block lent by [`SpaceMap::pin`], unused.
    pub(crate) fn unpin(&mut self, block: u64) {
        self.change(block, |map| map.pinned.remove(block));
    }

    /// Makes a pinned block part of the state being built.
    pub(crate) fn adopt(&mut self, block: u64) {
        self.change(block, |map| map.pinned.remove(block));
        self.set_working(block, true);
    }

    /// Drops `block` from the state being built. A block the last commits
    /// reach stays reserved until they are superseded; a block a snapshot
    /// holds stays in use.
    pub(crate) fn free(&mut self, block: u64) {
        if self.working.contains(block) && !self.held.contains(block) {
            self.set_working(block, false);
        }
    }

    /// Drops `block` from the state being built although a snapshot held
    /// it: a snapshot deletion's blocks that nothing else reaches.
    pub(crate) fn release(&mut self, block: u64) {
        if self.working.contains(block) {
            self.set_working(block, false);
        }
    }

    /// Whether a snapshot holds `block`.
    pub(crate) fn is_held(&self, block: u64) -> bool {
        self.held.contains(block)
    }

    /// Marks `blocks` held by a snapshot (once the commit that took it is
    /// durable; they are in use already).
    pub(crate) fn hold(&mut self, blocks: &[u64]) {
        for &block in blocks {
            self.held.insert(block);
        }
    }

    /// Replaces the set of held blocks (at open, and once a deletion is
    /// durable).
    pub(crate) fn set_held(&mut self, held: Bitmap) {
        self.held = held;
    }

    /// An empty set of blocks of this image's size.
    pub(crate) fn empty_set(&self) -> Bitmap {
        Bitmap::new(self.image_blocks)
    }

    /// Starts recording what the preparation of a commit changes, so that
    /// [`SpaceMap::undo`] can take it back if the commit fails.
    pub(crate) fn mark(&mut self) -> Mark {
        self.undo = Some(Vec::new());
        Mark {
            changed_len: self.changed.len(),
            cursor: self.cursor,
        }
    }

    /// Takes back every change since `mark`: the map is as it was then.
    pub(crate) fn undo(&mut self, mark: Mark) {
        let Some(undo) = self.undo.take() else {
            return;
        };
        for change in undo.iter().rev() {
            self.change(change.block, |map| {
                if change.was_used {
                    map.working.insert(change.block);
                } else {
                    map.working.remove(change.block);
                }
            });
            let bitmap_index = (change.block / BLOCKS_PER_BITMAP_BLOCK) as usize;
            if let Some(is_dirty) = self.is_bitmap_dirty.get_mut(bitmap_index) {
                *is_dirty = change.was_bitmap_dirty;
            }
        }
        self.changed.truncate(mark.changed_len);
        self.cursor = mark.cursor;
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
        // The blocks whose place in the committed set may change: those
        // whose usage changed, and the free-space blocks replaced or new.
        let mut candidates = self.changed.clone();
        candidates.extend(self.root_block);
        for (bitmap_index, location) in locations.iter_mut().enumerate() {
            if !self.is_bitmap_dirty[bitmap_index] {
                continue;
            }
            let block = self.find_free(&taken).ok_or(no_space.clone())?;
            taken.push(block);
            let buffer = self.working.to_bitmap_block(bitmap_index);
            device.write_block(block, &buffer)?;
            *blocks_written += 1;
            if *location != Pointer::NONE {
                candidates.push(location.block.get());
            }
            *location = Pointer::new(block, crc32c(&buffer));
        }
        let root_block = self.find_free(&taken).ok_or(no_space)?;
        taken.push(root_block);
        candidates.extend_from_slice(&taken);
        let mut root = FreeSpaceRoot::new_zeroed();
        debug_assert!(locations.len() <= MAX_BITMAP_BLOCKS);
        root.bitmap_count = U32::new(locations.len() as u32);
        root.bitmaps[..locations.len()].copy_from_slice(&locations);
        let mut buffer = [0u8; BLOCK_SIZE];
        buffer.copy_from_slice(root.as_bytes());
        device.write_block(root_block, &buffer)?;
        *blocks_written += 1;

        // What the new commit reaches: the blocks in use, both superblocks,
        // its root and every bitmap block (the unchanged ones too).
        let is_free_space_block = |block: u64| {
            block == root_block
                || locations
                    .iter()
                    .any(|location| *location != Pointer::NONE && location.block.get() == block)
        };
        candidates.sort_unstable();
        candidates.dedup();
        let (mut arrived, mut departed) = (Vec::new(), Vec::new());
        for block in candidates {
            let is_reached =
                block < 2 || self.working.contains(block) || is_free_space_block(block);
            match (self.committed.contains(block), is_reached) {
                (false, true) => arrived.push(block),
                (true, false) => departed.push(block),
                _ => {}
            }
        }
        let blocks_used = self.committed_count + arrived.len() as u64 - departed.len() as u64;
        Ok(WrittenSpace {
            root: Pointer::new(root_block, crc32c(&buffer)),
            blocks_used,
            bitmap_locations: locations,
            arrived,
            departed,
        })
    }

    /// Makes a written commit's space current (its superblock is durable,
    /// and has replaced the older one).
    pub(crate) fn install(&mut self, written: WrittenSpace) {
        self.undo = None;
        // The older superblock is gone: what only it reached is free now.
        for block in core::mem::take(&mut self.reserved_by_older_only) {
            self.change(block, |map| map.reserved.remove(block));
        }
        for &block in &written.arrived {
            self.committed.insert(block);
            self.change(block, |map| map.reserved.insert(block));
        }
        for &block in &written.departed {
            self.committed.remove(block);
        }
        self.committed_count = written.blocks_used;
        self.reserved_by_older_only = written.departed;
        self.root_block = Some(written.root.block.get());
        self.bitmap_locations = written.bitmap_locations;
        self.is_bitmap_dirty.fill(false);
        self.changed.clear();
        self.cursor = self.cursor.min(self.lowest_freed);
        self.lowest_freed = u64::MAX;
    }

    /// Checks the incremental state against a recount from scratch (tests).
    #[cfg(test)]
    fn check_counts(&self) {
        assert_eq!(self.taken_count, self.count_taken());
        assert_eq!(self.committed_count, self.committed.count());
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

    /// Random allocations, frees, pins, commits and failed commits: the
    /// counts kept as bits change always match a recount, and no block the
    /// last two commits reach (as a naive model keeps them) is handed out.
    #[test]
    fn incremental_state_matches_a_recount() {
        use alloc::collections::BTreeSet;

        let mut device = MemoryDevice::new(300);
        let mut space = SpaceMap::fresh(300);
        let mut written = 0;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        let mut used = BTreeSet::new();
        let mut pinned = BTreeSet::new();
        // What the newest and the older commit reach (free space included).
        let mut newest: BTreeSet<u64> = [0, 1].into();
        let mut older: BTreeSet<u64> = BTreeSet::new();
        for _ in 0..3000 {
            match next(10) {
                0..=3 => {
                    if let Ok(block) = space.allocate() {
                        assert!(!newest.contains(&block) && !older.contains(&block));
                        assert!(used.insert(block) && !pinned.contains(&block));
                    }
                }
                4 | 5 => {
                    if let Some(&block) = used.iter().nth(next(used.len().max(1) as u64) as usize) {
                        space.free(block);
                        used.remove(&block);
                    }
                }
                6 => {
                    if let Ok(block) = space.pin() {
                        assert!(!newest.contains(&block) && !older.contains(&block));
                        assert!(!used.contains(&block) && pinned.insert(block));
                    }
                }
                7 => {
                    if let Some(&block) = pinned.iter().next() {
                        pinned.remove(&block);
                        if next(2) == 0 {
                            space.adopt(block);
                            used.insert(block);
                        } else {
                            space.unpin(block);
                        }
                    }
                }
                8 => {
                    // A commit whose preparation fails after allocating.
                    let mark = space.mark();
                    for _ in 0..next(4) {
                        let _ = space.allocate();
                    }
                    space.undo(mark);
                }
                _ => {
                    let mark = space.mark();
                    let Ok(commit) = space.write(&mut device, &mut written) else {
                        space.undo(mark);
                        continue;
                    };
                    let mut reached: BTreeSet<u64> = used.clone();
                    reached.extend([0, 1, commit.root.block.get()]);
                    reached.extend(commit.bitmap_locations.iter().map(|p| p.block.get()));
                    assert_eq!(commit.blocks_used, reached.len() as u64);
                    space.install(commit);
                    older = core::mem::replace(&mut newest, reached);
                }
            }
            space.check_counts();
            let taken: BTreeSet<u64> = used
                .iter()
                .chain(&pinned)
                .chain(&newest)
                .chain(&older)
                .copied()
                .collect();
            assert_eq!(space.unavailable(), taken.len() as u64);
        }
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

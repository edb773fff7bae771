//! Paging domain memory in from its image on a fault, and out under pressure.
//!
//! Each window whose domain lives on a disk has a [`Pager`]: where every
//! non-resident page's bytes are (a block and its CRC-32C, or nothing for a
//! zero page), a pool of free blocks lent by the image, and the pages it
//! wrote into that pool since the last commit. On a fault in the window the
//! fault path takes a frame, reads the page's block into it straight from
//! the disk (checking the CRC) or zero-fills it, and maps it; the faulting
//! access then goes on. When free frames run low it first evicts pages by
//! the clock algorithm: a clean page (its PTE dirty bit clear, so equal to
//! where its location says) is just unmapped; a dirty one is first written
//! to a pool block, copy-on-write, never over committed state. Before the
//! next commit `WindowBacking` hands those pages to the image
//! (`adopt_page`), so the commit includes them; after it, it records where
//! the commit put the pages it wrote.
//!
//! The fault path allocates nothing from the heap (the pager's vectors are
//! sized outside it: the pool is only popped and the evicted list has room
//! for every pool block) and never waits for a lock: each lock it takes is
//! one that no code holds while touching a window (see memory::windows), so
//! `try_lock` failing is a broken invariant, reported as a fatal fault rather
//! than a deadlock.
//!
//! If a page cannot be read back (I/O error, wrong CRC) or written out, the
//! pager maps a zeroed page so the access completes, and records the failure:
//! the domain traps after its slice and its memory is never committed again.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use persist::{BLOCK_SIZE, PageLocation, crc32c};
use spin::Mutex;
use x86_64::VirtAddr;
use x86_64::structures::paging::{PageTableFlags, PhysFrame};

use super::windows::MAX_WINDOWS;
use super::{frames, paging};
use crate::drivers::virtio_blk::{PagerDisk, TransferError};

/// Below this many free frames a fault evicts pages first (16 MiB: room for
/// the heap's page tables and the other windows' next faults).
const LOW_FREE_FRAMES: u64 = 4096;

/// Pages evicted per round of pressure, so that eviction is not paid on
/// every fault.
const EVICTION_BATCH: usize = 512;

/// The smallest pool worth keeping. The pool is topped up before each slice
/// to one block per page of memory, when it falls below half that: one
/// instruction (memory.fill, memory.copy) may dirty every page in a slice,
/// and a dirty page can only leave RAM through a pool block.
const POOL_MINIMUM: usize = 1024;

/// Why a pager could not keep a domain's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagerFailure {
    Read {
        page_index: u64,
        block: u64,
        error: TransferError,
    },
    Checksum {
        page_index: u64,
        block: u64,
    },
    Write {
        page_index: u64,
        block: u64,
        error: TransferError,
    },
    /// The image refused a page written out (its only copy).
    NotAdopted {
        page_index: u64,
        block: u64,
    },
    /// Every frame is taken and none could be evicted.
    OutOfMemory {
        page_index: u64,
    },
}

impl fmt::Display for PagerFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagerFailure::Read {
                page_index,
                block,
                error,
            } => write!(
                formatter,
                "page {page_index} could not be read from block {block}: {error}"
            ),
            PagerFailure::Checksum { page_index, block } => write!(
                formatter,
                "page {page_index} read from block {block} fails its checksum"
            ),
            PagerFailure::Write {
                page_index,
                block,
                error,
            } => write!(
                formatter,
                "page {page_index} could not be written out to block {block}: {error}"
            ),
            PagerFailure::NotAdopted { page_index, block } => write!(
                formatter,
                "page {page_index} written out to block {block} was refused by the image"
            ),
            PagerFailure::OutOfMemory { page_index } => write!(
                formatter,
                "no frame for page {page_index}: memory is full and nothing can be evicted"
            ),
        }
    }
}

/// A page's location in 8 bytes (block above, CRC below; 0: none): the
/// pager keeps one per page of memory. Image blocks fit in 32 bits
/// (persist's MAX_IMAGE_BLOCKS is about 2^23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Packed(u64);

impl Packed {
    const NONE: Packed = Packed(0);

    fn new(location: Option<PageLocation>) -> Packed {
        match location {
            Some(location) if location.block != 0 && location.block <= u64::from(u32::MAX) => {
                Packed(location.block << 32 | u64::from(location.crc))
            }
            _ => Packed::NONE,
        }
    }

    fn get(self) -> Option<PageLocation> {
        (self.0 != 0).then_some(PageLocation {
            block: self.0 >> 32,
            crc: self.0 as u32,
        })
    }
}

/// One window's pager.
#[derive(Debug)]
pub struct Pager {
    disk: PagerDisk,
    window_start: VirtAddr,
    /// Where page `i` is when it is not resident; `None`: zeros. Pages past
    /// the end (memory grown since the last slice) are zeros too.
    locations: Vec<Packed>,
    /// Free blocks lent by the image, to write dirty pages out to.
    pool: Vec<u32>,
    /// Pages written out since the last commit, in order, for the image.
    evicted: Vec<(u32, Packed)>,
    failure: Option<PagerFailure>,
    /// The clock hand: the next page to consider for eviction.
    hand: u64,
    /// A full sweep found nothing to evict: do not sweep again on every
    /// fault until a slice or a commit may have changed that.
    is_exhausted: bool,
}

impl Pager {
    fn location(&self, page_index: u64) -> Option<PageLocation> {
        self.locations
            .get(page_index as usize)
            .and_then(|packed| packed.get())
    }

    fn page_address(&self, page_index: u64) -> VirtAddr {
        self.window_start + page_index * frames::FRAME_BYTES
    }

    /// Evicts up to `wanted` pages; returns how many went.
    fn evict(&mut self, wanted: usize) -> usize {
        let page_count = self.locations.len() as u64;
        let mut evicted = 0;
        // Two sweeps: the first may only clear accessed bits.
        let mut steps = page_count.saturating_mul(2);
        while evicted < wanted && steps > 0 {
            steps -= 1;
            let page_index = self.hand;
            self.hand = (self.hand + 1) % page_count.max(1);
            let address = self.page_address(page_index);
            match paging::take_accessed(address) {
                None | Some(true) => continue,
                Some(false) => {}
            }
            if self.evict_page(page_index, address) {
                evicted += 1;
            }
        }
        evicted
    }

    /// Evicts one mapped, not recently used page; false if it must stay.
    fn evict_page(&mut self, page_index: u64, address: VirtAddr) -> bool {
        let Some(mapped) = paging::mapped_page(address) else {
            return false;
        };
        if mapped.flags.contains(PageTableFlags::DIRTY) {
            if self.evicted.len() == self.evicted.capacity() {
                return false;
            }
            let Some(block) = self.pool.pop().map(u64::from) else {
                return false;
            };
            let page = frame_bytes(mapped.frame);
            if let Err(error) = self.disk.write(block, page) {
                self.failure.get_or_insert(PagerFailure::Write {
                    page_index,
                    block,
                    error,
                });
                return false;
            }
            let location = Packed::new(Some(PageLocation::of(block, page)));
            if let Some(slot) = self.locations.get_mut(page_index as usize) {
                *slot = location;
            }
            // Window pages number below 2^20 (4 GiB).
            self.evicted.push((page_index as u32, location));
            STATS.pages_written_out.fetch_add(1, Ordering::Relaxed);
        }
        let Some(frame) = paging::unmap_page(address) else {
            return false;
        };
        frames::with(|allocator| allocator.free(frame));
        STATS.pages_evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Fills `frame` with page `page_index`'s bytes.
    fn fill(&mut self, page_index: u64, frame: PhysFrame) {
        let page = frame_bytes(frame);
        let Some(location) = self.location(page_index) else {
            page.fill(0);
            STATS.pages_zeroed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let block = location.block;
        let failure = match self.disk.read(block, page) {
            Ok(()) if crc32c(page) == location.crc => {
                STATS.pages_read.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(()) => PagerFailure::Checksum { page_index, block },
            Err(error) => PagerFailure::Read {
                page_index,
                block,
                error,
            },
        };
        page.fill(0);
        self.failure.get_or_insert(failure);
    }
}

/// A frame's bytes through the direct map.
fn frame_bytes(frame: PhysFrame) -> &'static mut [u8; BLOCK_SIZE] {
    let address = super::physical_to_virtual(frame.start_address().as_u64());
    // SAFETY: the pager owns the frame for the duration of the call: either
    // fresh from the allocator and not yet mapped, or a window page being
    // evicted while no domain code runs (the fault path runs with
    // interrupts off on the only CPU). The direct map reaches all RAM.
    unsafe { &mut *address.as_mut_ptr::<[u8; BLOCK_SIZE]>() }
}

static PAGERS: [Mutex<Option<Pager>>; MAX_WINDOWS] = [const { Mutex::new(None) }; MAX_WINDOWS];

/// Counters for `stats`.
#[derive(Debug)]
pub struct PagerStats {
    pub pages_read: AtomicU64,
    pub pages_zeroed: AtomicU64,
    pub pages_evicted: AtomicU64,
    pub pages_written_out: AtomicU64,
}

pub static STATS: PagerStats = PagerStats {
    pages_read: AtomicU64::new(0),
    pages_zeroed: AtomicU64::new(0),
    pages_evicted: AtomicU64::new(0),
    pages_written_out: AtomicU64::new(0),
};

/// Gives window `window_index` a pager reading and writing `disk`. Until
/// [`set_locations`] it knows no stored page: every page reads as zero.
pub fn attach(window_index: usize, window_start: VirtAddr, disk: PagerDisk) {
    let Some(slot) = PAGERS.get(window_index) else {
        return;
    };
    *slot.lock() = Some(Pager {
        disk,
        window_start,
        locations: Vec::new(),
        pool: Vec::new(),
        evicted: Vec::new(),
        failure: None,
        hand: 0,
        is_exhausted: false,
    });
}

/// Takes window `window_index`'s pager away: its domain is gone, and the
/// window (never handed out again) has no page left to fault in.
pub fn detach(window_index: usize) {
    if let Some(slot) = PAGERS.get(window_index) {
        x86_64::instructions::interrupts::without_interrupts(|| *slot.lock() = None);
    }
}

/// Runs `f` on window `window_index`'s pager, if it has one. `f` must not
/// touch the window.
pub fn with<T>(window_index: usize, f: impl FnOnce(&mut Pager) -> T) -> Option<T> {
    let slot = PAGERS.get(window_index)?;
    x86_64::instructions::interrupts::without_interrupts(|| slot.lock().as_mut().map(f))
}

impl Pager {
    /// Replaces the map of where pages are: `memory_pages` entries, from
    /// `(page index, location)` pairs (ascending or not).
    pub fn set_locations(&mut self, memory_pages: u64, stored: &[(u64, PageLocation)]) {
        self.locations.clear();
        self.locations.resize(memory_pages as usize, Packed::NONE);
        for &(page_index, location) in stored {
            self.set_location(page_index, Some(location));
        }
    }

    /// Records where page `page_index` now is.
    pub fn set_location(&mut self, page_index: u64, location: Option<PageLocation>) {
        let index = page_index as usize;
        if index >= self.locations.len() {
            self.locations.resize(index + 1, Packed::NONE);
        }
        self.locations[index] = Packed::new(location);
    }

    /// Pages may be evictable again (a commit cleaned them).
    pub fn refresh(&mut self) {
        self.is_exhausted = false;
    }

    /// Makes room for `memory_pages` pages (memory grew).
    pub fn cover(&mut self, memory_pages: u64) {
        self.is_exhausted = false;
        if self.locations.len() < memory_pages as usize {
            self.locations.resize(memory_pages as usize, Packed::NONE);
        }
    }

    /// How many blocks the pool wants for a memory of `memory_pages`, if it
    /// wants more.
    pub fn pool_shortfall(&self, memory_pages: u64) -> Option<usize> {
        let target = (memory_pages as usize).max(POOL_MINIMUM);
        (self.pool.len() < target / 2).then(|| target - self.pool.len())
    }

    /// Takes every block of the pool (to give back to a full image).
    pub fn take_pool(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.pool)
            .into_iter()
            .map(u64::from)
            .collect()
    }

    /// Adds lent blocks to the pool, and room to record a write-out per
    /// block. Returns the blocks it could not take (beyond 32 bits).
    pub fn add_to_pool(&mut self, blocks: &[u64]) -> Vec<u64> {
        let (usable, unusable): (Vec<u64>, Vec<u64>) = blocks
            .iter()
            .partition(|&&block| block <= u64::from(u32::MAX));
        self.pool.reserve_exact(usable.len());
        self.pool
            .extend(usable.iter().filter_map(|&block| u32::try_from(block).ok()));
        let room = self.evicted.len() + self.pool.len();
        self.evicted
            .reserve_exact(room.saturating_sub(self.evicted.len()));
        unusable
    }

    /// The pages written out since the last commit, for the image to adopt.
    pub fn take_evicted(&mut self) -> Vec<(u64, PageLocation)> {
        let taken: Vec<(u64, PageLocation)> = self
            .evicted
            .iter()
            .filter_map(|&(page_index, packed)| Some((u64::from(page_index), packed.get()?)))
            .collect();
        // Keep the room: the fault path never grows the vector.
        self.evicted.clear();
        taken
    }

    pub fn failure(&self) -> Option<PagerFailure> {
        self.failure
    }

    /// Records a failure found outside the fault path.
    pub fn fail(&mut self, failure: PagerFailure) {
        self.failure.get_or_insert(failure);
    }
}

/// What the fault path did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The page is mapped; the access can go on.
    Handled,
    /// The window has no pager: demand-zero it.
    NoPager,
    /// Fatal: no frame, or a lock held that must not be.
    Failed,
}

/// The page-fault path for a window with a pager (interrupts are off).
pub fn fault(window_index: usize, page_index: u64, address: VirtAddr) -> Fault {
    let Some(slot) = PAGERS.get(window_index) else {
        return Fault::NoPager;
    };
    let Some(mut guard) = slot.try_lock() else {
        return Fault::Failed;
    };
    let Some(pager) = guard.as_mut() else {
        return Fault::NoPager;
    };
    relieve_pressure(window_index, pager);
    let Some(frame) = frames::with(|allocator| allocator.allocate()) else {
        pager
            .failure
            .get_or_insert(PagerFailure::OutOfMemory { page_index });
        return Fault::Failed;
    };
    pager.fill(page_index, frame);
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    if paging::map_frame(address, frame, flags).is_err() {
        frames::with(|allocator| allocator.free(frame));
        return Fault::Failed;
    }
    Fault::Handled
}

/// Evicts a batch when free frames run low: from the faulting window first,
/// then from the others.
fn relieve_pressure(window_index: usize, faulting: &mut Pager) {
    if frames::with(|allocator| allocator.stats().free_frames) >= LOW_FREE_FRAMES {
        return;
    }
    let mut evicted = 0;
    if !faulting.is_exhausted {
        evicted = faulting.evict(EVICTION_BATCH);
        faulting.is_exhausted = evicted == 0;
    }
    for (index, slot) in PAGERS.iter().enumerate() {
        if evicted >= EVICTION_BATCH {
            break;
        }
        if index == window_index {
            continue;
        }
        // Another window's pager is locked only by code that touches no
        // window; a miss just means trying the next.
        if let Some(mut guard) = slot.try_lock()
            && let Some(pager) = guard.as_mut()
            && !pager.is_exhausted
        {
            let count = pager.evict(EVICTION_BATCH - evicted);
            pager.is_exhausted = count == 0;
            evicted += count;
        }
    }
}

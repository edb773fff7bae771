//! Domain memory windows: demand-zero pages in the shared address space.
//!
//! Each domain's linear memory is a window of its maximum size at a fixed
//! place in the kernel's address space, handed to wasmi as the memory's
//! buffer. No page is mapped until touched: the page-fault handler maps a
//! zeroed frame and the interrupted access goes on, so a domain costs RAM for
//! the pages it touches, not for its maximum. The CPU's dirty bits say which
//! pages a checkpoint must write.
//!
//! Invariants (the fault path must never need what the faulting code holds):
//! - The fault path allocates nothing from the heap: it takes a frame from
//!   the frame allocator and maps it through the page tables, nothing else.
//! - No code touches a window while holding the frame-allocator or the
//!   page-table lock (both are only held inside memory::frames and
//!   memory::paging, which never touch windows), so the fault path can always
//!   take them.
//! - Windows are never unmapped or reused, so the `'static` slices handed to
//!   wasmi stay valid.
//!
//! Not built yet: pages are never read from the image on a fault (a restore
//! copies the stored pages in eagerly) and never evicted under pressure.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use x86_64::VirtAddr;
use x86_64::structures::paging::PageTableFlags;

use super::{MemoryError, frames, paging};

/// Where windows live: a range nothing else maps.
const WINDOWS_BASE: u64 = 0xffff_9000_0000_0000;

/// Address space per window: wasm32's 4 GiB maximum, plus 4 GiB that stays
/// unmapped so an access past one window can never land in the next.
const WINDOW_SPAN_BYTES: u64 = 8 << 30;

/// How many windows the range holds.
const MAX_WINDOWS: usize = 1024;

/// Size in bytes of each window handed out (0: not handed out).
static WINDOW_SIZES: [AtomicU64; MAX_WINDOWS] = [const { AtomicU64::new(0) }; MAX_WINDOWS];
static NEXT_WINDOW: AtomicUsize = AtomicUsize::new(0);

/// Page-fault error code bit 0: the page was present (a protection fault).
const FAULT_WAS_PRESENT: u64 = 1 << 0;

/// One domain's window.
#[derive(Debug)]
pub struct Window {
    start: VirtAddr,
    size_bytes: u64,
}

impl Window {
    /// Reserves a window of `size_bytes` (at most 4 GiB).
    pub fn reserve(size_bytes: u64) -> Result<Window, MemoryError> {
        let size_bytes = size_bytes.next_multiple_of(frames::FRAME_BYTES);
        if size_bytes > 4 << 30 {
            return Err(MemoryError::MapFailed {
                virtual_address: WINDOWS_BASE,
            });
        }
        let index = NEXT_WINDOW.fetch_add(1, Ordering::Relaxed);
        let Some(size_slot) = WINDOW_SIZES.get(index) else {
            return Err(MemoryError::OutOfWindows);
        };
        size_slot.store(size_bytes, Ordering::Release);
        Ok(Window {
            start: VirtAddr::new(WINDOWS_BASE + index as u64 * WINDOW_SPAN_BYTES),
            size_bytes,
        })
    }

    /// The window as wasmi's memory buffer.
    pub fn buffer(&self) -> &'static mut [u8] {
        // SAFETY: the window's range belongs to this Window alone (handed out
        // once by `reserve`, never reused or unmapped); every byte of it reads
        // as zero until written, because the page-fault handler maps zeroed
        // frames on first touch. The vm asks for the buffer once per domain
        // and wasmi is then its only user.
        unsafe {
            core::slice::from_raw_parts_mut(self.start.as_mut_ptr::<u8>(), self.size_bytes as usize)
        }
    }

    /// Indices of pages written since their dirty bit was last cleared, among
    /// the first `page_count`.
    pub fn dirty_pages(&self, page_count: u64) -> Vec<u64> {
        paging::dirty_pages(self.start, page_count.min(self.page_count()))
    }

    /// Marks pages clean (their contents are durable).
    pub fn clear_dirty(&self, page_indices: &[u64]) {
        paging::clear_dirty(self.start, page_indices);
    }

    /// Pages of the window in RAM.
    pub fn resident_pages(&self) -> u64 {
        paging::resident_pages(self.start, self.page_count())
    }

    fn page_count(&self) -> u64 {
        self.size_bytes / frames::FRAME_BYTES
    }
}

/// The page-fault path for windows: maps a zeroed frame at a not-present
/// address inside a handed-out window. Returns false for any other fault,
/// which is then fatal.
pub fn handle_page_fault(address: u64, error_code: u64) -> bool {
    if error_code & FAULT_WAS_PRESENT != 0 || address < WINDOWS_BASE {
        return false;
    }
    let offset = address - WINDOWS_BASE;
    let index = (offset / WINDOW_SPAN_BYTES) as usize;
    let Some(size_slot) = WINDOW_SIZES.get(index) else {
        return false;
    };
    if offset % WINDOW_SPAN_BYTES >= size_slot.load(Ordering::Acquire) {
        return false;
    }
    let page = VirtAddr::new(address).align_down(frames::FRAME_BYTES);
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    paging::map_fresh(page, 1, flags).is_ok()
}

//! Domain memory windows: demand-zero pages in the shared address space.
//!
//! Each domain's linear memory is a window of its maximum size at a fixed
//! place in the kernel's address space, handed to wasmi as the memory's
//! buffer. No page is mapped until touched: the page-fault handler maps a
//! frame, filled by the window's pager from the domain's image (or zeroed
//! when the page is not stored, or the window has no pager), and the
//! interrupted access goes on. So a domain costs RAM for the pages it
//! touches, not for its maximum, and under pressure the pager evicts pages
//! (memory::pager). The CPU's dirty bits say which pages a checkpoint must
//! write.
//!
//! Invariants (the fault path must never need what the faulting code holds):
//! - The fault path allocates nothing from the heap: it takes frames from
//!   the frame allocator, reads and writes blocks through the disk's own DMA
//!   buffer, and maps and unmaps through the page tables.
//! - No code touches a window while holding a lock the fault path takes: the
//!   frame allocator's and the page tables' (held only inside memory::frames
//!   and memory::paging, which never touch windows), a disk's (no buffer
//!   handed to a disk is a window: images copy pages through their own
//!   buffers) and a pager's (held only by memory::pager and
//!   memory::window_backing for bookkeeping). The fault path uses `try_lock`,
//!   so a broken invariant is a fatal fault, not a deadlock.
//! - Windows are never given back or reused, so the `'static` slices handed
//!   to wasmi stay valid (their pages come and go, the range stays).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use x86_64::VirtAddr;
use x86_64::structures::paging::PageTableFlags;

use super::{MemoryError, frames, pager, paging};

/// Where windows live: a range nothing else maps.
const WINDOWS_BASE: u64 = 0xffff_9000_0000_0000;

/// Address space per window: wasm32's 4 GiB maximum, plus 4 GiB that stays
/// unmapped so an access past one window can never land in the next.
const WINDOW_SPAN_BYTES: u64 = 8 << 30;

/// How many windows the range holds.
pub(super) const MAX_WINDOWS: usize = 1024;

/// Size in bytes of each window handed out (0: not handed out).
static WINDOW_SIZES: [AtomicU64; MAX_WINDOWS] = [const { AtomicU64::new(0) }; MAX_WINDOWS];
static NEXT_WINDOW: AtomicUsize = AtomicUsize::new(0);

/// Page-fault error code bit 0: the page was present (a protection fault).
const FAULT_WAS_PRESENT: u64 = 1 << 0;

/// One domain's window.
#[derive(Debug)]
pub struct Window {
    index: usize,
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
            index,
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

    pub fn page_count(&self) -> u64 {
        self.size_bytes / frames::FRAME_BYTES
    }

    /// Which window this is (the pager's key).
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn start(&self) -> VirtAddr {
        self.start
    }

    /// Drops every resident page among the first `page_count` (their frames
    /// go back to the allocator): they read as the pager says next time.
    /// Nothing may reference the window's memory meanwhile.
    pub fn drop_resident_pages(&self, page_count: u64) {
        for page_index in 0..page_count.min(self.page_count()) {
            let address = self.start + page_index * frames::FRAME_BYTES;
            if let Some(frame) = paging::unmap_page(address) {
                frames::with(|allocator| allocator.free(frame));
            }
        }
    }
}

/// The page-fault path for windows: maps the page at a not-present address
/// inside a handed-out window, from its pager (read from the image or
/// zero-filled) or, for a window without one, zeroed. Returns false for any
/// other fault, which is then fatal.
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
    let page_index = (page.as_u64() - WINDOWS_BASE) % WINDOW_SPAN_BYTES / frames::FRAME_BYTES;
    match pager::fault(index, page_index, page) {
        pager::Fault::Handled => true,
        pager::Fault::Failed => false,
        pager::Fault::NoPager => {
            let flags =
                PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
            paging::map_fresh(page, 1, flags).is_ok()
        }
    }
}

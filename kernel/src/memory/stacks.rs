//! Kernel stacks with an unmapped guard page below each, so overflows fault.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::structures::paging::PageTableFlags;

use super::{MemoryError, frames, paging};

/// Where kernel stacks live: a range nothing else maps.
const STACKS_BASE: u64 = 0xffff_c000_0000_0000;

/// Next free address in the stack range (bump: stacks are never freed yet).
static NEXT: AtomicU64 = AtomicU64::new(STACKS_BASE);

/// Maps a stack of `size_bytes` (rounded up to pages) above an unmapped guard
/// page and returns its top, 16-byte aligned.
pub fn allocate(size_bytes: u64) -> Result<VirtAddr, MemoryError> {
    let pages = size_bytes.div_ceil(frames::FRAME_BYTES);
    let span = (pages + 1) * frames::FRAME_BYTES;
    let guard = NEXT.fetch_add(span, Ordering::Relaxed);
    let bottom = VirtAddr::new(guard + frames::FRAME_BYTES);
    let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    paging::map_fresh(bottom, pages, flags)?;
    Ok(bottom + pages * frames::FRAME_BYTES)
}

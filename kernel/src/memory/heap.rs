//! The kernel heap: talc over a contiguous run of frames in the direct map.
//!
//! Interrupt handlers never allocate, so the heap's spinlock can never be
//! wanted by a handler on the CPU that holds it.

use spinning_top::RawSpinlock;
use talc::TalcLock;
use talc::source::Manual;

use super::MemoryError;

#[global_allocator]
static HEAP: TalcLock<RawSpinlock, Manual> = TalcLock::new(Manual);

static HEAP_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

const MIB: u64 = 1024 * 1024;

/// A quarter of usable RAM, between 8 MiB and 512 MiB: enough for wasmi's
/// code and stores; domain memory lives in page frames, not on the heap.
fn heap_bytes_for(usable_bytes: u64) -> u64 {
    (usable_bytes / 4).clamp(8 * MIB, 512 * MIB)
}

pub fn init(usable_bytes: u64) -> Result<(), MemoryError> {
    let bytes = heap_bytes_for(usable_bytes);
    let frames = bytes / super::frames::FRAME_BYTES;
    let start = super::frames::with(|allocator| allocator.allocate_contiguous(frames))
        .ok_or(MemoryError::OutOfFrames)?;
    let base = super::physical_to_virtual(start.as_u64()).as_mut_ptr::<u8>();
    // SAFETY: the frames were just taken from the frame allocator, so nothing
    // else uses them, and the direct map makes all `bytes` of them writable.
    let claimed = unsafe { HEAP.lock().claim(base, bytes as usize) };
    if claimed.is_none() {
        return Err(MemoryError::OutOfFrames);
    }
    HEAP_BYTES.store(bytes, core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Heap size and bytes in use, for `mem`.
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    pub size_bytes: u64,
    pub allocated_bytes: u64,
}

pub fn stats() -> HeapStats {
    let allocated = x86_64::instructions::interrupts::without_interrupts(|| {
        HEAP.lock().counters().allocated_bytes
    });
    HeapStats {
        size_bytes: HEAP_BYTES.load(core::sync::atomic::Ordering::Relaxed),
        allocated_bytes: allocated as u64,
    }
}

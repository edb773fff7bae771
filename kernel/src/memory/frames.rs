//! The physical frame allocator: bump over usable RAM, then a free list.
//!
//! Frames are 4 KiB. Fresh frames come from the memory map's usable regions in
//! address order (so the first ones, which hold the first page tables, are
//! low enough for the PVH boot tables to reach); freed frames go on an
//! intrusive list threaded through the frames themselves via the direct map.
//! Nothing here allocates from the heap, so the page-fault path can use it.

use spin::Mutex;
use x86_64::PhysAddr;
use x86_64::structures::paging::{FrameAllocator as FrameSource, PhysFrame, Size4KiB};

use crate::boot_info::{BootInfo, RegionKind};

pub const FRAME_BYTES: u64 = 4096;
const MAX_RANGES: usize = crate::boot_info::MAX_MEMORY_REGIONS + 1;

/// RAM below 1 MiB holds firmware data and is left alone.
const LOW_MEMORY_END: u64 = 0x10_0000;

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The kernel image's size in bytes, from the linker script's symbols.
pub fn kernel_image_bytes() -> u64 {
    let start = &raw const __kernel_start as u64;
    let end = &raw const __kernel_end as u64;
    end - start
}

#[derive(Debug, Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
}

/// Frame counts for `mem`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameStats {
    pub total_frames: u64,
    pub free_frames: u64,
}

#[derive(Debug)]
pub struct FrameAllocator {
    ranges: [Range; MAX_RANGES],
    range_count: usize,
    current_range: usize,
    next_fresh: u64,
    free_list_head: Option<u64>,
    stats: FrameStats,
}

static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator {
    ranges: [Range { start: 0, end: 0 }; MAX_RANGES],
    range_count: 0,
    current_range: 0,
    next_fresh: 0,
    free_list_head: None,
    stats: FrameStats {
        total_frames: 0,
        free_frames: 0,
    },
});

impl FrameAllocator {
    fn add_range(&mut self, start: u64, end: u64) {
        let start = start.max(LOW_MEMORY_END).next_multiple_of(FRAME_BYTES);
        let end = end - end % FRAME_BYTES;
        if start >= end || self.range_count == MAX_RANGES {
            return;
        }
        self.ranges[self.range_count] = Range { start, end };
        self.range_count += 1;
        let frames = (end - start) / FRAME_BYTES;
        self.stats.total_frames += frames;
        self.stats.free_frames += frames;
    }

    /// Takes `count` physically contiguous fresh frames; returns the first.
    pub fn allocate_contiguous(&mut self, count: u64) -> Option<PhysAddr> {
        let bytes = count.checked_mul(FRAME_BYTES)?;
        while self.current_range < self.range_count {
            let range = self.ranges[self.current_range];
            let start = self.next_fresh.max(range.start);
            if start.checked_add(bytes)? <= range.end {
                self.next_fresh = start + bytes;
                self.stats.free_frames -= count;
                return Some(PhysAddr::new(start));
            }
            // Too small: what is left of this range goes to the free list.
            let mut frame = start;
            while frame < range.end {
                self.push_free(frame);
                frame += FRAME_BYTES;
            }
            self.current_range += 1;
        }
        None
    }

    /// Takes one frame: a freed one if there is one, else a fresh one.
    pub fn allocate(&mut self) -> Option<PhysFrame> {
        if let Some(head) = self.free_list_head {
            // SAFETY: `head` is a free frame this allocator owns; its first
            // word holds the next free frame (written by push_free), and it is
            // reachable through the direct map.
            let next = unsafe { super::physical_to_virtual(head).as_ptr::<u64>().read() };
            self.free_list_head = (next != 0).then_some(next);
            self.stats.free_frames -= 1;
            return Some(PhysFrame::containing_address(PhysAddr::new(head)));
        }
        self.allocate_contiguous(1)
            .map(PhysFrame::containing_address)
    }

    /// Gives a frame back. The caller must no longer use it.
    pub fn free(&mut self, frame: PhysFrame) {
        self.push_free(frame.start_address().as_u64());
        self.stats.free_frames += 1;
    }

    fn push_free(&mut self, frame: u64) {
        let next = self.free_list_head.unwrap_or(0);
        // SAFETY: the frame is free and owned by this allocator, so nothing
        // else reads or writes it; the direct map reaches it.
        unsafe {
            super::physical_to_virtual(frame)
                .as_mut_ptr::<u64>()
                .write(next)
        };
        self.free_list_head = Some(frame);
    }

    pub fn stats(&self) -> FrameStats {
        self.stats
    }
}

// SAFETY: `allocate` only returns frames that are usable RAM per the memory
// map, outside the kernel image, and never returns a frame twice unless it
// was freed in between.
unsafe impl FrameSource<Size4KiB> for FrameAllocator {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        self.allocate()
    }
}

/// Builds the allocator from the memory map: usable regions minus the kernel
/// image (which PVH's map calls usable).
pub fn init(info: &BootInfo) {
    let kernel_start = info.kernel_physical_start;
    let kernel_end = kernel_start + kernel_image_bytes();
    let mut frames = FRAMES.lock();
    for region in info
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Usable)
    {
        if region.end() <= kernel_start || region.start >= kernel_end {
            frames.add_range(region.start, region.end());
        } else {
            frames.add_range(region.start, kernel_start);
            frames.add_range(kernel_end, region.end());
        }
    }
    let count = frames.range_count;
    frames.ranges[..count].sort_unstable_by_key(|range| range.start);
}

/// Runs `f` with the frame allocator locked.
pub fn with<T>(f: impl FnOnce(&mut FrameAllocator) -> T) -> T {
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut FRAMES.lock()))
}

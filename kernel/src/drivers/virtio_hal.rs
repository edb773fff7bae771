//! virtio-drivers' `Hal` over the frame allocator and the direct map.
//!
//! DMA memory is physically contiguous runs of fresh frames, reached through
//! the direct map. There is no IOMMU, so sharing a buffer with a device is
//! just naming its physical address, as long as the buffer is physically
//! contiguous. The rare one that is not (virtio-drivers' flush puts its
//! 16-byte request on the kernel stack, whose pages are mapped one frame at a
//! time, so it may straddle two unrelated frames) is copied through a bounce
//! slot and copied back by `unshare`.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, Ordering};

use virtio_drivers::{BufferDirection, Hal, PhysAddr};
use x86_64::VirtAddr;
use x86_64::structures::paging::PhysFrame;

use crate::memory::{self, frames};

/// The kernel's `Hal` for virtio-drivers.
#[derive(Debug)]
pub struct KernelHal;

/// `pages` zeroed, physically contiguous frames: their physical address and
/// their direct-map pointer, or None when RAM is exhausted.
pub fn allocate_dma_frames(pages: usize) -> Option<(u64, NonNull<u8>)> {
    let start = frames::with(|allocator| allocator.allocate_contiguous(pages as u64))?;
    let pointer = memory::physical_to_virtual(start.as_u64()).as_mut_ptr::<u8>();
    // SAFETY: the frames were just taken from the frame allocator, so nothing
    // else uses them, and the direct map makes all of them writable.
    unsafe { pointer.write_bytes(0, pages * frames::FRAME_BYTES as usize) };
    Some((start.as_u64(), NonNull::new(pointer)?))
}

/// Gives frames from `allocate_dma_frames` back.
///
/// # Safety
/// `physical` and `pages` must come from one `allocate_dma_frames` call, and
/// neither the CPU nor any device may use those frames afterwards.
pub unsafe fn free_dma_frames(physical: u64, pages: usize) {
    frames::with(|allocator| {
        for page in 0..pages as u64 {
            let frame = x86_64::PhysAddr::new(physical + page * frames::FRAME_BYTES);
            allocator.free(PhysFrame::containing_address(frame));
        }
    });
}

/// The physical address of `length` bytes at `address`, if they are one
/// physically contiguous run of mapped memory.
fn contiguous_physical(address: u64, length: usize) -> Option<u64> {
    let first = memory::paging::virtual_to_physical(VirtAddr::try_new(address).ok()?)?.as_u64();
    let end = address.checked_add(length as u64)?;
    let mut page = address - address % frames::FRAME_BYTES + frames::FRAME_BYTES;
    while page < end {
        let physical = memory::paging::virtual_to_physical(VirtAddr::new(page))?.as_u64();
        if physical != first + (page - address) {
            return None;
        }
        page += frames::FRAME_BYTES;
    }
    Some(first)
}

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned frames
// through the direct map (valid for reads and writes); mmio_phys_to_virt
// returns the uncached mapping of device memory that map_mmio made, which no
// Rust object aliases; share returns the physical address of the very bytes
// the device is given, or of a bounce slot holding a copy that unshare copies
// back before the caller looks at the buffer again.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // virtio-drivers turns physical address 0 into Error::DmaError.
        allocate_dma_frames(pages).unwrap_or((0, NonNull::dangling()))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes what dma_alloc returned and no longer
        // uses the memory (the Hal contract).
        unsafe { free_dma_frames(paddr, pages) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // pci::prepare_device has mapped every memory BAR already, so this
        // finds the pages mapped and only computes the address.
        match memory::paging::map_mmio(paddr, size as u64) {
            Ok(virtual_address) => NonNull::new(virtual_address.as_mut_ptr())
                .unwrap_or_else(|| panic!("device memory at {paddr:#x} maps to null")),
            Err(error) => panic!("device memory at {paddr:#x} ({size} bytes): {error}"),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let address = buffer.cast::<u8>().as_ptr() as u64;
        if let Some(physical) = contiguous_physical(address, buffer.len()) {
            return physical;
        }
        // SAFETY: the caller guarantees the buffer is valid and not accessed
        // by anyone else during this call.
        unsafe { bounce_in(buffer) }
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        // SAFETY: as share; paddr is what share returned for this buffer.
        unsafe { bounce_out(paddr, buffer, direction) }
    }
}

/// Bounce slots: one DMA frame cut into 16 slots of 256 bytes, enough for
/// virtio request headers and status bytes (block data always comes from the
/// disk's own DMA frames). A set bit in BOUNCE_SLOTS_USED is a slot in use.
const BOUNCE_SLOT_BYTES: usize = 256;
const BOUNCE_SLOTS: u32 = 16;
static BOUNCE_FRAME: spin::Once<u64> = spin::Once::new();
static BOUNCE_SLOTS_USED: AtomicU16 = AtomicU16::new(0);

/// The bounce frame's physical address, taken on first use (probe_disks
/// calls this so that the frame exists before any request).
pub fn bounce_frame() -> u64 {
    *BOUNCE_FRAME.call_once(|| match allocate_dma_frames(1) {
        Some((physical, _)) => physical,
        None => panic!("virtio: no memory for the bounce frame"),
    })
}

/// Copies `buffer` into a free bounce slot and returns the slot's physical
/// address.
///
/// # Safety
/// `buffer` must be valid for reads and writes of its length, and nobody else
/// may access it until the matching `bounce_out`.
unsafe fn bounce_in(buffer: NonNull<[u8]>) -> u64 {
    let length = buffer.len();
    if length > BOUNCE_SLOT_BYTES {
        panic!("virtio: a {length}-byte buffer is not physically contiguous and too big to bounce");
    }
    let frame = bounce_frame();
    let claimed = BOUNCE_SLOTS_USED.fetch_update(Ordering::Acquire, Ordering::Relaxed, |used| {
        let free = (!used).trailing_zeros();
        (free < BOUNCE_SLOTS).then(|| used | (1 << free))
    });
    let Ok(used_before) = claimed else {
        panic!("virtio: all {BOUNCE_SLOTS} bounce slots are in use");
    };
    let slot = (!used_before).trailing_zeros() as u64;
    let physical = frame + slot * BOUNCE_SLOT_BYTES as u64;
    // SAFETY: the slot was just claimed, so only this request uses it; it is
    // inside the bounce frame, reached through the direct map; the caller
    // vouches for the source. Copying the whole buffer whatever the direction
    // is harmless and keeps device-written buffers initialised.
    unsafe {
        core::ptr::copy_nonoverlapping(
            buffer.cast::<u8>().as_ptr(),
            memory::physical_to_virtual(physical).as_mut_ptr::<u8>(),
            length,
        );
    }
    physical
}

/// If `physical` is a bounce slot, copies what the device wrote back into
/// `buffer` and frees the slot; otherwise does nothing.
///
/// # Safety
/// `physical` must be what `share` returned for `buffer`, the device must be
/// done with it, and nobody else may access `buffer` meanwhile.
unsafe fn bounce_out(physical: u64, buffer: NonNull<[u8]>, direction: BufferDirection) {
    let Some(&frame) = BOUNCE_FRAME.get() else {
        return;
    };
    if !(frame..frame + frames::FRAME_BYTES).contains(&physical) {
        return;
    }
    let slot = (physical - frame) / BOUNCE_SLOT_BYTES as u64;
    if direction != BufferDirection::DriverToDevice {
        // SAFETY: the slot belongs to this buffer until released below and
        // the device is done with it; the caller vouches for the destination.
        unsafe {
            core::ptr::copy_nonoverlapping(
                memory::physical_to_virtual(physical).as_ptr::<u8>(),
                buffer.cast::<u8>().as_ptr(),
                buffer.len(),
            );
        }
    }
    BOUNCE_SLOTS_USED.fetch_and(!(1 << slot), Ordering::Release);
}

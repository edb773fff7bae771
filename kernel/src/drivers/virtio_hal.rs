//! virtio-drivers' `Hal` over the frame allocator and the direct map.
//!
//! DMA memory is physically contiguous runs of fresh frames, reached through
//! the direct map. There is no IOMMU, so sharing a buffer with a device is
//! just naming its physical address: no bounce copy, `unshare` does nothing.

use core::ptr::NonNull;

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
// the device is given.
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
        // The block driver passes its own DMA frames, and virtio-drivers' flush
        // passes a request on the kernel stack, which lies in the kernel image
        // (physically contiguous). Anything else is a driver bug.
        let address = buffer.cast::<u8>().as_ptr() as u64;
        contiguous_physical(address, buffer.len()).unwrap_or_else(|| {
            panic!(
                "virtio: a {}-byte buffer at {address:#x} is not physically contiguous memory",
                buffer.len()
            )
        })
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

//! Physical frames, the kernel's page tables with a direct map, and the heap.
//!
//! With arch/ and drivers/, one of the three places where the kernel uses
//! `unsafe`; every block says why it is sound.

pub mod frames;
pub mod heap;
pub mod pager;
pub mod paging;
pub mod stacks;
pub mod window_backing;
pub mod windows;

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::VirtAddr;

use crate::boot_info::BootInfo;

/// Where the kernel's page tables map all of physical memory.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;

/// Offset of physical memory in the current address space: the boot path's
/// until `paging::init` switches to the kernel's tables, DIRECT_MAP_BASE after.
static PHYSICAL_OFFSET: AtomicU64 = AtomicU64::new(0);

/// The virtual address through which physical address `physical` is reachable.
pub fn physical_to_virtual(physical: u64) -> VirtAddr {
    VirtAddr::new_truncate(physical.wrapping_add(PHYSICAL_OFFSET.load(Ordering::Relaxed)))
}

/// What went wrong setting memory up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// No usable RAM is left for page tables or the heap.
    OutOfFrames,
    /// A page-table frame lies beyond what the boot page tables map.
    FrameNotReachable { physical: u64 },
    /// The page-table crate refused a mapping.
    MapFailed { virtual_address: u64 },
    /// Every domain window is handed out.
    OutOfWindows,
}

impl fmt::Display for MemoryError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::OutOfFrames => write!(formatter, "out of physical memory"),
            MemoryError::FrameNotReachable { physical } => write!(
                formatter,
                "frame {physical:#x} is beyond the memory the boot page tables map"
            ),
            MemoryError::MapFailed { virtual_address } => {
                write!(formatter, "could not map {virtual_address:#x}")
            }
            MemoryError::OutOfWindows => write!(formatter, "no domain window is left"),
        }
    }
}

/// Sets up frames, page tables and the heap, in that order.
pub fn init(info: &BootInfo) -> Result<(), MemoryError> {
    PHYSICAL_OFFSET.store(info.boot_physical_offset, Ordering::Relaxed);
    frames::init(info);
    paging::init(info)?;
    PHYSICAL_OFFSET.store(DIRECT_MAP_BASE, Ordering::Relaxed);
    heap::init(info.usable_bytes())
}

/// Reads `address`, which must not be mapped, to show the page-fault report
/// (the `test=page-fault` boot argument). Never returns: the fault is fatal.
pub fn provoke_page_fault(address: u64) -> ! {
    // SAFETY: deliberately not sound to complete: the address is unmapped, so
    // the read faults and the fatal page-fault handler stops the machine
    // before any value could be observed.
    let value = unsafe { core::ptr::read_volatile(address as *const u64) };
    panic!("reading unmapped address {address:#x} returned {value:#x} instead of faulting")
}

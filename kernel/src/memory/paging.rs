//! The kernel's own page tables: the direct map and the kernel image, W^X.
//!
//! Built with the x86_64 crate while the boot path's tables are live (PVH:
//! the first GiB identity-mapped; Limine: its HHDM), then loaded into CR3.
//! After the switch nothing is identity-mapped, so a null pointer faults.

use alloc::vec::Vec;

use spin::Mutex;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{
    FrameAllocator as FrameSource, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags,
    PhysFrame, Size2MiB, Size4KiB, Translate,
    mapper::{MappedFrame, TranslateResult},
};
use x86_64::{PhysAddr, VirtAddr};

use super::frames::{self, FrameAllocator};
use super::{DIRECT_MAP_BASE, MemoryError};
use crate::boot_info::{BootInfo, BootPath, RegionKind};

const TWO_MIB: u64 = 2 * 1024 * 1024;

/// Under PVH only the first GiB is reachable until the switch.
const PVH_REACHABLE_BYTES: u64 = 1 << 30;

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

/// The kernel's page tables, for later mappings (domain windows, MMIO).
static KERNEL_TABLES: Mutex<Option<OffsetPageTable<'static>>> = Mutex::new(None);

/// Hands out zeroed page-table frames the boot tables can reach.
struct TableFrames<'a> {
    frames: &'a mut FrameAllocator,
    reachable_end: u64,
    error: Option<MemoryError>,
}

// SAFETY: frames come from the frame allocator (unused RAM) and are zeroed
// before being returned, as page tables must be.
unsafe impl FrameSource<Size4KiB> for TableFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let Some(frame) = self.frames.allocate() else {
            self.error = Some(MemoryError::OutOfFrames);
            return None;
        };
        let physical = frame.start_address().as_u64();
        if physical + frames::FRAME_BYTES > self.reachable_end {
            self.error = Some(MemoryError::FrameNotReachable { physical });
            return None;
        }
        // SAFETY: the frame is fresh from the allocator and reachable through
        // the boot path's mapping (checked above).
        unsafe {
            super::physical_to_virtual(physical)
                .as_mut_ptr::<u8>()
                .write_bytes(0, frames::FRAME_BYTES as usize);
        }
        Some(frame)
    }
}

fn is_ram(kind: RegionKind) -> bool {
    !matches!(
        kind,
        RegionKind::Reserved | RegionKind::Bad | RegionKind::Framebuffer
    )
}

/// Builds the kernel's tables and switches to them.
pub fn init(info: &BootInfo) -> Result<(), MemoryError> {
    frames::with(|frame_allocator| build_and_switch(info, frame_allocator))
}

fn build_and_switch(
    info: &BootInfo,
    frame_allocator: &mut FrameAllocator,
) -> Result<(), MemoryError> {
    let reachable_end = match info.path {
        BootPath::Pvh => PVH_REACHABLE_BYTES,
        BootPath::Limine => u64::MAX,
    };
    let mut table_frames = TableFrames {
        frames: frame_allocator,
        reachable_end,
        error: None,
    };
    let level_4_frame = table_frames
        .allocate_frame()
        .ok_or(table_frames.error.unwrap_or(MemoryError::OutOfFrames))?;
    let level_4_virtual = super::physical_to_virtual(level_4_frame.start_address().as_u64());
    let boot_offset = VirtAddr::new_truncate(info.boot_physical_offset);
    // SAFETY: the level-4 frame is zeroed, unused, and reachable at
    // level_4_virtual; boot_offset is where the boot tables map physical memory.
    let mut mapper = unsafe {
        OffsetPageTable::new(&mut *level_4_virtual.as_mut_ptr::<PageTable>(), boot_offset)
    };

    // The direct map: every RAM-like region (and the first 2 MiB, which hold
    // the BIOS areas where ACPI tables may be), in 2 MiB pages, never executable.
    let direct_flags =
        PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
    let first_two_mib = core::iter::once((0, TWO_MIB));
    let regions = info
        .regions()
        .iter()
        .filter(|region| is_ram(region.kind))
        .map(|region| (region.start, region.end()));
    for (start, end) in first_two_mib.chain(regions) {
        let mut physical = start - start % TWO_MIB;
        while physical < end {
            let page =
                Page::<Size2MiB>::containing_address(VirtAddr::new(DIRECT_MAP_BASE + physical));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(physical));
            // SAFETY: the direct map aliases physical memory at a fixed offset in
            // a range nothing else uses; aliasing RAM is fine because Rust code
            // only reaches memory through one of the aliases at a time.
            match unsafe { mapper.map_to(page, frame, direct_flags, &mut table_frames) } {
                Ok(flush) => flush.ignore(),
                Err(x86_64::structures::paging::mapper::MapToError::PageAlreadyMapped(_)) => {}
                Err(_) => {
                    return Err(table_frames.error.unwrap_or(MemoryError::MapFailed {
                        virtual_address: page.start_address().as_u64(),
                    }));
                }
            }
            physical += TWO_MIB;
        }
    }

    // The kernel image, page by page: text read-execute, rodata read-only,
    // data and bss read-write, nothing both writable and executable.
    let kernel_start = &raw const __kernel_start as u64;
    let text_end = &raw const __text_end as u64;
    let rodata_end = &raw const __rodata_end as u64;
    let kernel_end = &raw const __kernel_end as u64;
    let mut virtual_address = kernel_start;
    while virtual_address < kernel_end {
        let flags = if virtual_address < text_end {
            PageTableFlags::PRESENT
        } else if virtual_address < rodata_end {
            PageTableFlags::PRESENT | PageTableFlags::NO_EXECUTE
        } else {
            PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE
        };
        let physical = info.kernel_physical_start + (virtual_address - kernel_start);
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virtual_address));
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(physical));
        // SAFETY: maps the kernel image to where the boot path loaded it, with
        // the same contents the running code already uses.
        match unsafe { mapper.map_to(page, frame, flags, &mut table_frames) } {
            Ok(flush) => flush.ignore(),
            Err(_) => {
                return Err(table_frames
                    .error
                    .unwrap_or(MemoryError::MapFailed { virtual_address }));
            }
        }
        virtual_address += frames::FRAME_BYTES;
    }

    let (_, cr3_flags) = Cr3::read();
    // SAFETY: the new tables map the kernel image at its link addresses with
    // the code that runs now, its stack (.bss) and all of RAM through the
    // direct map; everything in use stays mapped across the switch. The boot
    // path's identity map disappears, and nothing refers to it any more
    // (BootInfo was copied out of boot memory first).
    unsafe { Cr3::write(level_4_frame, cr3_flags) };

    // From here, page tables are reached through the direct map.
    let level_4 = VirtAddr::new(DIRECT_MAP_BASE + level_4_frame.start_address().as_u64());
    // SAFETY: the level-4 table is live in CR3, reachable through the direct
    // map, and owned by KERNEL_TABLES alone from now on.
    let kernel_tables = unsafe {
        OffsetPageTable::new(
            &mut *level_4.as_mut_ptr::<PageTable>(),
            VirtAddr::new(DIRECT_MAP_BASE),
        )
    };
    *KERNEL_TABLES.lock() = Some(kernel_tables);
    Ok(())
}

/// Maps `size_bytes` of device memory (a PCI BAR) at `physical` into the
/// direct-map range, uncached, and returns its virtual address.
///
/// Device memory lies outside RAM, so the direct map built at boot does not
/// cover it. The pages get `NO_CACHE | WRITE_THROUGH` (PAT entry 3, UC, with
/// the PAT the firmware leaves: Intel SDM Vol. 3A, 11.12.3), so every access
/// reaches the device in program order, and are never executable. Pages that
/// are already mapped to the same physical page are left alone, so mapping a
/// region twice (or two regions sharing a page) is fine. Page tables come from
/// the frame allocator; the lock order is page tables, then frames.
pub fn map_mmio(physical: u64, size_bytes: u64) -> Result<VirtAddr, MemoryError> {
    let virtual_address = DIRECT_MAP_BASE + physical;
    let end = physical
        .checked_add(size_bytes.max(1))
        .filter(|end| *end <= (1 << 46))
        .ok_or(MemoryError::MapFailed { virtual_address })?;
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | PageTableFlags::NO_CACHE
        | PageTableFlags::WRITE_THROUGH
        | PageTableFlags::NO_EXECUTE;
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let mapper = tables
            .as_mut()
            .ok_or(MemoryError::MapFailed { virtual_address })?;
        frames::with(|frame_allocator| {
            let mut table_frames = TableFrames {
                frames: frame_allocator,
                reachable_end: u64::MAX,
                error: None,
            };
            let mut page_physical = physical - physical % frames::FRAME_BYTES;
            while page_physical < end {
                let page_virtual = VirtAddr::new(DIRECT_MAP_BASE + page_physical);
                let page = Page::<Size4KiB>::containing_address(page_virtual);
                let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(page_physical));
                // SAFETY: the page lies in the direct-map range at its fixed
                // offset from `physical`, where nothing but this physical page
                // may ever be mapped; device memory is not RAM, so no Rust
                // object lives there and the new alias breaks no reference.
                match unsafe { mapper.map_to(page, frame, flags, &mut table_frames) } {
                    Ok(flush) => flush.flush(),
                    Err(_)
                        if mapper.translate_addr(page_virtual) == Some(frame.start_address()) => {}
                    Err(_) => {
                        return Err(table_frames.error.unwrap_or(MemoryError::MapFailed {
                            virtual_address: page_virtual.as_u64(),
                        }));
                    }
                }
                page_physical += frames::FRAME_BYTES;
            }
            Ok(VirtAddr::new(virtual_address))
        })
    })
}

/// The physical address behind kernel virtual address `address`, if mapped.
/// Drivers use it to hand buffers that are not in the direct map (a stack
/// variable, say) to a device.
pub fn virtual_to_physical(address: VirtAddr) -> Option<PhysAddr> {
    if (DIRECT_MAP_BASE..DIRECT_MAP_BASE + (1 << 46)).contains(&address.as_u64()) {
        return Some(PhysAddr::new(address.as_u64() - DIRECT_MAP_BASE));
    }
    x86_64::instructions::interrupts::without_interrupts(|| {
        KERNEL_TABLES.lock().as_ref()?.translate_addr(address)
    })
}

/// Maps `page_count` fresh, zeroed frames at `virtual_start` (page-aligned)
/// with `flags`. The range must be in a part of the address space that only
/// the caller uses (kernel stacks, domain windows).
pub fn map_fresh(
    virtual_start: VirtAddr,
    page_count: u64,
    flags: PageTableFlags,
) -> Result<(), MemoryError> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let mapper = tables.as_mut().ok_or(MemoryError::MapFailed {
            virtual_address: virtual_start.as_u64(),
        })?;
        frames::with(|frame_allocator| {
            for index in 0..page_count {
                let page_virtual = virtual_start + index * frames::FRAME_BYTES;
                let frame = frame_allocator.allocate().ok_or(MemoryError::OutOfFrames)?;
                // SAFETY: the frame is fresh from the allocator and reachable
                // through the direct map; zeroing it touches nothing else.
                unsafe {
                    super::physical_to_virtual(frame.start_address().as_u64())
                        .as_mut_ptr::<u8>()
                        .write_bytes(0, frames::FRAME_BYTES as usize);
                }
                let mut table_frames = TableFrames {
                    frames: frame_allocator,
                    reachable_end: u64::MAX,
                    error: None,
                };
                let page = Page::<Size4KiB>::containing_address(page_virtual);
                // SAFETY: the caller owns this virtual range, so no reference
                // points into it; the frame is fresh and zeroed.
                match unsafe { mapper.map_to(page, frame, flags, &mut table_frames) } {
                    Ok(flush) => flush.flush(),
                    Err(_) => {
                        return Err(table_frames.error.unwrap_or(MemoryError::MapFailed {
                            virtual_address: page_virtual.as_u64(),
                        }));
                    }
                }
            }
            Ok(())
        })
    })
}

/// Runs `f` on each 4 KiB page of `[start, start + page_count pages)` that is
/// mapped, with its page index and its flags.
fn for_each_mapped_page(
    start: VirtAddr,
    page_count: u64,
    mut f: impl FnMut(&mut OffsetPageTable<'static>, u64, Page<Size4KiB>, PageTableFlags),
) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let Some(mapper) = tables.as_mut() else {
            return;
        };
        for page_index in 0..page_count {
            let address = start + page_index * frames::FRAME_BYTES;
            if let TranslateResult::Mapped { flags, .. } = mapper.translate(address) {
                f(mapper, page_index, Page::containing_address(address), flags);
            }
        }
    });
}

/// Indices of the pages of the range whose dirty bit is set.
pub fn dirty_pages(start: VirtAddr, page_count: u64) -> Vec<u64> {
    let mut dirty = Vec::new();
    for_each_mapped_page(start, page_count, |_, page_index, _, flags| {
        if flags.contains(PageTableFlags::DIRTY) {
            dirty.push(page_index);
        }
    });
    dirty
}

/// How many pages of the range are mapped (resident).
pub fn resident_pages(start: VirtAddr, page_count: u64) -> u64 {
    let mut resident = 0;
    for_each_mapped_page(start, page_count, |_, _, _, _| resident += 1);
    resident
}

/// Clears the dirty bit of the listed pages of the range (after their
/// contents are durable), so the next write sets it again.
pub fn clear_dirty(start: VirtAddr, page_indices: &[u64]) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let Some(mapper) = tables.as_mut() else {
            return;
        };
        for &page_index in page_indices {
            let address = start + page_index * frames::FRAME_BYTES;
            if let TranslateResult::Mapped { flags, .. } = mapper.translate(address) {
                let page = Page::<Size4KiB>::containing_address(address);
                let clean = flags - PageTableFlags::DIRTY;
                // SAFETY: only the dirty bit changes; the mapping (frame,
                // permissions) stays, so no reference is invalidated. The
                // flush makes the CPU set the bit again on the next write.
                let updated = unsafe { mapper.update_flags(page, clean) };
                if let Ok(flush) = updated {
                    flush.flush();
                }
            }
        }
    });
}

/// What the pager sees of one mapped 4 KiB page.
#[derive(Debug, Clone, Copy)]
pub struct MappedPage {
    pub frame: PhysFrame,
    pub flags: PageTableFlags,
}

/// The frame and flags behind `address`, if a 4 KiB page maps it.
pub fn mapped_page(address: VirtAddr) -> Option<MappedPage> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let tables = KERNEL_TABLES.lock();
        match tables.as_ref()?.translate(address) {
            TranslateResult::Mapped {
                frame: MappedFrame::Size4KiB(frame),
                flags,
                ..
            } => Some(MappedPage { frame, flags }),
            _ => None,
        }
    })
}

/// Maps the page at `address` to `frame`, which the caller owns and has
/// filled. Page-table frames come from the frame allocator.
pub fn map_frame(
    address: VirtAddr,
    frame: PhysFrame,
    flags: PageTableFlags,
) -> Result<(), MemoryError> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let mapper = tables.as_mut().ok_or(MemoryError::MapFailed {
            virtual_address: address.as_u64(),
        })?;
        frames::with(|frame_allocator| {
            let mut table_frames = TableFrames {
                frames: frame_allocator,
                reachable_end: u64::MAX,
                error: None,
            };
            let page = Page::<Size4KiB>::containing_address(address);
            // SAFETY: the caller owns the page's virtual address (a domain
            // window page that is not mapped) and the frame, so no reference
            // points into either.
            match unsafe { mapper.map_to(page, frame, flags, &mut table_frames) } {
                Ok(flush) => {
                    flush.flush();
                    Ok(())
                }
                Err(_) => Err(table_frames.error.unwrap_or(MemoryError::MapFailed {
                    virtual_address: address.as_u64(),
                })),
            }
        })
    })
}

/// Unmaps the page at `address` and returns its frame, which the caller now
/// owns. Nothing may reference the page (the pager only unmaps window pages
/// while no domain code runs).
pub fn unmap_page(address: VirtAddr) -> Option<PhysFrame> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let page = Page::<Size4KiB>::containing_address(address);
        let (frame, flush) = tables.as_mut()?.unmap(page).ok()?;
        flush.flush();
        Some(frame)
    })
}

/// Clears the accessed bit of the page at `address`; returns whether it was
/// set (the clock algorithm's second chance), `None` if unmapped.
pub fn take_accessed(address: VirtAddr) -> Option<bool> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut tables = KERNEL_TABLES.lock();
        let mapper = tables.as_mut()?;
        let TranslateResult::Mapped { flags, .. } = mapper.translate(address) else {
            return None;
        };
        if !flags.contains(PageTableFlags::ACCESSED) {
            return Some(false);
        }
        let page = Page::<Size4KiB>::containing_address(address);
        // SAFETY: only the accessed bit changes; the mapping stays, so no
        // reference is invalidated.
        if let Ok(flush) = unsafe { mapper.update_flags(page, flags - PageTableFlags::ACCESSED) } {
            flush.flush();
        }
        Some(true)
    })
}

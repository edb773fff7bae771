//! Limine protocol entry: the requests, and their answers copied into BootInfo.
//!
//! The same ELF boots by PVH; `BASE_REVISION.is_supported()` is true only when
//! Limine loaded it. Limine enters in long mode on its own stack with paging on
//! (physical memory at the HHDM offset), but says nothing of SSE, so a small
//! stub enables it before the first Rust instruction.

use limine::memmap;
use limine::request::{
    ExecutableAddressRequest, ExecutableCmdlineRequest, HhdmRequest, MemmapRequest, RsdpRequest,
};
use limine::{BaseRevision, RequestsEndMarker, RequestsStartMarker};

use crate::boot_info::{BootInfo, BootPath, MemoryRegion, RegionKind};

#[used]
#[unsafe(link_section = ".requests_start_marker")]
static REQUESTS_START: RequestsStartMarker = RequestsStartMarker::new();

#[used]
#[unsafe(link_section = ".requests")]
static BASE_REVISION: BaseRevision = BaseRevision::new();

#[used]
#[unsafe(link_section = ".requests")]
static MEMORY_MAP: MemmapRequest = MemmapRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static HIGHER_HALF_DIRECT_MAP: HhdmRequest = HhdmRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static EXECUTABLE_ADDRESS: ExecutableAddressRequest = ExecutableAddressRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static COMMAND_LINE: ExecutableCmdlineRequest = ExecutableCmdlineRequest::new();

#[used]
#[unsafe(link_section = ".requests")]
static RSDP: RsdpRequest = RsdpRequest::new();

#[used]
#[unsafe(link_section = ".requests_end_marker")]
static REQUESTS_END: RequestsEndMarker = RequestsEndMarker::new();

core::arch::global_asm!(
    r#"
    .text
    .global limine_entry
limine_entry:
    cli
    /* CR0: clear EM (2) and TS (3), set MP (1); CR4: OSFXSR (9), OSXMMEXCPT (10). */
    mov %cr0, %rax
    and $~((1 << 2) | (1 << 3)), %rax
    or $(1 << 1), %rax
    mov %rax, %cr0
    mov %cr4, %rax
    or $((1 << 9) | (1 << 10)), %rax
    mov %rax, %cr4
    fninit
    push $0x1f80
    ldmxcsr (%rsp)
    pop %rax
    and $-16, %rsp
    xor %ebp, %ebp
    call limine_main
    ud2
    "#,
    options(att_syntax)
);

/// The Rust side of Limine entry.
#[unsafe(no_mangle)]
extern "C" fn limine_main() -> ! {
    let entry_tsc = super::cpu::read_tsc();
    let hhdm_offset = HIGHER_HALF_DIRECT_MAP
        .response()
        .map(|response| response.offset)
        .unwrap_or(0);
    let kernel_physical = EXECUTABLE_ADDRESS
        .response()
        .map(|response| response.physical_base)
        .unwrap_or(0);
    let mut info = BootInfo::new(BootPath::Limine, kernel_physical, hhdm_offset);
    info.entry_tsc = entry_tsc;
    let problem = fill_boot_info(&mut info, hhdm_offset).err();
    crate::kernel_main(info, problem)
}

/// Copies Limine's answers into `info`.
fn fill_boot_info(info: &mut BootInfo, hhdm_offset: u64) -> Result<(), &'static str> {
    if !BASE_REVISION.is_supported() {
        return Err("Limine does not support the requested base revision");
    }
    if HIGHER_HALF_DIRECT_MAP.response().is_none() || EXECUTABLE_ADDRESS.response().is_none() {
        return Err("Limine did not answer the HHDM or executable address request");
    }
    if let Some(response) = COMMAND_LINE.response() {
        info.set_command_line(response.cmdline());
    }
    if let Some(response) = RSDP.response() {
        // Base revisions other than 3 give a virtual (HHDM) address.
        let address = response.address as u64;
        let physical = address.checked_sub(hhdm_offset).unwrap_or(address);
        info.rsdp_physical = Some(physical);
    }
    let Some(memory_map) = MEMORY_MAP.response() else {
        return Err("Limine gave no memory map");
    };
    for entry in memory_map.entries() {
        let kind = match entry.type_ {
            memmap::MEMMAP_USABLE => RegionKind::Usable,
            memmap::MEMMAP_ACPI_RECLAIMABLE => RegionKind::AcpiReclaimable,
            memmap::MEMMAP_ACPI_NVS => RegionKind::AcpiNvs,
            memmap::MEMMAP_BAD_MEMORY => RegionKind::Bad,
            memmap::MEMMAP_BOOTLOADER_RECLAIMABLE => RegionKind::BootloaderReclaimable,
            memmap::MEMMAP_EXECUTABLE_AND_MODULES => RegionKind::KernelAndModules,
            memmap::MEMMAP_FRAMEBUFFER => RegionKind::Framebuffer,
            _ => RegionKind::Reserved,
        };
        let region = MemoryRegion {
            start: entry.base,
            length_bytes: entry.length,
            kind,
        };
        if !info.push_region(region) {
            return Err("the memory map has more entries than the kernel keeps");
        }
    }
    Ok(())
}

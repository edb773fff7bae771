//! PVH entry: the Xen ELF note, the 32-bit trampoline, and start_info parsing.
//!
//! QEMU's `-kernel` finds the note XEN_ELFNOTE_PHYS32_ENTRY and enters the
//! trampoline in 32-bit protected mode, paging off, with `ebx` holding the
//! physical address of `hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`).
//! There is no stack and .bss is not zeroed. The trampoline zeroes .bss,
//! enables SSE (the kernel's target uses it everywhere), loads page tables that
//! map the first GiB both at 0 and at the kernel's link address, enters long
//! mode and jumps to `pvh_main` in the higher half.

use crate::boot_info::{BootInfo, BootPath, MemoryRegion, RegionKind};

core::arch::global_asm!(
    r#"
    .set KERNEL_VIRTUAL_BASE, 0xffffffff80000000
    .set XEN_ELFNOTE_PHYS32_ENTRY, 18

    /* The note QEMU looks for; its section goes alone into a 4-byte aligned
       PT_NOTE segment (linker.ld). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                          /* name size, "Xen\0" */
    .long 8                          /* descriptor size */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .quad pvh_entry32 - KERNEL_VIRTUAL_BASE
    .balign 4

    .section .text.boot32, "ax"
    .code32
    .global pvh_entry32
pvh_entry32:
    cli
    cld
    mov %ebx, %ebp                   /* start_info; rep stosb needs %edi */

    /* Zero .bss, which also holds the boot stack (not in use yet). */
    mov $(__bss_start - KERNEL_VIRTUAL_BASE), %edi
    mov $(__bss_end - KERNEL_VIRTUAL_BASE), %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $(pvh_boot_stack_top - KERNEL_VIRTUAL_BASE), %esp

    /* CR4: PAE (5), OSFXSR (9), OSXMMEXCPT (10). */
    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4

    mov $(pvh_boot_pml4 - KERNEL_VIRTUAL_BASE), %eax
    mov %eax, %cr3

    /* EFER: long mode enable (8), no-execute enable (11). */
    mov $0xc0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr

    /* CR0: clear EM (2) and TS (3); set PE (0), MP (1), WP (16), PG (31). */
    mov %cr0, %eax
    and $~((1 << 2) | (1 << 3)), %eax
    or $((1 << 0) | (1 << 1) | (1 << 16) | (1 << 31)), %eax
    mov %eax, %cr0

    lgdt (pvh_boot_gdt_pointer - KERNEL_VIRTUAL_BASE)
    ljmp $0x08, $(pvh_entry64_low - KERNEL_VIRTUAL_BASE)

    .code64
pvh_entry64_low:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    movabs $pvh_entry64_high, %rax
    jmp *%rax

    .text
pvh_entry64_high:
    movabs $pvh_boot_stack_top, %rsp
    mov %ebp, %edi                   /* zero-extends: start_info's address */
    xor %ebp, %ebp
    fninit
    /* MXCSR is still at its reset value (0x1f80, exceptions masked), which
       cpu::check_sse_setup verifies. No LDMXCSR here: under nested KVM its
       memory operand on a page touched for the first time can make KVM's
       instruction emulator give up ("emulation failure"). */
    call pvh_main
    ud2

    /* Boot page tables, prebuilt in the image (nothing zeroes .bss before
       they are needed): 2 MiB pages for the first GiB, mapped at 0 and at
       KERNEL_VIRTUAL_BASE. The kernel replaces them in memory::paging. */
    .section .data.pvh_boot, "aw"
    .balign 4096
pvh_boot_pml4:
    .quad pvh_boot_pdpt_low - KERNEL_VIRTUAL_BASE + 0x3
    .fill 510, 8, 0
    .quad pvh_boot_pdpt_high - KERNEL_VIRTUAL_BASE + 0x3
pvh_boot_pdpt_low:
    .quad pvh_boot_pd - KERNEL_VIRTUAL_BASE + 0x3
    .fill 511, 8, 0
pvh_boot_pdpt_high:
    .fill 510, 8, 0
    .quad pvh_boot_pd - KERNEL_VIRTUAL_BASE + 0x3
    .quad 0
pvh_boot_pd:
    .set pvh_page, 0
    .rept 512
    .quad (pvh_page << 21) | 0xe3    /* present, writable, 2 MiB, accessed, dirty */
    .set pvh_page, pvh_page + 1
    .endr

    .balign 16
pvh_boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff         /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff         /* 0x10: data */
pvh_boot_gdt_end:
pvh_boot_gdt_pointer:
    .word pvh_boot_gdt_end - pvh_boot_gdt - 1
    .long pvh_boot_gdt - KERNEL_VIRTUAL_BASE

    .section .bss.pvh_boot_stack, "aw", @nobits
    .balign 16
pvh_boot_stack:
    .skip 64 * 1024
pvh_boot_stack_top:
    "#,
    options(att_syntax)
);

/// `hvm_start_info.magic`.
const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Where the trampoline loads the kernel (linker.ld, KERNEL_PHYSICAL_START).
const KERNEL_PHYSICAL_START: u64 = 0x10_0000;

/// The first GiB is identity-mapped by the boot page tables.
const IDENTITY_MAPPED_BYTES: u64 = 1 << 30;

/// `struct hvm_start_info` (version 1).
#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    module_count: u32,
    module_list_physical: u64,
    command_line_physical: u64,
    rsdp_physical: u64,
    memory_map_physical: u64,
    memory_map_entries: u32,
    reserved: u32,
}

/// `struct hvm_memmap_table_entry`; types are E820's.
#[repr(C)]
#[derive(Clone, Copy)]
struct MemoryMapEntry {
    address: u64,
    size_bytes: u64,
    kind: u32,
    reserved: u32,
}

/// Reads a `T` from an identity-mapped physical address, or None when it is
/// not entirely inside the identity-mapped first GiB.
fn read_physical<T: Copy>(physical: u64) -> Option<T> {
    let end = physical.checked_add(core::mem::size_of::<T>() as u64)?;
    if physical == 0 || end > IDENTITY_MAPPED_BYTES {
        return None;
    }
    // SAFETY: the boot page tables identity-map [0, 1 GiB), checked above; the
    // PVH start_info structures are plain data in RAM; read_unaligned copes
    // with any alignment.
    Some(unsafe { core::ptr::read_unaligned(physical as *const T) })
}

/// The Rust side of PVH entry, called by the trampoline on the boot stack.
#[unsafe(no_mangle)]
extern "C" fn pvh_main(start_info_physical: u64) -> ! {
    let entry_tsc = super::cpu::read_tsc();
    let mut info = BootInfo::new(BootPath::Pvh, KERNEL_PHYSICAL_START, 0);
    info.entry_tsc = entry_tsc;
    let problem = parse_start_info(start_info_physical, &mut info).err();
    crate::kernel_main(info, problem)
}

/// Copies what start_info says into `info` (start_info, its memory map and
/// the command line sit in memory the map calls usable).
fn parse_start_info(start_info_physical: u64, info: &mut BootInfo) -> Result<(), &'static str> {
    let start: StartInfo =
        read_physical(start_info_physical).ok_or("start_info is outside the first GiB")?;
    if start.magic != START_INFO_MAGIC {
        return Err("start_info has a bad magic number");
    }
    if start.rsdp_physical != 0 {
        info.rsdp_physical = Some(start.rsdp_physical);
    }
    if start.command_line_physical != 0 {
        let mut bytes = [0u8; crate::boot_info::MAX_COMMAND_LINE_BYTES];
        let mut len_bytes = 0;
        while len_bytes < bytes.len() {
            let Some(byte) = read_physical::<u8>(start.command_line_physical + len_bytes as u64)
            else {
                break;
            };
            if byte == 0 {
                break;
            }
            bytes[len_bytes] = byte;
            len_bytes += 1;
        }
        let text = core::str::from_utf8(&bytes[..len_bytes]).unwrap_or("");
        info.set_command_line(text);
    }
    if start.version < 1 || start.memory_map_entries == 0 {
        return Err("start_info has no memory map (version 0)");
    }
    let entry_size = core::mem::size_of::<MemoryMapEntry>() as u64;
    for index in 0..u64::from(start.memory_map_entries) {
        let entry: MemoryMapEntry = read_physical(start.memory_map_physical + index * entry_size)
            .ok_or("the memory map is outside the first GiB")?;
        let kind = match entry.kind {
            1 => RegionKind::Usable,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Bad,
            _ => RegionKind::Reserved,
        };
        let region = MemoryRegion {
            start: entry.address,
            length_bytes: entry.size_bytes,
            kind,
        };
        if !info.push_region(region) {
            return Err("the memory map has more entries than the kernel keeps");
        }
    }
    Ok(())
}

//! The GDT and TSS, with a separate (IST) stack for double faults.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot of the double-fault stack, so that a kernel stack overflow (the
/// usual cause of a double fault) can still be reported.
pub const DOUBLE_FAULT_IST_INDEX: u16 = 0;

/// IST slot of the page-fault stack: a fault on a broken stack must not turn
/// into a triple fault.
pub const PAGE_FAULT_IST_INDEX: u16 = 1;

const IST_STACK_BYTES: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; IST_STACK_BYTES]);

// Written only by the CPU, through the TSS; Rust code never reads them.
static mut DOUBLE_FAULT_STACK: Stack = Stack([0; IST_STACK_BYTES]);
static mut PAGE_FAULT_STACK: Stack = Stack([0; IST_STACK_BYTES]);

struct Selectors {
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

/// The top of an IST stack (stacks grow down). Only the address is taken;
/// the 16-byte alignment keeps the ABI's stack alignment in handlers.
fn stack_top(stack: *const Stack) -> VirtAddr {
    VirtAddr::from_ptr(stack) + IST_STACK_BYTES as u64
}

/// Loads the GDT, reloads the segment registers and loads the TSS.
pub fn init() {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST_INDEX)] =
            stack_top(&raw const DOUBLE_FAULT_STACK);
        tss.interrupt_stack_table[usize::from(PAGE_FAULT_IST_INDEX)] =
            stack_top(&raw const PAGE_FAULT_STACK);
        tss
    });
    let (gdt, selectors) = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { code, data, tss })
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which is
    // 'static; code and data are flat ring-0 segments like the boot ones.
    unsafe {
        CS::set_reg(selectors.code);
        SS::set_reg(selectors.data);
        DS::set_reg(selectors.data);
        ES::set_reg(selectors.data);
        load_tss(selectors.tss);
    }
}

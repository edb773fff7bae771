//! The IDT: fatal exception reports, and the timer interrupt through the PIC.
//!
//! Vectors without an error code use `extern "x86-interrupt"`: LLVM saves
//! every register a handler uses, XMM registers included, because the kernel's
//! target enables SSE. It does not save MXCSR, so no such handler may change
//! it (none does).
//!
//! Vectors with an error code (page fault, double fault, #GP...) enter through
//! the assembly stubs in `exception_entry`, because LLVM's x86-interrupt code
//! for them assumes the stack is misaligned by 8 on entry as after a call,
//! while the CPU pushes 48 bytes onto a 16-byte aligned stack (Intel SDM vol. 3,
//! 6.14.2): SSE spills then fault with #GP. The stubs align the stack, save
//! all caller-saved state with FXSAVE (XMM0-15 and MXCSR) and call Rust.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pic8259::ChainedPics;
use spin::{LazyLock, Mutex};
use x86_64::VirtAddr;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame};

use super::exception_entry::{self as entry, ErrorCodeFrame};
use super::gdt;

/// First vector of the remapped legacy PICs (below 32 are CPU exceptions).
pub const PIC_VECTOR_BASE: u8 = 32;
/// IRQ 0, the PIT.
pub const TIMER_VECTOR: u8 = PIC_VECTOR_BASE;

static PICS: Mutex<ChainedPics> =
    // SAFETY: 32..48 are free vectors (exceptions end at 31), and the PICs are
    // the standard pair at ports 0x20/0xa0 on every PC QEMU emulates.
    Mutex::new(unsafe { ChainedPics::new(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8) });

static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);

/// When set, the timer handler does floating-point work of its own, so that
/// a test can show that interrupted SSE code keeps its registers.
static TIMER_USES_SSE: AtomicBool = AtomicBool::new(false);

static IDT: LazyLock<InterruptDescriptorTable> = LazyLock::new(|| {
    let mut idt = InterruptDescriptorTable::new();
    idt.divide_error.set_handler_fn(divide_error);
    idt.debug.set_handler_fn(debug);
    idt.non_maskable_interrupt
        .set_handler_fn(non_maskable_interrupt);
    idt.breakpoint.set_handler_fn(breakpoint);
    idt.overflow.set_handler_fn(overflow);
    idt.bound_range_exceeded
        .set_handler_fn(bound_range_exceeded);
    idt.invalid_opcode.set_handler_fn(invalid_opcode);
    idt.device_not_available
        .set_handler_fn(device_not_available);
    idt.x87_floating_point.set_handler_fn(x87_floating_point);
    idt.simd_floating_point.set_handler_fn(simd_floating_point);
    idt.virtualization.set_handler_fn(virtualization);
    idt.machine_check.set_handler_fn(machine_check);
    let stub = |entry: extern "C" fn()| VirtAddr::new(entry as usize as u64);
    // SAFETY: each stub is an interrupt entry for a vector that pushes an
    // error code, which is what it expects (exception_entry). Both IST indices
    // name stacks that gdt::init put in the TSS, used by no other vector.
    unsafe {
        idt.invalid_tss
            .set_handler_addr(stub(entry::invalid_tss_entry));
        idt.segment_not_present
            .set_handler_addr(stub(entry::segment_not_present_entry));
        idt.stack_segment_fault
            .set_handler_addr(stub(entry::stack_segment_fault_entry));
        idt.general_protection_fault
            .set_handler_addr(stub(entry::general_protection_fault_entry));
        idt.alignment_check
            .set_handler_addr(stub(entry::alignment_check_entry));
        idt.double_fault
            .set_handler_addr(stub(entry::double_fault_entry))
            .set_stack_index(gdt::DOUBLE_FAULT_IST_INDEX);
        idt.page_fault
            .set_handler_addr(stub(entry::page_fault_entry))
            .set_stack_index(gdt::PAGE_FAULT_IST_INDEX);
    }
    idt[TIMER_VECTOR].set_handler_fn(timer);
    idt
});

/// Loads the IDT and remaps the PICs (all IRQs masked but the timer).
/// Interrupts stay disabled; `enable` turns them on.
pub fn init() {
    IDT.load();
    let mut pics = PICS.lock();
    // SAFETY: initialising the 8259s only reprograms them; interrupts are
    // still disabled, so no IRQ arrives half-way.
    unsafe {
        pics.initialize();
        // Only IRQ 0 (timer): 0xfe on the primary, all of the secondary masked.
        pics.write_masks(0xfe, 0xff);
    }
}

/// Enables interrupts on this CPU.
pub fn enable() {
    x86_64::instructions::interrupts::enable();
}

/// Timer interrupts since boot.
pub fn timer_ticks() -> u64 {
    TIMER_TICKS.load(Ordering::Relaxed)
}

/// Makes the timer handler use SSE registers (for the SSE self-test).
pub fn set_timer_uses_sse(uses_sse: bool) {
    TIMER_USES_SSE.store(uses_sse, Ordering::SeqCst);
}

extern "x86-interrupt" fn timer(_frame: InterruptStackFrame) {
    TIMER_TICKS.fetch_add(1, Ordering::Relaxed);
    if TIMER_USES_SSE.load(Ordering::Relaxed) {
        clobber_sse_registers();
    }
    // SAFETY: this is the handler of the PICs' timer vector, so an EOI is due.
    // The lock is only ever taken elsewhere with interrupts off.
    unsafe { PICS.lock().notify_end_of_interrupt(TIMER_VECTOR) };
}

/// Floating-point work that occupies many XMM registers.
#[inline(never)]
fn clobber_sse_registers() {
    let mut values = [0.0f64; 16];
    for (index, value) in values.iter_mut().enumerate() {
        *value = core::hint::black_box(index as f64 * 1.618_033_988_75);
    }
    for _ in 0..8 {
        for value in values.iter_mut() {
            *value = *value * 0.999_999 + 0.5;
        }
    }
    core::hint::black_box(values);
}

/// Reports a fatal exception and stops QEMU with the failure status.
fn fatal(
    name: &str,
    vector: u8,
    error_code: Option<u64>,
    instruction_pointer: u64,
    stack_pointer: u64,
) -> ! {
    let mut report = crate::drivers::serial::EmergencyWriter::new();
    use core::fmt::Write;
    let _ = write!(report, "\nEXCEPTION: {name} (vector {vector})");
    if let Some(code) = error_code {
        let _ = write!(report, ", error code {code:#x}");
    }
    let _ = write!(report, ", RIP {instruction_pointer:#x}");
    if vector == 14 {
        let address = Cr2::read_raw();
        let _ = write!(report, ", CR2 {address:#x}");
    }
    let _ = writeln!(
        report,
        ", RSP {stack_pointer:#x}\namber: stopped by a fatal exception"
    );
    super::qemu::exit_failure();
    super::cpu::halt_forever()
}

macro_rules! fatal_handlers {
    ($($handler:ident, $vector:literal, $name:literal;)*) => {
        $(
            extern "x86-interrupt" fn $handler(frame: InterruptStackFrame) {
                fatal(
                    $name,
                    $vector,
                    None,
                    frame.instruction_pointer.as_u64(),
                    frame.stack_pointer.as_u64(),
                )
            }
        )*
    };
}

fatal_handlers! {
    divide_error, 0, "divide error";
    debug, 1, "debug";
    non_maskable_interrupt, 2, "non-maskable interrupt";
    breakpoint, 3, "breakpoint";
    overflow, 4, "overflow";
    bound_range_exceeded, 5, "bound range exceeded";
    invalid_opcode, 6, "invalid opcode";
    device_not_available, 7, "device not available";
    x87_floating_point, 16, "x87 floating point";
    simd_floating_point, 19, "SIMD floating point";
    virtualization, 20, "virtualization";
}

/// Called by the exception_entry stubs with the CPU's frame and the vector.
pub extern "C" fn exception_with_error_code(frame: &ErrorCodeFrame, vector: u64) {
    if vector == 14 && crate::memory::windows::handle_page_fault(Cr2::read_raw(), frame.error_code)
    {
        return; // a domain window's page is mapped now: the access goes on
    }
    let name = match vector {
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        17 => "alignment check",
        _ => "unexpected exception",
    };
    fatal(
        name,
        vector as u8,
        Some(frame.error_code),
        frame.instruction_pointer,
        frame.stack_pointer,
    )
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    fatal(
        "machine check",
        18,
        None,
        frame.instruction_pointer.as_u64(),
        frame.stack_pointer.as_u64(),
    )
}

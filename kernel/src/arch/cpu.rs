//! CPU helpers: the time stamp counter, halting, and checks of the SSE set-up.

use x86_64::instructions::{hlt, interrupts};
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// Reads the time stamp counter.
pub fn read_tsc() -> u64 {
    // SAFETY: RDTSC has no side effects; every x86_64 CPU has it and CR4.TSD
    // is clear in ring 0 anyway.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stops this CPU for good with interrupts off: the end of every fatal path.
pub fn halt_forever() -> ! {
    interrupts::disable();
    loop {
        hlt();
    }
}

/// Waits for the next interrupt with interrupts enabled, atomically: an
/// interrupt arriving between the caller's last check and here still wakes it.
pub fn wait_for_interrupt() {
    interrupts::enable_and_hlt();
}

/// MXCSR's value at reset: all exceptions masked, round to nearest.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// Checks what the boot trampolines set up before any Rust code ran (the
/// kernel's target uses SSE registers in ordinary code, ARCHITECTURE.md,
/// "The kernel's target"):
/// CR0.EM and CR0.TS clear, CR0.MP set, CR4.OSFXSR and CR4.OSXMMEXCPT set.
/// Returns a description of what is wrong, if anything.
pub fn check_sse_setup() -> Result<(), &'static str> {
    let cr0 = Cr0::read();
    let cr4 = Cr4::read();
    if cr0.contains(Cr0Flags::EMULATE_COPROCESSOR) {
        return Err("CR0.EM is set: SSE instructions would fault");
    }
    if cr0.contains(Cr0Flags::TASK_SWITCHED) {
        return Err("CR0.TS is set: the first SSE instruction would fault");
    }
    if !cr0.contains(Cr0Flags::MONITOR_COPROCESSOR) {
        return Err("CR0.MP is clear");
    }
    if !cr4.contains(Cr4Flags::OSFXSR) {
        return Err("CR4.OSFXSR is clear: SSE is disabled");
    }
    if !cr4.contains(Cr4Flags::OSXMMEXCPT_ENABLE) {
        return Err("CR4.OSXMMEXCPT is clear");
    }
    let mxcsr = read_mxcsr();
    if mxcsr & 0xffc0 != MXCSR_DEFAULT & 0xffc0 {
        return Err("MXCSR is not at its default (exceptions masked, round to nearest)");
    }
    Ok(())
}

/// Reads MXCSR, the SSE control and status register.
pub fn read_mxcsr() -> u32 {
    let mut value: u32 = 0;
    // SAFETY: STMXCSR only stores the register into the local; SSE is enabled
    // by the boot trampoline before any Rust code runs.
    unsafe {
        core::arch::asm!(
            "stmxcsr [{}]",
            in(reg) &mut value,
            options(nostack, preserves_flags)
        );
    }
    value
}

/// A random number from RDRAND, when the CPU has it and it delivers.
pub fn hardware_random_u64() -> Option<u64> {
    // CPUID leaf 1, ECX bit 30: RDRAND.
    let has_rdrand = core::arch::x86_64::__cpuid(1).ecx & (1 << 30) != 0;
    if !has_rdrand {
        return None;
    }
    // Intel recommends up to 10 retries when RDRAND reports no value.
    for _ in 0..10 {
        let value: u64;
        let is_valid: u8;
        // SAFETY: the CPU supports RDRAND (checked above); it writes only the
        // two output registers.
        unsafe {
            core::arch::asm!(
                "rdrand {value}",
                "setc {is_valid}",
                value = out(reg) value,
                is_valid = out(reg_byte) is_valid,
                options(nomem, nostack)
            );
        }
        if is_valid != 0 {
            return Some(value);
        }
    }
    None
}

/// Switches to the stack whose top is `stack_top` and calls `entry` there,
/// never to return: the boot stack is abandoned.
pub fn run_on_stack(stack_top: x86_64::VirtAddr, entry: extern "C" fn() -> !) -> ! {
    // SAFETY: `stack_top` is the 16-byte aligned top of a mapped stack that
    // nothing else uses (memory::stacks); `entry` never returns, so nothing
    // ever runs on the old stack's frames again, and the call keeps the
    // ABI's alignment (rsp is 16-aligned before the call).
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            top = in(reg) stack_top.as_u64() & !0xf,
            entry = in(reg) entry,
            options(noreturn)
        )
    }
}

//! Assembly entry stubs for the exceptions that push an error code.
//!
//! LLVM's `x86-interrupt` code for these vectors assumes the stack is
//! misaligned by 8 on entry, as after a call; the CPU instead pushes 48 bytes
//! (SS, RSP, RFLAGS, CS, RIP, error code) onto a 16-byte aligned stack (Intel
//! SDM vol. 3, 6.14.2), so SSE spills in such handlers fault. These stubs save
//! the caller-saved registers, align the stack, save the SSE state (XMM0-15
//! and MXCSR) with FXSAVE, call `interrupts::exception_with_error_code` with
//! the frame and vector, restore everything and return with IRETQ, so a
//! handler may return (the demand-paging page-fault path will).

/// What the CPU pushed for an exception with an error code, lowest first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodeFrame {
    pub error_code: u64,
    pub instruction_pointer: u64,
    pub code_segment: u64,
    pub cpu_flags: u64,
    pub stack_pointer: u64,
    pub stack_segment: u64,
}

macro_rules! error_code_stub {
    ($name:ident, $vector:literal) => {
        #[unsafe(naked)]
        pub extern "C" fn $name() {
            core::arch::naked_asm!(
                "push %rbx",
                "push %rax",
                "push %rcx",
                "push %rdx",
                "push %rsi",
                "push %rdi",
                "push %r8",
                "push %r9",
                "push %r10",
                "push %r11",
                // %rbx (callee-saved, so kept by the Rust call) remembers
                // where the saved registers end.
                "mov %rsp, %rbx",
                "and $-16, %rsp",
                "sub $512, %rsp",
                "fxsave64 (%rsp)",
                // 10 saved registers lie between %rbx and the error code.
                "lea 80(%rbx), %rdi",
                "mov ${vector}, %esi",
                "cld",
                "call {handler}",
                "fxrstor64 (%rsp)",
                "mov %rbx, %rsp",
                "pop %r11",
                "pop %r10",
                "pop %r9",
                "pop %r8",
                "pop %rdi",
                "pop %rsi",
                "pop %rdx",
                "pop %rcx",
                "pop %rax",
                "pop %rbx",
                "add $8, %rsp",
                "iretq",
                vector = const $vector,
                handler = sym super::interrupts::exception_with_error_code,
                options(att_syntax)
            )
        }
    };
}

error_code_stub!(double_fault_entry, 8);
error_code_stub!(invalid_tss_entry, 10);
error_code_stub!(segment_not_present_entry, 11);
error_code_stub!(stack_segment_fault_entry, 12);
error_code_stub!(general_protection_fault_entry, 13);
error_code_stub!(page_fault_entry, 14);
error_code_stub!(alignment_check_entry, 17);

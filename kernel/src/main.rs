#![doc = include_str!("../README.md")]
#![no_std]
#![no_main]
#![feature(abi_x86_interrupt)]
// Unsafe code lives in three modules only, the way Asterinas keeps it in
// ostd: everything else is safe Rust over their interfaces.
#![deny(unsafe_code)]

extern crate alloc;

#[allow(
    unsafe_code,
    reason = "CPU set-up: descriptor tables, port I/O, boot entries"
)]
pub mod arch;
pub mod boot_info;
pub mod console;
pub mod diagnostics;
pub mod domains;
#[allow(unsafe_code, reason = "device registers, DMA buffers and MMIO")]
pub mod drivers;
pub mod logger;
#[allow(
    unsafe_code,
    reason = "page tables, the heap, stacks and domain windows"
)]
pub mod memory;
pub mod migration;
pub mod net;

use core::fmt::Write;

use boot_info::BootInfo;

/// Everything after the boot-path-specific entry (arch::pvh, arch::limine).
/// `boot_problem` is what the entry could not read; it is reported once the
/// console works.
pub fn kernel_main(info: BootInfo, boot_problem: Option<&'static str>) -> ! {
    drivers::serial::init();
    let level = info
        .argument("log")
        .and_then(logger::parse_level)
        .unwrap_or(log::LevelFilter::Info);
    logger::init(level);
    arch::timer::init(info.entry_tsc);
    if let Some(problem) = boot_problem {
        panic!("{} boot: {problem}", info.path.name());
    }
    if let Err(problem) = arch::cpu::check_sse_setup() {
        panic!("SSE set-up: {problem}");
    }
    arch::gdt::init();
    arch::interrupts::init();
    if let Err(error) = memory::init(&info) {
        panic!("memory set-up: {error}");
    }
    // The boot stacks are small and have no guard page; wasmi's compiler and
    // persist want more. From here the kernel runs on a guarded stack.
    let stack_top = match memory::stacks::allocate(KERNEL_STACK_BYTES) {
        Ok(top) => top,
        Err(error) => panic!("kernel stack: {error}"),
    };
    BOOT_INFO.call_once(|| info);
    arch::cpu::run_on_stack(stack_top, kernel_main_on_kernel_stack)
}

/// The kernel's main stack (the boot stack is 64 KiB).
const KERNEL_STACK_BYTES: u64 = 1024 * 1024;

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

extern "C" fn kernel_main_on_kernel_stack() -> ! {
    let Some(info) = BOOT_INFO.get() else {
        panic!("boot information missing after the stack switch");
    };
    arch::interrupts::enable();

    let kernel_init_ms = arch::timer::uptime_ns() / 1_000_000;
    let since_reset_ms = arch::timer::since_reset_ns() / 1_000_000;
    println!(
        "Amber {} (x86_64, {} boot): {} MiB usable RAM, booted in {} ms ({} ms in the kernel)",
        env!("CARGO_PKG_VERSION"),
        info.path.name(),
        info.usable_bytes() / (1024 * 1024),
        since_reset_ms,
        kernel_init_ms,
    );
    log::info!(
        "TSC {} MHz, kernel image {} KiB at {:#x}, command line '{}'",
        arch::timer::tsc_hz() / 1_000_000,
        memory::frames::kernel_image_bytes() / 1024,
        info.kernel_physical_start,
        info.command_line()
    );
    if let Some(name) = info.argument("test") {
        diagnostics::selftest::run(name, info);
    }
    let checkpoint_ms = info
        .argument("checkpoint-ms")
        .and_then(|text| text.parse().ok())
        .filter(|&milliseconds: &u64| milliseconds > 0)
        .unwrap_or(domains::DEFAULT_CHECKPOINT_MS);
    if info.argument("disk.test_skip_flush") == Some("1") {
        drivers::virtio_blk::skip_flushes_for_tests();
    }
    net::init(info);
    if info.argument("test") == Some("tcp-echo") {
        diagnostics::tcp_echo::start();
    }
    let mut domains = domains::Domains::load(checkpoint_ms);
    run(info, &mut domains)
}

/// The main loop: console input, one scheduler round, one network poll, and
/// `hlt` until the next timer tick when no domain can run and the network
/// had nothing to do.
fn run(info: &BootInfo, domains: &mut domains::Domains) -> ! {
    let mut console = console::Console::new();
    let mut migrations = migration::Migrations::new();
    console.prompt();
    loop {
        if let Some(line) = console.poll() {
            let mut context = console::Context {
                info,
                domains,
                migrations: &mut migrations,
            };
            console::execute(&mut context, &line);
            console.prompt();
        }
        let is_runnable = domains.run_round();
        let is_network_busy = net::poll() | diagnostics::tcp_echo::poll();
        let is_migrating = migrations.poll(domains);
        if !is_runnable && !is_network_busy && !is_migrating {
            arch::cpu::wait_for_interrupt();
        }
    }
}

#[panic_handler]
fn panic(panic_info: &core::panic::PanicInfo<'_>) -> ! {
    let mut report = drivers::serial::EmergencyWriter::new();
    let _ = write!(report, "\nPANIC: {}", panic_info.message());
    if let Some(location) = panic_info.location() {
        let _ = write!(
            report,
            " at {}:{}:{}",
            location.file(),
            location.line(),
            location.column()
        );
    }
    let _ = writeln!(report, "\namber: stopped by a panic");
    arch::qemu::exit_failure();
    arch::cpu::halt_forever()
}

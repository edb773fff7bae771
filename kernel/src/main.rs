#![doc = include_str!("../README.md")]
#![no_std]
#![no_main]
#![feature(abi_x86_interrupt)]

extern crate alloc;

pub mod arch;
pub mod boot_info;
pub mod console;
pub mod drivers;
pub mod logger;
pub mod memory;
pub mod selftest;

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
        selftest::run(name, &info);
    }
    console::run(&info)
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

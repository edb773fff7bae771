//! Boot-time self-tests selected with `test=NAME` on the kernel command line.
//!
//! `boot` powers off right after booting; `page-fault` and `panic` show that failures are reported and stop QEMU
//! with the failure status; `sse` shows that interrupts leave SSE state intact;
//! `disk` writes, flushes and reads back the last block of the first disk;
//! `tcp-echo` echoes TCP on port 7 as a fake domain (diagnostics::tcp_echo).

use crate::arch::{cpu, interrupts};

/// Runs the self-test `name`; returns when it passed (or for an unknown name,
/// after saying so), so the console comes up afterwards.
pub fn run(name: &str, info: &crate::boot_info::BootInfo) {
    match name {
        "page-fault" => {
            log::info!("self-test: reading an unmapped address");
            crate::memory::provoke_page_fault(0xdead_b000)
        }
        "panic" => panic!("self-test panic requested on the command line"),
        // Used by `cargo xtask run` to find out whether KVM works here.
        "boot" => {
            log::info!("self-test boot: booted, powering off");
            let error = crate::arch::acpi::power_off(info.rsdp_physical);
            panic!("self-test boot: power-off failed: {error}");
        }
        "sse" => match sse_survives_interrupts() {
            Ok(report) => log::info!(
                "self-test sse: passed ({} timer interrupts over {} runs)",
                report.interrupts,
                report.runs
            ),
            Err(problem) => panic!("self-test sse failed: {problem}"),
        },
        "disk" => match disk_round_trip() {
            Ok(report) => log::info!(
                "self-test disk: passed ({} disks, first has {} blocks)",
                report.disks,
                report.first_blocks
            ),
            Err(problem) => panic!("self-test disk failed: {problem}"),
        },
        // Started by main once the network is up (diagnostics::tcp_echo).
        "tcp-echo" => {}
        other => log::warn!(
            "unknown self-test '{other}' (known: boot, page-fault, panic, sse, disk, tcp-echo)"
        ),
    }
}

struct SseReport {
    interrupts: u64,
    runs: u64,
}

/// Floating-point work that keeps eight accumulators live in XMM registers.
#[inline(never)]
fn sse_workload(iterations: u32) -> [f64; 8] {
    let mut values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0f64];
    for step in 0..iterations {
        let step = f64::from(step);
        for (index, value) in values.iter_mut().enumerate() {
            *value = (*value * 1.000_000_1 + step * 0.25) / (1.0 + index as f64 * 1e-9);
        }
    }
    values
}

/// Runs the workload with interrupts off for a reference, then again and again
/// while the timer interrupt (which uses SSE itself) fires at least 50 times;
/// every run must give bit-identical results and leave MXCSR unchanged.
fn sse_survives_interrupts() -> Result<SseReport, &'static str> {
    const ITERATIONS: u32 = 20_000;
    const MIN_INTERRUPTS: u64 = 50;
    let mxcsr_before = cpu::read_mxcsr();
    let reference = x86_64::instructions::interrupts::without_interrupts(|| {
        core::hint::black_box(sse_workload(core::hint::black_box(ITERATIONS)))
    });
    interrupts::set_timer_uses_sse(true);
    let first_tick = interrupts::timer_ticks();
    let mut runs = 0;
    let mut outcome = Ok(());
    while interrupts::timer_ticks() - first_tick < MIN_INTERRUPTS {
        let result = core::hint::black_box(sse_workload(core::hint::black_box(ITERATIONS)));
        runs += 1;
        let same = result
            .iter()
            .zip(reference.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            outcome = Err("an interrupted run gave different floating-point results");
            break;
        }
    }
    interrupts::set_timer_uses_sse(false);
    outcome?;
    // Bits 0-5 are sticky exception flags that ordinary arithmetic sets
    // (inexact results); the control bits above them must not change.
    let control_bits = |mxcsr: u32| mxcsr & !0x3f;
    if control_bits(cpu::read_mxcsr()) != control_bits(mxcsr_before) {
        return Err("MXCSR's control bits changed across interrupts");
    }
    Ok(SseReport {
        interrupts: interrupts::timer_ticks() - first_tick,
        runs,
    })
}

struct DiskReport {
    disks: usize,
    first_blocks: u64,
}

/// The bytes the disk self-test writes; tests/tests/disk.rs checks the host
/// file for the same: a title, then byte i = (i * 31 + 7) mod 256.
fn disk_pattern() -> [u8; persist::BLOCK_SIZE] {
    let mut block = [0u8; persist::BLOCK_SIZE];
    for (index, byte) in block.iter_mut().enumerate() {
        *byte = (index * 31 + 7) as u8;
    }
    let title = b"Amber disk self-test block";
    block[..title.len()].copy_from_slice(title);
    block
}

/// Writes the pattern to the last block of the first disk, flushes, reads it
/// back and compares.
fn disk_round_trip() -> Result<DiskReport, alloc::string::String> {
    use alloc::format;
    use persist::BlockDevice;

    let mut disks = crate::drivers::virtio_blk::probe_disks();
    let disk_count = disks.len();
    let first = disks.first_mut().ok_or("no disks")?;
    let block_count = first.block_count();
    let last = block_count
        .checked_sub(1)
        .ok_or("the first disk is empty")?;
    let pattern = disk_pattern();
    first
        .write_block(last, &pattern)
        .map_err(|error| format!("writing block {last}: {error}"))?;
    first
        .flush()
        .map_err(|error| format!("flushing: {error}"))?;
    let mut read_back = [0u8; persist::BLOCK_SIZE];
    first
        .read_block(last, &mut read_back)
        .map_err(|error| format!("reading block {last}: {error}"))?;
    if read_back != pattern {
        let offset = read_back
            .iter()
            .zip(pattern.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "block {last} reads back differently from byte {offset} on"
        ));
    }
    Ok(DiskReport {
        disks: disk_count,
        first_blocks: block_count,
    })
}

//! The kernel benchmark's CPU, checkpoint and page-in figures, in QEMU.
//!
//! Each figure comes from a small wasm module booted as the only domain of
//! a machine: it times its own work with `amber.now` and logs
//! `bench-result LABEL NANOSECONDS` lines, so serial latency never enters
//! a figure. Baselines measured in the same run:
//!
//! - CPU: the vm benchmark's loop in the kernel's vm, against the same loop
//!   in plain wasmi without fuel on the host (`vm`'s bench example with
//!   `--plain-cpu-loop`, release build).
//! - checkpoint of one dirty page: `amber.checkpoint` after storing one word,
//!   against the least an atomic commit must do on the same virtio-blk
//!   device: write a block, flush, write another, flush (`diskbench`).
//! - page-in: a domain larger than the machine's free RAM writes one word
//!   per page, then reads them all back, every read faulting its page in from
//!   the image; against 4 KiB sequential reads through the same driver
//!   (`diskbench`). The same domain at several RAM sizes makes the plot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bench::{
    BaselineRecord, Collector, FigureRecord, Goal, Mode, PointRecord, Record, plots,
};
use crate::image::{self, NewArgs};
use crate::machine::Machine;
use crate::qemu::{Accel, Console, QemuConfig};

/// Machine memory for the CPU, checkpoint and diskbench boots.
const MACHINE_MEMORY_MIB: u32 = 256;
const PAGE_BYTES: u64 = 4096;
const MIB: u64 = 1 << 20;

/// How much work each boot does.
#[derive(Debug, Clone, Copy)]
struct Workload {
    /// Timed batches per boot: each is one sample.
    batches: u32,
    cpu_iterations: u64,
    checkpoints_per_batch: u64,
    /// The page-in domain's memory, all of it touched.
    page_in_mib: u64,
    /// Machine sizes for the page-in plot; the first is the figure's.
    page_in_ram_mib: &'static [u32],
    /// Read passes over the page-in domain's memory (one sample each).
    page_in_passes: u32,
    diskbench_mib: u64,
}

const FULL: Workload = Workload {
    batches: 5,
    cpu_iterations: 5_000_000,
    checkpoints_per_batch: 50,
    page_in_mib: 128,
    page_in_ram_mib: &[64, 96, 128, 192, 256],
    page_in_passes: 2,
    diskbench_mib: 64,
};

const QUICK: Workload = Workload {
    batches: 1,
    cpu_iterations: 500_000,
    checkpoints_per_batch: 10,
    page_in_mib: 64,
    page_in_ram_mib: &[64],
    page_in_passes: 1,
    diskbench_mib: 16,
};

/// Writes the decimal digits of an i64 (non-negative) at a memory offset
/// and returns the offset after them; and logs a prefix plus a number.
const REPORTING: &str = r#"
    (func $put_u64 (param $position i32) (param $value i64) (result i32)
        (local $end i32) (local $rest i64)
        (local.set $rest (local.get $value))
        (local.set $end (i32.add (local.get $position) (i32.const 1)))
        (block $counted
            (loop $count
                (local.set $rest (i64.div_u (local.get $rest) (i64.const 10)))
                (br_if $counted (i64.eqz (local.get $rest)))
                (local.set $end (i32.add (local.get $end) (i32.const 1)))
                (br $count)))
        (local.set $position (local.get $end))
        (loop $digit
            (local.set $position (i32.sub (local.get $position) (i32.const 1)))
            (i32.store8 (local.get $position)
                (i32.add (i32.const 48)
                    (i32.wrap_i64 (i64.rem_u (local.get $value) (i64.const 10)))))
            (local.set $value (i64.div_u (local.get $value) (i64.const 10)))
            (br_if $digit (i64.ne (local.get $value) (i64.const 0))))
        (local.get $end))
    (func $report (param $prefix i32) (param $length i32) (param $value i64)
        (call $log (i32.const 3) (local.get $prefix)
            (i32.sub
                (call $put_u64 (i32.add (local.get $prefix) (local.get $length))
                    (local.get $value))
                (local.get $prefix))))
"#;

/// The imports every module uses.
const IMPORTS: &str = r#"
    (import "amber" "now" (func $now (result i64)))
    (import "amber" "log" (func $log (param i32 i32 i32)))
    (import "amber" "checkpoint" (func $checkpoint (result i32)))
"#;

/// The vm benchmark's CPU loop (vm/examples/bench.rs), timed per batch.
fn cpu_module(workload: Workload) -> String {
    let Workload {
        batches,
        cpu_iterations,
        ..
    } = workload;
    format!(
        r#"(module {IMPORTS}
        (import "env" "memory" (memory 1 1))
        (data (i32.const 0) "bench-result cpu ")
        {REPORTING}
        (func (export "_start")
            (local $batch i32) (local $i i64) (local $x i64) (local $y i64) (local $began i64)
            (local.set $x (i64.const 12345))
            (loop $batches
                (local.set $began (call $now))
                (local.set $i (i64.const 0))
                (loop $again
                    (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                                           (i64.const 1442695040888963407)))
                    (local.set $y (i64.xor (local.get $y) (i64.shr_u (local.get $x) (i64.const 29))))
                    (local.set $y (i64.rotl (local.get $y) (i64.const 7)))
                    (local.set $i (i64.add (local.get $i) (i64.const 1)))
                    (br_if $again (i64.lt_u (local.get $i) (i64.const {cpu_iterations}))))
                (i64.store (i32.const 1024) (local.get $y))
                (call $report (i32.const 0) (i32.const 17) (i64.sub (call $now) (local.get $began)))
                (local.set $batch (i32.add (local.get $batch) (i32.const 1)))
                (br_if $batches (i32.lt_u (local.get $batch) (i32.const {batches})))))
        )"#
    )
}

/// One word stored, then `amber.checkpoint`, timed per batch.
fn checkpoint_module(workload: Workload) -> String {
    let Workload {
        batches,
        checkpoints_per_batch,
        ..
    } = workload;
    format!(
        r#"(module {IMPORTS}
        (import "env" "memory" (memory 1 1))
        (data (i32.const 0) "bench-result checkpoint ")
        {REPORTING}
        (func (export "_start")
            (local $batch i32) (local $i i64) (local $began i64)
            ;; The first commit stores the module's pages; time the rest.
            (drop (call $checkpoint))
            (loop $batches
                (local.set $began (call $now))
                (local.set $i (i64.const 0))
                (loop $again
                    (i64.store (i32.const 40000) (local.get $i))
                    (drop (call $checkpoint))
                    (local.set $i (i64.add (local.get $i) (i64.const 1)))
                    (br_if $again (i64.lt_u (local.get $i) (i64.const {checkpoints_per_batch}))))
                (call $report (i32.const 0) (i32.const 24) (i64.sub (call $now) (local.get $began)))
                (local.set $batch (i32.add (local.get $batch) (i32.const 1)))
                (br_if $batches (i32.lt_u (local.get $batch) (i32.const {batches})))))
        )"#
    )
}

/// Writes one word in every 4 KiB page but the first (which holds the
/// report text), then reads them all back `page_in_passes` times, trapping
/// if the sum is wrong.
fn page_in_module(workload: Workload) -> String {
    let wasm_pages = workload.page_in_mib * 16;
    let pages = workload.page_in_mib * MIB / PAGE_BYTES;
    let expected = (pages - 1) * pages / 2;
    let passes = workload.page_in_passes;
    format!(
        r#"(module {IMPORTS}
        (import "env" "memory" (memory {wasm_pages} {wasm_pages}))
        (data (i32.const 0) "bench-result written ")
        (data (i32.const 64) "bench-result read ")
        {REPORTING}
        (func (export "_start")
            (local $page i32) (local $pass i32) (local $sum i64) (local $began i64)
            (local.set $began (call $now))
            (local.set $page (i32.const 1))
            (loop $write
                (i64.store (i32.shl (local.get $page) (i32.const 12))
                    (i64.extend_i32_u (local.get $page)))
                (local.set $page (i32.add (local.get $page) (i32.const 1)))
                (br_if $write (i32.lt_u (local.get $page) (i32.const {pages}))))
            (call $report (i32.const 0) (i32.const 21) (i64.sub (call $now) (local.get $began)))
            (loop $passes
                (local.set $began (call $now))
                (local.set $sum (i64.const 0))
                (local.set $page (i32.const 1))
                (loop $read
                    (local.set $sum (i64.add (local.get $sum)
                        (i64.load (i32.shl (local.get $page) (i32.const 12)))))
                    (local.set $page (i32.add (local.get $page) (i32.const 1)))
                    (br_if $read (i32.lt_u (local.get $page) (i32.const {pages}))))
                (if (i64.ne (local.get $sum) (i64.const {expected})) (then unreachable))
                (call $report (i32.const 64) (i32.const 18) (i64.sub (call $now) (local.get $began)))
                (local.set $pass (i32.add (local.get $pass) (i32.const 1)))
                (br_if $passes (i32.lt_u (local.get $pass) (i32.const {passes})))))
        )"#
    )
}

/// An image of `text` named `name` in `directory`, with room for
/// `memory_mib` of memory written twice over.
fn module_image(directory: &Path, name: &str, text: &str, memory_mib: u64) -> Result<PathBuf> {
    let module = wat::parse_str(text).with_context(|| format!("assembling {name}"))?;
    let wasm = directory.join(format!("{name}.wasm"));
    std::fs::write(&wasm, module).with_context(|| format!("writing {}", wasm.display()))?;
    let output = directory.join(format!("{name}.img"));
    if output.exists() {
        std::fs::remove_file(&output)
            .with_context(|| format!("removing the old {}", output.display()))?;
    }
    image::new(&NewArgs {
        wasm,
        name: name.into(),
        memory_max_mib: None,
        size_mib: Some(memory_mib * 3 + 16),
        args: Vec::new(),
        env: Vec::new(),
        output: Some(output),
        listen: Vec::new(),
        durable_replies: false,
    })
}

/// A spare disk for `diskbench`: its first two blocks zero (so the kernel
/// sees it blank), the rest written with varied bytes, so reads touch real
/// data like a domain image's.
pub(super) fn spare_disk(directory: &Path, mib: u64) -> Result<PathBuf> {
    let path = directory.join("spare.img");
    let mut bytes = vec![0u8; (mib * MIB) as usize];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes[2 * PAGE_BYTES as usize..].chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

pub(super) fn machine_config(
    kernel_elf: &Path,
    disk: &Path,
    accel: Accel,
    memory_mib: u32,
) -> QemuConfig {
    QemuConfig {
        kernel: kernel_elf.to_path_buf(),
        memory_mib,
        append: String::new(),
        accel,
        console: Console::Stdio,
        disks: vec![disk.to_path_buf()],
        disk_options: std::collections::BTreeMap::new(),
        net: None,
        user_net: None,
        cluster_secret: None,
        nbd_disks: Vec::new(),
    }
}

/// The number after `bench-result LABEL ` in `line`.
fn parse_result(line: &str, label: &str) -> Option<u64> {
    let rest = line.split("bench-result ").nth(1)?;
    let mut words = rest.split_whitespace();
    (words.next()? == label)
        .then(|| words.next()?.parse().ok())
        .flatten()
}

/// Boots `disk` and collects `count` results labelled `label`, in
/// nanoseconds; `deadline` bounds each.
fn collect_results(
    config: &QemuConfig,
    label: &str,
    count: u32,
    deadline: Duration,
) -> Result<(Machine, Vec<u64>)> {
    let mut machine = Machine::boot_named("bench", config)?;
    let mut results = Vec::new();
    let pattern = format!("bench-result {label} ");
    for _ in 0..count {
        let line = machine.expect(&pattern, deadline)?;
        let value = parse_result(&line, label).with_context(|| format!("cannot read {line:?}"))?;
        results.push(value);
    }
    Ok((machine, results))
}

/// Parses `paging: N pages read in, ...` from `stats` into N.
fn parse_pages_read_in(line: &str) -> Option<u64> {
    let rest = line.split("paging: ").nth(1)?;
    let mut words = rest.split_whitespace();
    let count = words.next()?.parse().ok()?;
    (words.next()? == "pages" && words.next()? == "read").then_some(count)
}

/// What diskbench printed: read MiB/s and the commit floor in microseconds.
pub(super) fn parse_diskbench(line: &str) -> Option<(f64, f64)> {
    let number_after = |marker: &str| -> Option<f64> {
        line.split(marker)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let kib = number_after(": read ")?;
    let read_us = line
        .split(" requests in ")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let read_us: f64 = read_us.parse().ok()?;
    let floor = number_after("write+flush twice: ")?;
    (read_us > 0.0).then(|| (kib / 1024.0 / (read_us / 1e6), floor))
}

/// Host baseline: plain wasmi's CPU loop rates, in M iterations/s.
fn host_cpu_loop(workload: Workload, mode: Mode) -> Result<Vec<f64>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(crate::paths::workspace_root()).args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "vm",
        "--example",
        "bench",
        "--",
    ]);
    if mode == Mode::Quick {
        command.arg("--quick");
    }
    let iterations = workload.cpu_iterations.to_string();
    command.args(["--plain-cpu-loop", &iterations]);
    let output = command.output().context("running vm's bench example")?;
    if !output.status.success() {
        bail!(
            "vm's bench example failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rates: Vec<f64> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("plain-cpu-loop ")?.split_whitespace();
            let iterations: f64 = words.next()?.parse().ok()?;
            let nanoseconds: f64 = words.next()?.parse().ok()?;
            Some(iterations / nanoseconds * 1000.0)
        })
        .collect();
    if rates.is_empty() {
        bail!("vm's bench example printed no plain-cpu-loop line");
    }
    Ok(rates)
}

pub fn run(
    collector: &mut Collector,
    kernel_elf: &Path,
    directory: &Path,
    accel: Accel,
) -> Result<()> {
    let workload = match collector.mode() {
        Mode::Full => FULL,
        Mode::Quick => QUICK,
    };
    let minute = Duration::from_secs(60);

    collector.step("CPU loop on the host (plain wasmi, release)");
    let host_rates = host_cpu_loop(workload, collector.mode())?;
    collector.step("CPU loop in the kernel");
    let cpu_image = module_image(directory, "bench-cpu", &cpu_module(workload), 1)?;
    let config = machine_config(kernel_elf, &cpu_image, accel, MACHINE_MEMORY_MIB);
    let (_machine, cpu_ns) = collect_results(&config, "cpu", workload.batches, 5 * minute)?;
    let kernel_rates = cpu_ns
        .iter()
        .map(|&ns| workload.cpu_iterations as f64 / ns.max(1) as f64 * 1000.0)
        .collect();
    collector.record(Record::Figure(FigureRecord {
        name: "kernel.cpu_loop".into(),
        title: "CPU-bound loop in the kernel's vm (QEMU) against plain wasmi on the host".into(),
        unit: "M iterations/s".into(),
        amber: kernel_rates,
        baseline: Some(BaselineRecord {
            label: "plain wasmi on the host, no fuel".into(),
            samples: host_rates,
        }),
        goal: Some(Goal::RatioAtLeast(0.95)),
    }))?;

    collector.step("raw virtio-blk figures (diskbench)");
    let spare = spare_disk(directory, workload.diskbench_mib)?;
    let mut raw_read = Vec::new();
    let mut commit_floor = Vec::new();
    {
        let config = machine_config(kernel_elf, &spare, accel, MACHINE_MEMORY_MIB);
        let mut machine = Machine::boot_named("diskbench", &config)?;
        machine.expect_prompt(minute)?;
        for _ in 0..workload.batches {
            machine.send_line(&format!("diskbench {}", workload.diskbench_mib))?;
            let line = machine.expect("diskbench disk", 5 * minute)?;
            let (read, floor) =
                parse_diskbench(&line).with_context(|| format!("cannot read {line:?}"))?;
            raw_read.push(read);
            commit_floor.push(floor);
        }
    }

    collector.step("checkpoints of one dirty page in the kernel");
    let checkpoint_image = module_image(
        directory,
        "bench-checkpoint",
        &checkpoint_module(workload),
        1,
    )?;
    let config = machine_config(kernel_elf, &checkpoint_image, accel, MACHINE_MEMORY_MIB);
    let (_machine, checkpoint_ns) =
        collect_results(&config, "checkpoint", workload.batches, 5 * minute)?;
    let per_checkpoint_us = checkpoint_ns
        .iter()
        .map(|&ns| ns as f64 / workload.checkpoints_per_batch as f64 / 1000.0)
        .collect();
    collector.record(Record::Figure(FigureRecord {
        name: "kernel.checkpoint_one_page".into(),
        title: "checkpoint of one dirty page (guest's amber.checkpoint, virtio-blk)".into(),
        unit: "us".into(),
        amber: per_checkpoint_us,
        baseline: Some(BaselineRecord {
            label: "write + flush, twice, on the same device".into(),
            samples: commit_floor,
        }),
        // Issue 19: what an atomic commit of one page adds over the least
        // any atomic commit must do.
        goal: Some(Goal::RatioAtMost(2.0)),
    }))?;

    let pages = workload.page_in_mib * MIB / PAGE_BYTES;
    let mut figure_samples = None;
    for &ram_mib in workload.page_in_ram_mib {
        collector.step(format!(
            "page-in: {} MiB domain in a {ram_mib} MiB machine",
            workload.page_in_mib
        ));
        let image = module_image(
            directory,
            "bench-page-in",
            &page_in_module(workload),
            workload.page_in_mib,
        )?;
        let config = machine_config(kernel_elf, &image, accel, ram_mib);
        let (mut machine, read_ns) =
            collect_results(&config, "read", workload.page_in_passes, 10 * minute)?;
        machine.send_line("stats")?;
        let line = machine.expect("paging: ", minute)?;
        let read_in =
            parse_pages_read_in(&line).with_context(|| format!("cannot read {line:?}"))?;
        let rates: Vec<f64> = read_ns
            .iter()
            .map(|&ns| (pages * PAGE_BYTES) as f64 / MIB as f64 / (ns.max(1) as f64 / 1e9))
            .collect();
        collector.record(Record::Point(PointRecord {
            plot: plots::PAGE_IN_VS_RAM.into(),
            series: format!("{} MiB domain, read back", workload.page_in_mib),
            x: f64::from(ram_mib),
            samples: rates.clone(),
        }))?;
        if figure_samples.is_none() {
            // The figure's machine must really have paged every read in.
            let reads = pages * u64::from(workload.page_in_passes);
            if read_in < reads * 9 / 10 {
                bail!(
                    "the {ram_mib} MiB machine read in only {read_in} pages for \
                     {reads} page reads: it is not over-committed"
                );
            }
            figure_samples = Some(rates);
        }
    }
    if let Some(samples) = figure_samples {
        collector.record(Record::Figure(FigureRecord {
            name: "kernel.page_in".into(),
            title: format!(
                "page-in throughput, {} MiB domain in a {} MiB machine",
                workload.page_in_mib, workload.page_in_ram_mib[0]
            ),
            unit: "MiB/s".into(),
            amber: samples,
            baseline: Some(BaselineRecord {
                label: "virtio-blk 4 KiB reads, one request each, same driver".into(),
                samples: raw_read,
            }),
            // Issue 19: a fault costs little over the read it needs.
            goal: Some(Goal::RatioAtLeast(0.8)),
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_assemble() {
        for workload in [FULL, QUICK] {
            for text in [
                cpu_module(workload),
                checkpoint_module(workload),
                page_in_module(workload),
            ] {
                wat::parse_str(&text).expect("the module assembles");
            }
        }
    }

    #[test]
    fn reads_results_stats_and_diskbench() {
        let line = "[bench-cpu] bench-result cpu 123456";
        assert_eq!(parse_result(line, "cpu"), Some(123456));
        assert_eq!(parse_result(line, "read"), None);
        assert_eq!(parse_result("[x] bench-result cpu soon", "cpu"), None);
        let stats =
            "paging: 32768 pages read in, 12 zero-filled, 40000 evicted (30000 written out)";
        assert_eq!(parse_pages_read_in(stats), Some(32768));
        let disk = "diskbench disk 0: read 65536 KiB in 4 KiB requests in 812345 us \
                    (78 MiB/s); write+flush twice: 950 us (median of 64)";
        let (read, floor) = parse_diskbench(disk).expect("the diskbench line parses");
        assert!((read - 64.0 / 0.812345).abs() < 0.01);
        assert_eq!(floor, 950.0);
    }
}

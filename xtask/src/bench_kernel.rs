//! `cargo xtask bench kernel`: resume time against memory size, in QEMU.
//!
//! Two domains touch the same 1 MiB (one byte in each of 256 pages) and then
//! sleep: one whose memory may grow to 1 GiB, one limited to 1 MiB. Each is
//! booted once to commit that state, then booted several times more, reading
//! the kernel's `opened in N us` line (domain open: image, module,
//! instantiation, restore). Resume must cost O(pages touched), not O(maximum),
//! so the ratio should stay near 1 (goal: at most 1.2). The baseline is
//! measured in the same run, on the same machine and accelerator.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::image::{self, NewArgs};
use crate::qemu::{Accel, Console, QemuConfig, wait_or_kill};
use crate::{kernel, paths};

const REPETITIONS: usize = 5;

/// A 256 MiB machine with `disk`, its console on stdio.
fn bench_machine(kernel_elf: &Path, disk: &Path, accel: Accel, append: &str) -> QemuConfig {
    QemuConfig {
        kernel: kernel_elf.to_path_buf(),
        memory_mib: 256,
        append: append.into(),
        accel,
        console: Console::Stdio,
        disks: vec![disk.to_path_buf()],
    }
}

/// Boots `disk` and returns the microseconds the kernel took to open its domain.
fn open_time_us(kernel_elf: &Path, disk: &Path, accel: Accel) -> Result<u64> {
    let mut child = bench_machine(kernel_elf, disk, accel, "")
        .command()?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting QEMU")?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(wait) {
            Ok(line) => {
                if let Some(rest) = line.split(" opened in ").nth(1) {
                    let micros = rest.split_whitespace().next().unwrap_or("");
                    break micros
                        .parse::<u64>()
                        .with_context(|| format!("bad line {line:?}"));
                }
            }
            Err(_) => break Err(anyhow::anyhow!("no 'opened in' line within 60 s")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// A domain that touches 1 MiB and sleeps, with memory maximum
/// `maximum_pages` (64 KiB pages), as an image in `directory`.
fn bench_image(directory: &Path, name: &str, maximum_pages: u32) -> Result<PathBuf> {
    let text = format!(
        r#"(module
            (import "amber" "sleep" (func $sleep (param i64)))
            (import "env" "memory" (memory 16 {maximum_pages}))
            (func (export "_start") (local $page i32)
                (loop $touch
                    (i32.store8 (i32.mul (local.get $page) (i32.const 4096)) (i32.const 1))
                    (local.set $page (i32.add (local.get $page) (i32.const 1)))
                    (br_if $touch (i32.lt_u (local.get $page) (i32.const 256))))
                (loop $forever
                    (call $sleep (i64.const 1000000000))
                    (br $forever))))"#
    );
    let module = wat::parse_str(&text).context("assembling the benchmark module")?;
    let wasm = directory.join(format!("{name}.wasm"));
    std::fs::write(&wasm, module)?;
    let output = directory.join(format!("{name}.img"));
    if output.exists() {
        std::fs::remove_file(&output)?;
    }
    image::new(&NewArgs {
        wasm,
        name: name.into(),
        memory_max_mib: None,
        size_mib: Some(64),
        args: Vec::new(),
        env: Vec::new(),
        output: Some(output),
    })
}

/// Boots `disk` once so that its domain runs, commits, and shuts down.
fn first_boot(kernel_elf: &Path, disk: &Path, accel: Accel) -> Result<()> {
    let mut child = bench_machine(kernel_elf, disk, accel, "checkpoint-ms=100")
        .command()?
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting QEMU")?;
    std::thread::sleep(Duration::from_secs(3));
    if let Some(stdin) = child.stdin.as_mut() {
        use std::io::Write;
        let _ = stdin.write_all(b"shutdown\r").and_then(|()| stdin.flush());
    }
    match wait_or_kill(&mut child, Duration::from_secs(30)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("the first boot of {} ended with {status}", disk.display()),
        None => bail!("the first boot of {} did not power off", disk.display()),
    }
}

pub fn run() -> Result<()> {
    let kernel_elf = kernel::build_kernel()?;
    let directory = paths::bench_dir().join("kernel");
    std::fs::create_dir_all(&directory)?;
    let small = bench_image(&directory, "touch-1mib", 16)?;
    let large = bench_image(&directory, "touch-1gib", 16384)?;
    let accel = Accel::default_for_run(&kernel_elf);
    for disk in [&small, &large] {
        first_boot(&kernel_elf, disk, accel)?;
    }
    println!("resume (domain open) time, median of {REPETITIONS} boots, {accel:?}:");
    let mut rows = Vec::new();
    for (label, disk) in [("1 MiB maximum", &small), ("1 GiB maximum", &large)] {
        let mut times = Vec::new();
        for repetition in 0..REPETITIONS {
            eprint!("\r  {label}: boot {}/{REPETITIONS}", repetition + 1);
            times.push(open_time_us(&kernel_elf, disk, accel)?);
        }
        eprintln!();
        let spread = (times.iter().min().copied(), times.iter().max().copied());
        rows.push((label, median(&mut times), spread));
    }
    let baseline = rows[0].1.max(1);
    println!(
        "{:<26} {:>12} {:>20} {:>8}",
        "image", "median us", "min..max us", "ratio"
    );
    for (label, median_us, (min, max)) in &rows {
        println!(
            "{:<26} {:>12} {:>20} {:>8.2}",
            label,
            median_us,
            format!("{}..{}", min.unwrap_or(0), max.unwrap_or(0)),
            *median_us as f64 / baseline as f64
        );
    }
    let ratio = rows[1].1 as f64 / baseline as f64;
    println!(
        "goal: 1 GiB-max resume at most 1.2x the small one: {}",
        if ratio <= 1.2 { "met" } else { "not met" }
    );
    if rows.iter().any(|(_, median_us, _)| *median_us == 0) {
        bail!("a boot reported 0 us: the kernel's clock is not calibrated");
    }
    Ok(())
}

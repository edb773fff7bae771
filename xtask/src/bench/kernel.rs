//! `cargo xtask bench --only kernel`: resume, CPU, checkpoints, page-in (QEMU).
//!
//! This file measures resume; kernel_work.rs the rest.
//!
//! Each domain touches its first N MiB (one byte in each 4 KiB page) and
//! then sleeps. It is booted once to commit that state, then booted several
//! times more, reading the kernel's `opened in N us` line (domain open:
//! image, module, instantiation, restore) and then `ps`, whose stored-pages
//! column shows that every touched page is in the image. Two series:
//!
//! - 1 MiB touched, maximum memory 1 MiB to 4 GiB: resume must cost
//!   O(pages stored), not O(maximum), so the line should stay flat. The
//!   figures compare the 1 GiB and 4 GiB maxima against the 1 MiB domain
//!   (goal: at most 1.2x), measured in the same run on the same machine.
//! - all of memory touched (maximum = touched), 1 to 64 MiB: what resume
//!   costs per stored page. Pages come in on first touch, so restore only
//!   walks the page map; the line shows that walk's cost.
//!
//! Boots are interleaved (every domain once, then every domain again) so a
//! machine that slows down during the run does not favour one size.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{
    BaselineRecord, Collector, FigureRecord, Goal, Mode, PointRecord, Record, plots,
};
use crate::image::{self, NewArgs};
use crate::machine::{BOOT_TIMEOUT, Machine};
use crate::qemu::{Accel, Console, QemuConfig};

const FULL_REPETITIONS: usize = 5;
const MACHINE_MEMORY_MIB: u32 = 256;
const PAGES_PER_MIB: u32 = 256;

/// One resume boot, from QEMU's start to the domain's `ps` row.
const RESUME_TIMEOUT: Duration = Duration::from_secs(120);

/// One benchmark domain: how far its memory may grow and how much of it
/// the first boot touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    maximum_mib: u32,
    touched_mib: u32,
}

impl Shape {
    fn name(self) -> String {
        format!("touch-{}-of-{}mib", self.touched_mib, self.maximum_mib)
    }
}

/// The domains to measure, in quick mode too (each boot costs a second or
/// two): the 1 MiB-touched series by maximum, then the fully touched series
/// (its 1 MiB point is the first domain).
fn shapes() -> Vec<Shape> {
    let one_touched = [1, 16, 256, 1024, 4096].map(|maximum_mib| Shape {
        maximum_mib,
        touched_mib: 1,
    });
    let fully_touched = [4, 16, 64].map(|mib| Shape {
        maximum_mib: mib,
        touched_mib: mib,
    });
    one_touched.into_iter().chain(fully_touched).collect()
}

/// A machine with `disk`, its console on stdio.
fn bench_machine(kernel_elf: &Path, disk: &Path, accel: Accel, append: &str) -> QemuConfig {
    QemuConfig {
        kernel: kernel_elf.to_path_buf(),
        memory_mib: MACHINE_MEMORY_MIB,
        append: append.into(),
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

/// What a resume boot showed.
#[derive(Debug, Clone, Copy)]
struct Resumed {
    open_micros: u64,
    stored_pages: u64,
}

/// Parses `disk 0: NAME opened in 1234 us (...)` into microseconds.
fn parse_opened(line: &str) -> Option<Result<u64>> {
    let rest = line.split(" opened in ").nth(1)?;
    let micros = rest
        .split_whitespace()
        .next()
        .and_then(|word| word.parse().ok());
    Some(micros.with_context(|| format!("cannot read the kernel's line {line:?}")))
}

/// Parses `name`'s line of `ps` (`NAME ID DISK STATUS... RESIDENT STORED
/// COMMITS FUEL`, the status possibly several words) into stored pages.
fn parse_stored(line: &str, name: &str) -> Option<Result<u64>> {
    // The prompt may share the line; log lines start with their uptime.
    let mut rest = line.trim_start();
    while let Some(after_prompt) = rest.strip_prefix("amber>") {
        rest = after_prompt.trim_start();
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.first() != Some(&name) || words.len() < 8 {
        return None;
    }
    let stored = words[words.len() - 3].parse().ok();
    Some(stored.with_context(|| format!("cannot read the stored pages in {line:?}")))
}

/// Boots `disk`, reads how long the kernel took to open its domain, then
/// asks `ps` how many pages its image stores.
fn resume_once(kernel_elf: &Path, disk: &Path, accel: Accel, name: &str) -> Result<Resumed> {
    let deadline = Instant::now() + RESUME_TIMEOUT;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let mut machine = Machine::boot_named(name, &bench_machine(kernel_elf, disk, accel, ""))?;
    let line = machine.expect(" opened in ", remaining())?;
    let open_micros = parse_opened(&line)
        .context("the 'opened in' line went missing")?
        .map_err(|error| machine.failure(&format!("{error:#}")))?;
    // What is typed before the console reads is lost (a `ps` became `s`).
    machine.expect_prompt(remaining())?;
    machine.send_line("ps")?;
    loop {
        // Log lines may name the domain too; only its `ps` row parses.
        let line = machine.expect(name, remaining())?;
        match parse_stored(&line, name) {
            Some(Ok(stored_pages)) => {
                return Ok(Resumed {
                    open_micros,
                    stored_pages,
                });
            }
            Some(Err(error)) => return Err(machine.failure(&format!("{error:#}"))),
            None => {}
        }
    }
}

/// A domain of `shape` as an image in `directory`: it touches its first
/// `touched_mib` and sleeps.
fn bench_image(directory: &Path, shape: Shape) -> Result<PathBuf> {
    let initial_wasm_pages = shape.touched_mib * 16;
    let maximum_wasm_pages = shape.maximum_mib * 16;
    let touched_pages = shape.touched_mib * PAGES_PER_MIB;
    let text = format!(
        r#"(module
            (import "amber" "sleep" (func $sleep (param i64)))
            (import "env" "memory" (memory {initial_wasm_pages} {maximum_wasm_pages}))
            (func (export "_start") (local $page i32)
                (loop $touch
                    (i32.store8 (i32.mul (local.get $page) (i32.const 4096)) (i32.const 1))
                    (local.set $page (i32.add (local.get $page) (i32.const 1)))
                    (br_if $touch (i32.lt_u (local.get $page) (i32.const {touched_pages}))))
                (loop $forever
                    (call $sleep (i64.const 1000000000))
                    (br $forever))))"#
    );
    let module = wat::parse_str(&text).context("assembling the benchmark module")?;
    let name = shape.name();
    let wasm = directory.join(format!("{name}.wasm"));
    std::fs::write(&wasm, module).with_context(|| format!("writing {}", wasm.display()))?;
    let output = directory.join(format!("{name}.img"));
    if output.exists() {
        std::fs::remove_file(&output)
            .with_context(|| format!("removing the old {}", output.display()))?;
    }
    image::new(&NewArgs {
        wasm,
        name,
        memory_max_mib: None,
        // Room for the touched pages, a copy-on-write copy and metadata.
        size_mib: Some(u64::from(shape.touched_mib * 3 + 16).max(64)),
        args: Vec::new(),
        env: Vec::new(),
        output: Some(output),
        listen: Vec::new(),
        durable_replies: false,
    })
}

/// Boots `disk` once so that its domain touches its pages, commits, and
/// shuts down (the shutdown commits every domain).
fn first_boot(kernel_elf: &Path, disk: &Path, accel: Accel, shape: Shape) -> Result<()> {
    let config = bench_machine(kernel_elf, disk, accel, "checkpoint-ms=100");
    let mut machine = Machine::boot_named(&shape.name(), &config)?;
    // A `shutdown` typed before the console reads loses its first letters
    // (on a loaded machine the boot took 2.9 s of the 3 s settle time).
    machine.expect_prompt(BOOT_TIMEOUT)?;
    // Enough for the touch loop under TCG; `resume_once` checks afterwards
    // that every touched page was stored.
    let settle = Duration::from_secs(3 + u64::from(shape.touched_mib) / 16);
    std::thread::sleep(settle);
    machine.send_line("shutdown")?;
    machine.expect_exit(0, Duration::from_secs(60))
}

pub fn run(collector: &mut Collector) -> Result<()> {
    let (kernel_elf, directory, accel) =
        crate::bench::prepare_qemu(collector, "kernel", &format!("{MACHINE_MEMORY_MIB} MiB"))?;
    let shapes = shapes();
    let mut disks = Vec::new();
    for shape in &shapes {
        collector.step(format!("first boot of {}", shape.name()));
        let disk = bench_image(&directory, *shape)?;
        first_boot(&kernel_elf, &disk, accel, *shape)?;
        disks.push(disk);
    }
    let repetitions = match collector.mode() {
        Mode::Full => FULL_REPETITIONS,
        Mode::Quick => 1,
    };
    let mut samples_ms = vec![Vec::new(); shapes.len()];
    for repetition in 0..repetitions {
        for ((shape, disk), samples) in shapes.iter().zip(&disks).zip(&mut samples_ms) {
            collector.step(format!(
                "resume of {}, boot {}/{repetitions}",
                shape.name(),
                repetition + 1
            ));
            let resumed = resume_once(&kernel_elf, disk, accel, &shape.name())?;
            let touched_pages = u64::from(shape.touched_mib * PAGES_PER_MIB);
            if resumed.stored_pages < touched_pages {
                bail!(
                    "{}'s image stores {} pages, fewer than the {touched_pages} \
                     it touched: the first boot did not commit them all",
                    shape.name(),
                    resumed.stored_pages
                );
            }
            if resumed.open_micros == 0 {
                bail!("a boot reported 0 us: the kernel's clock is not calibrated");
            }
            samples.push(resumed.open_micros as f64 / 1000.0);
        }
    }
    report(collector, &shapes, &samples_ms)?;
    crate::bench::kernel_work::run(collector, &kernel_elf, &directory, accel)
}

/// The figures and plot points of the measured `samples_ms` (one list per
/// shape, in the order of `shapes`).
fn report(collector: &mut Collector, shapes: &[Shape], samples_ms: &[Vec<f64>]) -> Result<()> {
    let samples_of = |shape: Shape| {
        shapes
            .iter()
            .position(|candidate| *candidate == shape)
            .map(|index| samples_ms[index].clone())
    };
    let baseline_shape = Shape {
        maximum_mib: 1,
        touched_mib: 1,
    };
    let baseline =
        samples_of(baseline_shape).context("the 1 MiB baseline domain was not measured")?;
    for (maximum_mib, label) in [(1024, "1 GiB"), (4096, "4 GiB")] {
        let Some(amber) = samples_of(Shape {
            maximum_mib,
            touched_mib: 1,
        }) else {
            continue;
        };
        collector.record(Record::Figure(FigureRecord {
            name: format!("kernel.resume_{maximum_mib}mib_max"),
            title: format!("resume of a {label}-max domain, 1 MiB touched"),
            unit: "ms".into(),
            amber,
            baseline: Some(BaselineRecord {
                label: "1 MiB-max domain, same 1 MiB touched".into(),
                samples: baseline.clone(),
            }),
            goal: Some(Goal::RatioAtMost(1.2)),
        }))?;
    }
    for (shape, samples) in shapes.iter().zip(samples_ms) {
        let series = if shape.touched_mib == 1 {
            "1 MiB touched"
        } else {
            "all of memory touched"
        };
        collector.record(Record::Point(PointRecord {
            plot: plots::RESUME_VS_SIZE.into(),
            series: series.into(),
            x: f64::from(shape.maximum_mib),
            samples: samples.clone(),
        }))?;
        if *shape == baseline_shape {
            // The 1 MiB domain is also the first point of the full series.
            collector.record(Record::Point(PointRecord {
                plot: plots::RESUME_VS_SIZE.into(),
                series: "all of memory touched".into(),
                x: 1.0,
                samples: samples.clone(),
            }))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_open_line() {
        let line = "[  0.123] INFO disk 0: touch-1-of-1mib opened in 15321 us (0 pages resident)";
        assert_eq!(parse_opened(line).and_then(Result::ok), Some(15321));
        assert!(parse_opened("amber> ").is_none());
        assert!(matches!(parse_opened("x opened in soon"), Some(Err(_))));
    }

    #[test]
    fn reads_the_stored_pages_from_ps() {
        let name = "touch-1-of-1mib";
        let line = "amber> touch-1-of-1mib 0a1b2c3d 0     running                    256     260        1           1234";
        assert_eq!(parse_stored(line, name).and_then(Result::ok), Some(260));
        let trapped = "touch-1-of-1mib 0a1b2c3d 0 trapped: out of bounds 0 260 1 99";
        assert_eq!(parse_stored(trapped, name).and_then(Result::ok), Some(260));
        let header = "NAME ID DISK STATUS RESIDENT STORED COMMITS FUEL";
        assert!(parse_stored(header, name).is_none());
        let log = "[    0.084933] INFO  disk 0: domain touch-1-of-1mib (running)";
        assert!(parse_stored(log, name).is_none());
        let unknown = "touch-1-of-1mib 0a1b2c3d 0 running 256 - 1 1234";
        assert!(matches!(parse_stored(unknown, name), Some(Err(_))));
    }

    #[test]
    fn shapes_hold_the_baseline_and_both_series() {
        let shapes = shapes();
        let one_touched = |maximum_mib| Shape {
            maximum_mib,
            touched_mib: 1,
        };
        assert_eq!(shapes.first(), Some(&one_touched(1)));
        assert!(shapes.contains(&one_touched(1024)));
        assert!(shapes.iter().any(|shape| shape.touched_mib > 1));
    }
}

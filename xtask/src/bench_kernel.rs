//! `cargo xtask bench --only kernel`: resume time against domain size, in QEMU.
//!
//! Each domain touches its first N MiB (one byte in each 4 KiB page) and
//! then sleeps. It is booted once to commit that state, then booted several
//! times more, reading the kernel's `opened in N us (P pages resident)` line
//! (domain open: image, module, instantiation, restore). Two series:
//!
//! - 1 MiB touched, maximum memory 1 MiB to 4 GiB: resume must cost
//!   O(pages stored), not O(maximum), so the line should stay flat. The
//!   figures compare the 1 GiB and 4 GiB maxima against the 1 MiB domain
//!   (goal: at most 1.2x), measured in the same run on the same machine.
//! - all of memory touched (maximum = touched), 1 to 64 MiB: the cost per
//!   stored page, since a restore still copies the stored pages in eagerly.
//!
//! Boots are interleaved (every domain once, then every domain again) so a
//! machine that slows down during the run does not favour one size.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::{
    BaselineRecord, Collector, FigureRecord, Goal, Mode, PointRecord, Record, plots,
};
use crate::image::{self, NewArgs};
use crate::qemu::{Accel, Console, QemuConfig, wait_or_kill};
use crate::{kernel, paths};

const FULL_REPETITIONS: usize = 5;
const MACHINE_MEMORY_MIB: u32 = 256;
const PAGES_PER_MIB: u32 = 256;

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

/// The domains to measure: the 1 MiB-touched series by maximum, then the
/// fully touched series (its 1 MiB point is the first domain).
fn shapes(mode: Mode) -> Vec<Shape> {
    let (maxima, full): (&[u32], &[u32]) = match mode {
        Mode::Full => (&[1, 16, 256, 1024, 4096], &[4, 16, 64]),
        Mode::Quick => (&[1, 1024], &[4]),
    };
    let one_touched = maxima.iter().map(|&maximum_mib| Shape {
        maximum_mib,
        touched_mib: 1,
    });
    let fully_touched = full.iter().map(|&mib| Shape {
        maximum_mib: mib,
        touched_mib: mib,
    });
    one_touched.chain(fully_touched).collect()
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
    }
}

/// What the kernel said when it opened the domain.
#[derive(Debug, Clone, Copy)]
struct Opened {
    micros: u64,
    resident_pages: u64,
}

/// Parses `disk 0: NAME opened in 1234 us (260 pages resident)`.
fn parse_opened(line: &str) -> Option<Result<Opened>> {
    let rest = line.split(" opened in ").nth(1)?;
    let parse = || -> Option<Opened> {
        let mut words = rest.split_whitespace();
        let micros = words.next()?.parse().ok()?;
        let resident_pages = words.nth(1)?.trim_start_matches('(').parse().ok()?;
        Some(Opened {
            micros,
            resident_pages,
        })
    };
    Some(parse().with_context(|| format!("cannot read the kernel's line {line:?}")))
}

/// Boots `disk` and returns what the kernel said when it opened its domain.
fn open_once(kernel_elf: &Path, disk: &Path, accel: Accel) -> Result<Opened> {
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
    let deadline = Instant::now() + Duration::from_secs(120);
    let result = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(wait) {
            Ok(line) => {
                if let Some(opened) = parse_opened(&line) {
                    break opened;
                }
            }
            Err(_) => break Err(anyhow::anyhow!("no 'opened in' line within 120 s")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
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
    })
}

/// Boots `disk` once so that its domain touches its pages, commits, and
/// shuts down (the shutdown commits every domain).
fn first_boot(kernel_elf: &Path, disk: &Path, accel: Accel, shape: Shape) -> Result<()> {
    let mut child = bench_machine(kernel_elf, disk, accel, "checkpoint-ms=100")
        .command()?
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting QEMU")?;
    // Enough for the touch loop under TCG; `open_once` checks afterwards
    // that every touched page was stored.
    let settle = Duration::from_secs(3 + u64::from(shape.touched_mib) / 16);
    std::thread::sleep(settle);
    if let Some(stdin) = child.stdin.as_mut() {
        use std::io::Write;
        let _ = stdin.write_all(b"shutdown\r").and_then(|()| stdin.flush());
    }
    match wait_or_kill(&mut child, Duration::from_secs(60)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("the first boot of {} ended with {status}", disk.display()),
        None => bail!("the first boot of {} did not power off", disk.display()),
    }
}

pub fn run(collector: &mut Collector) -> Result<()> {
    collector.step("building the kernel");
    let kernel_elf = kernel::build_kernel()?;
    let directory = paths::bench_dir().join("kernel");
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    collector.step("probing KVM");
    let accel = Accel::default_for_run(&kernel_elf);
    let accel_name = match accel {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG",
    };
    collector.set_environment(format!(
        "{} {accel_name}, {MACHINE_MEMORY_MIB} MiB",
        collector.environment()
    ));
    let shapes = shapes(collector.mode());
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
            let opened = open_once(&kernel_elf, disk, accel)?;
            let touched_pages = u64::from(shape.touched_mib * PAGES_PER_MIB);
            if opened.resident_pages < touched_pages {
                bail!(
                    "{} resumed with {} pages resident, fewer than the {touched_pages} \
                     it touched: the first boot did not store them all",
                    shape.name(),
                    opened.resident_pages
                );
            }
            if opened.micros == 0 {
                bail!("a boot reported 0 us: the kernel's clock is not calibrated");
            }
            samples.push(opened.micros as f64 / 1000.0);
        }
    }
    report(collector, &shapes, &samples_ms)
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
        let line = "[  0.123] INFO disk 0: touch-1-of-1mib opened in 15321 us (260 pages resident)";
        let opened = parse_opened(line).and_then(Result::ok);
        assert_eq!(
            opened.map(|opened| (opened.micros, opened.resident_pages)),
            Some((15321, 260))
        );
        assert!(parse_opened("amber> ").is_none());
        assert!(matches!(parse_opened("x opened in soon"), Some(Err(_))));
    }

    #[test]
    fn quick_mode_keeps_the_figure_and_both_series() {
        let shapes = shapes(Mode::Quick);
        assert!(shapes.contains(&Shape {
            maximum_mib: 1,
            touched_mib: 1
        }));
        assert!(shapes.contains(&Shape {
            maximum_mib: 1024,
            touched_mib: 1
        }));
        assert!(shapes.iter().any(|shape| shape.touched_mib > 1));
    }
}

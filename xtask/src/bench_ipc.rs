//! `cargo xtask bench --only ipc`: domain round trips against a Linux pipe.
//!
//! Issue 7: an IPC round trip between two domains against a pipe round trip
//! between two Linux processes, in the same run. Two apps do the work:
//! `ping` sends a 64-byte message to `pong` by name, pong sends it back,
//! and ping times batches of round trips with `amber.now` and logs one
//! `bench-result ipc ...` line per batch (apps/ping). Measured:
//!
//! - on the host, in xtask's release-built `bench_ipc_host` example
//!   (`bench_ipc_host.rs`): ping and pong in the vm on in-memory disks and
//!   on image files, each batch alternating with a batch of the baseline,
//!   the same round trips of the same message between two processes over
//!   two pipes; the time spent in commits is measured there too;
//! - in the kernel under QEMU (ping, pong and a spare disk in one
//!   machine), against the same pipe samples, and against `diskbench`'s
//!   floor of a durable write (write + flush, twice) on the same device.
//!
//! Every delivery commits the receiver's mailbox before the sender hears
//! `Ok` (vm `Domain::deliver`), so a round trip holds two commits: the
//! figures say how much of it they are. The goal (at least 10 times faster
//! than the pipe, a ratio of at most 0.1) is set for KVM, so only a figure
//! measured under KVM carries it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bench::{BaselineRecord, Collector, FigureRecord, Goal, Mode, Record};
use crate::guest::Guest;
use crate::image::NewArgs;
use crate::qemu::{Accel, Console, QemuConfig};

/// What ping's batch lines start with (after the console's `[ping] `).
pub const RESULT_PREFIX: &str = "bench-result ipc ";

/// The goal of issue 7: at least 10 times faster than a pipe (under KVM).
const KVM_GOAL: Goal = Goal::RatioAtMost(0.1);

const MACHINE_MEMORY_MIB: u32 = 256;

/// Each domain's image: ping and pong use a few hundred KiB of memory.
const IMAGE_MIB: u64 = 32;

/// How much `diskbench` reads before timing its write-flush floor.
const DISKBENCH_READ_MIB: u64 = 4;

/// Batches of round trips (each a sample) per measurement.
fn batches(mode: Mode) -> usize {
    match mode {
        Mode::Full => 5,
        Mode::Quick => 1,
    }
}

/// One batch as ping logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub round_trips: u64,
    pub message_bytes: usize,
    pub round_trip_median_ns: u64,
    pub round_trip_mean_ns: u64,
}

/// Reads ping's line (`bench-result ipc batch=1 round-trips=100 ...`),
/// wherever it starts in `line`.
pub fn parse_batch(line: &str) -> Option<Batch> {
    let fields = line.split(RESULT_PREFIX).nth(1)?;
    let value = |key: &str| -> Option<u64> {
        fields.split_whitespace().find_map(|field| {
            let (name, value) = field.split_once('=')?;
            (name == key).then(|| value.parse().ok()).flatten()
        })
    };
    let batch = Batch {
        round_trips: value("round-trips")?,
        message_bytes: usize::try_from(value("message-bytes")?).ok()?,
        round_trip_median_ns: value("round-trip-median-ns")?,
        round_trip_mean_ns: value("round-trip-mean-ns")?,
    };
    (batch.round_trips > 0 && batch.message_bytes > 0).then_some(batch)
}

/// The median of `values`, the lower middle one for an even count.
pub fn median_ns(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    match values.len() {
        0 => 0,
        len => values[(len - 1) / 2],
    }
}

/// How the benchmark makes ping's and pong's images.
pub fn image_args(name: &str, wasm: &Path, output: PathBuf) -> NewArgs {
    NewArgs {
        wasm: wasm.to_path_buf(),
        name: name.into(),
        memory_max_mib: None,
        size_mib: Some(IMAGE_MIB),
        args: Vec::new(),
        env: Vec::new(),
        output: Some(output),
    }
}

const PIPE_LABEL: &str = "Linux pipe round trip between two processes, same message and count";

/// A round trip's figure against the pipe's samples, in microseconds.
pub fn round_trip_figure(
    name: String,
    title: String,
    amber_us: Vec<f64>,
    pipe_us: Vec<f64>,
    goal: Option<Goal>,
) -> Record {
    Record::Figure(FigureRecord {
        name,
        title,
        unit: "µs".into(),
        amber: amber_us,
        baseline: Some(BaselineRecord {
            label: PIPE_LABEL.into(),
            samples: pipe_us,
        }),
        goal,
    })
}

/// A part of the round trip against the whole (mean) round trip: the
/// ratio is that part's share.
pub fn share_figure(name: String, title: String, part_us: Vec<f64>, mean_us: Vec<f64>) -> Record {
    Record::Figure(FigureRecord {
        name,
        title,
        unit: "µs".into(),
        amber: part_us,
        baseline: Some(BaselineRecord {
            label: "the whole round trip (mean)".into(),
            samples: mean_us,
        }),
        goal: None,
    })
}

pub fn run(collector: &mut Collector) -> Result<()> {
    let batches = batches(collector.mode());
    collector.step("building ping and pong");
    let wasm = crate::app::build_apps(&["ping", "pong"])?;
    let [ping_wasm, pong_wasm] = [&wasm[0], &wasm[1]];
    let directory = crate::paths::bench_dir().join("ipc");

    collector.step("building the host part (release)");
    let arguments: Vec<OsString> = vec![
        directory.join("host").into(),
        ping_wasm.into(),
        pong_wasm.into(),
        batches.to_string().into(),
    ];
    crate::bench::run_release_example("xtask", "bench_ipc_host", &arguments, collector)?;
    let pipe_us = collector
        .baseline_samples("ipc.host_memory_round_trip")
        .context("the host part measured no pipe round trips")?
        .to_vec();

    collector.set_environment("QEMU");
    let (kernel_elf, directory, accel) =
        crate::bench::prepare_qemu(collector, "ipc", &format!("{MACHINE_MEMORY_MIB} MiB"))?;
    let measured = in_kernel(
        collector,
        &kernel_elf,
        &directory,
        accel,
        ping_wasm,
        pong_wasm,
    )?;
    let goal = match accel {
        Accel::Kvm => Some(KVM_GOAL),
        Accel::Tcg => None,
    };
    collector.record(round_trip_figure(
        "ipc.kernel_round_trip".into(),
        "IPC round trip between two domains in the kernel (the 10x goal is for KVM)".into(),
        measured.median_us.clone(),
        pipe_us,
        goal,
    ))?;
    collector.record(Record::Figure(FigureRecord {
        name: "ipc.kernel_against_commit_floor".into(),
        title: "IPC round trip between two domains in the kernel, against two durable writes"
            .into(),
        unit: "µs".into(),
        amber: measured.median_us,
        baseline: Some(BaselineRecord {
            label: "2 x (write + flush, twice) on the same virtio-blk device: \
                    the least two mailbox commits cost"
                .into(),
            samples: measured.two_commit_floors_us,
        }),
        goal: None,
    }))?;
    Ok(())
}

/// What the kernel measured, in microseconds.
struct KernelSamples {
    median_us: Vec<f64>,
    two_commit_floors_us: Vec<f64>,
}

/// Boots ping, pong and a spare disk; reads `batches` of ping's lines
/// after a warm-up one, then runs `diskbench` as often on the spare disk.
/// The kernel checkpoints every domain every second (its default), and
/// ping commits in the yield after its batch, so its image holds up to a
/// second and a batch of messages when a delivery commits it.
fn in_kernel(
    collector: &mut Collector,
    kernel_elf: &Path,
    directory: &Path,
    accel: Accel,
    ping_wasm: &Path,
    pong_wasm: &Path,
) -> Result<KernelSamples> {
    let batches = batches(collector.mode());
    let minute = Duration::from_secs(60);
    let mut disks = Vec::new();
    for (name, wasm) in [("ping", ping_wasm), ("pong", pong_wasm)] {
        let output = directory.join(format!("{name}.img"));
        if output.exists() {
            std::fs::remove_file(&output)
                .with_context(|| format!("removing the old {}", output.display()))?;
        }
        disks.push(crate::image::new(&image_args(name, wasm, output))?);
    }
    let spare = directory.join("spare.img");
    let file =
        std::fs::File::create(&spare).with_context(|| format!("creating {}", spare.display()))?;
    file.set_len(DISKBENCH_READ_MIB << 20)
        .with_context(|| format!("sizing {}", spare.display()))?;
    disks.push(spare);
    let config = QemuConfig {
        kernel: kernel_elf.to_path_buf(),
        memory_mib: MACHINE_MEMORY_MIB,
        append: String::new(),
        accel,
        console: Console::Stdio,
        disks,
        net: None,
    };
    collector.step("ping and pong in the kernel");
    let mut guest = Guest::boot("ipc", &config)?;
    // The first batch is a warm-up, as on the host: the domains' first
    // commits store their modules and memory.
    guest.expect(RESULT_PREFIX, 5 * minute)?;
    let mut median_us = Vec::new();
    for batch in 1..=batches {
        collector.step(format!(
            "ping and pong in the kernel, batch {batch}/{batches}"
        ));
        let line = guest.expect(RESULT_PREFIX, 5 * minute)?;
        let measured = parse_batch(&line).with_context(|| format!("cannot read {line:?}"))?;
        median_us.push(measured.round_trip_median_ns as f64 / 1000.0);
    }
    let mut two_commit_floors_us = Vec::new();
    for run in 1..=batches {
        collector.step(format!("diskbench {run}/{batches}"));
        guest.send_line(&format!("diskbench {DISKBENCH_READ_MIB}"))?;
        let line = guest.expect("diskbench disk", 5 * minute)?;
        let floor_us =
            parse_commit_floor_us(&line).with_context(|| format!("cannot read {line:?}"))?;
        two_commit_floors_us.push(2.0 * floor_us);
    }
    Ok(KernelSamples {
        median_us,
        two_commit_floors_us,
    })
}

/// The write-flush floor from a `diskbench` line, in microseconds.
fn parse_commit_floor_us(line: &str) -> Option<f64> {
    line.split("write+flush twice: ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pings_line_and_diskbench() {
        let line = "[ping] bench-result ipc batch=3 round-trips=100 message-bytes=64 \
                    round-trip-median-ns=15963979 round-trip-mean-ns=15260919";
        assert_eq!(
            parse_batch(line),
            Some(Batch {
                round_trips: 100,
                message_bytes: 64,
                round_trip_median_ns: 15_963_979,
                round_trip_mean_ns: 15_260_919,
            })
        );
        assert_eq!(parse_batch("[ping] bench-result ipc batch=1"), None);
        assert_eq!(
            parse_batch(
                "bench-result ipc round-trips=0 message-bytes=64 round-trip-median-ns=1 round-trip-mean-ns=1"
            ),
            None
        );
        let disk = "diskbench disk 2: read 4096 KiB in 4 KiB requests in 81234 us \
                    (49 MiB/s); write+flush twice: 950 us (median of 64)";
        assert_eq!(parse_commit_floor_us(disk), Some(950.0));
    }

    #[test]
    fn median_takes_the_lower_middle() {
        assert_eq!(median_ns(&mut [5, 1, 3]), 3);
        assert_eq!(median_ns(&mut [4, 1, 2, 3]), 2);
        assert_eq!(median_ns(&mut []), 0);
    }
}

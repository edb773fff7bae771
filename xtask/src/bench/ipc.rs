//! `cargo xtask bench --only ipc`: domain round trips against a Linux pipe.
//!
//! Issue 7: an IPC round trip between two domains against a pipe round trip
//! between two Linux processes, in the same run. Two apps do the work:
//! `ping` sends a 64-byte message to `pong` by name, pong sends it back,
//! and ping times batches of round trips with `amber.now` and logs one
//! `bench-result ipc ...` line per batch (apps/ping). Measured:
//!
//! - on the host, in xtask's release-built `bench_ipc_host` example
//!   (`bench/ipc_host.rs`): ping and pong in the vm on in-memory disks and
//!   on image files, and the baseline, the same round trips of the same
//!   message between two processes over two pipes. How often the domains
//!   commit and the time their commits take are measured there too.
//! - in the kernel under QEMU (ping, pong and a spare disk in one
//!   machine), twice: with the kernel's periodic checkpoints (every
//!   second), and with a `checkpoint` after every batch instead, as on the
//!   host. Against the same pipe samples, and the second also against
//!   `diskbench`'s floor of one durable commit (write + flush, twice) on
//!   the same device.
//!
//! A delivery writes nothing to disk: the message goes into the receiver's
//! mailbox in memory and the sender keeps a copy in its outbox until the
//! receiver commits (vm `outbox.rs`), which the vm asks of a receiver once
//! its senders keep half an outbox (128 messages) of its messages. So a
//! round trip costs a fraction of a commit, and the figures say how much.
//! The goal (at least 10 times faster than the pipe, a ratio of at most
//! 0.1) is set for KVM, so only the kernel's figure measured under KVM
//! carries it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bench::{BaselineRecord, Collector, FigureRecord, Goal, Mode, Record};
use crate::image::NewArgs;
use crate::machine::Machine;
use crate::qemu::{Accel, Console, QemuConfig};

/// What ping's batch lines start with (after the console's `[ping] `).
pub const RESULT_PREFIX: &str = "bench-result ipc ";

/// The goal of issue 7: at least 10 times faster than a pipe (under KVM).
const KVM_GOAL: Goal = Goal::RatioAtMost(0.1);

const MACHINE_MEMORY_MIB: u32 = 256;

/// Each domain's image: ping and pong use a few hundred KiB of memory.
const IMAGE_MIB: u64 = 32;

/// `checkpoint-ms` for a machine with no periodic checkpoint (a day).
const NO_PERIODIC_CHECKPOINTS_MS: u64 = 86_400_000;

const MINUTE: Duration = Duration::from_secs(60);

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
    /// The batch's time, from before the first send to after the last
    /// echo.
    pub total_ns: u64,
}

impl Batch {
    /// The batch's time per round trip, in microseconds.
    pub fn round_trip_us(&self) -> f64 {
        self.total_ns as f64 / 1000.0 / self.round_trips.max(1) as f64
    }
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
        total_ns: value("total-ns")?,
    };
    (batch.round_trips > 0 && batch.message_bytes > 0).then_some(batch)
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
        listen: Vec::new(),
        durable_replies: false,
    }
}

const PIPE_LABEL: &str =
    "Linux pipe round trip between two processes on one CPU, same message and count";

/// A round trip's figure against the pipe's samples, in microseconds per
/// round trip (each sample a batch's time over its round trips).
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

/// A part of the round trip against the whole round trip, both per round
/// trip of a batch: the ratio is that part's share.
pub fn share_figure(name: String, title: String, part_us: Vec<f64>, whole_us: Vec<f64>) -> Record {
    Record::Figure(FigureRecord {
        name,
        title,
        unit: "µs".into(),
        amber: part_us,
        baseline: Some(BaselineRecord {
            label: "the whole round trip".into(),
            samples: whole_us,
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
    let kernel = Kernel {
        kernel_elf: &kernel_elf,
        directory: &directory,
        accel,
        ping_wasm,
        pong_wasm,
        batches,
    };
    collector.step("ping and pong in the kernel, checkpoints every second");
    let (machine, by_default_us) = kernel.boot(Checkpoints::EverySecond)?;
    drop(machine);
    collector.step("ping and pong in the kernel, a checkpoint after every batch");
    let (mut machine, after_batches_us) = kernel.boot(Checkpoints::AfterEveryBatch)?;
    let mut commit_floors_us = Vec::new();
    for run in 1..=batches {
        collector.step(format!("diskbench {run}/{batches}"));
        machine.send_line(&format!("diskbench {DISKBENCH_READ_MIB}"))?;
        let line = machine.expect("diskbench disk", 5 * MINUTE)?;
        let floor_us =
            parse_commit_floor_us(&line).with_context(|| format!("cannot read {line:?}"))?;
        commit_floors_us.push(floor_us);
    }
    drop(machine);

    let goal = match accel {
        Accel::Kvm => Some(KVM_GOAL),
        Accel::Tcg => None,
    };
    collector.record(round_trip_figure(
        "ipc.kernel_round_trip".into(),
        "IPC round trip between two domains in the kernel (the 10x goal is for KVM)".into(),
        by_default_us,
        pipe_us.clone(),
        goal,
    ))?;
    collector.record(round_trip_figure(
        "ipc.kernel_round_trip_checkpointed".into(),
        "IPC round trip in the kernel, a checkpoint after every batch of round trips".into(),
        after_batches_us.clone(),
        pipe_us,
        None,
    ))?;
    collector.record(Record::Figure(FigureRecord {
        name: "ipc.kernel_against_commit_floor".into(),
        title: "IPC round trip in the kernel, a checkpoint after every batch, against one \
                durable commit"
            .into(),
        unit: "µs".into(),
        amber: after_batches_us,
        baseline: Some(BaselineRecord {
            label: "write + flush, twice, on the same virtio-blk device: the least \
                    one commit costs"
                .into(),
            samples: commit_floors_us,
        }),
        goal: None,
    }))?;
    Ok(())
}

/// When the kernel checkpoints ping and pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    /// Its default: every domain every second.
    EverySecond,
    /// `checkpoint` typed on the console after every batch line, and no
    /// periodic ones: as on the host, every batch starts with (nearly) no
    /// message stored in either image.
    AfterEveryBatch,
}

impl Checkpoints {
    /// Where the images of its machine go, under the benchmark's directory.
    fn directory_name(self) -> &'static str {
        match self {
            Checkpoints::EverySecond => "every-second",
            Checkpoints::AfterEveryBatch => "after-every-batch",
        }
    }
}

/// One machine of ping, pong and a spare disk.
struct Kernel<'a> {
    kernel_elf: &'a Path,
    directory: &'a Path,
    accel: Accel,
    ping_wasm: &'a Path,
    pong_wasm: &'a Path,
    batches: usize,
}

impl Kernel<'_> {
    /// Boots fresh images of ping and pong (and a spare disk for
    /// `diskbench`); returns the machine and the time per round trip of
    /// `batches` batches, after a warm-up one.
    ///
    /// Ping commits only in the yield after a batch (its `recv` never
    /// waits), so with the kernel's default its image holds up to a
    /// second and a batch of messages when a delivery commits it.
    fn boot(&self, checkpoints: Checkpoints) -> Result<(Machine, Vec<f64>)> {
        let directory = self.directory.join(checkpoints.directory_name());
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let mut disks = Vec::new();
        for (name, wasm) in [("ping", self.ping_wasm), ("pong", self.pong_wasm)] {
            let output = directory.join(format!("{name}.img"));
            if output.exists() {
                std::fs::remove_file(&output)
                    .with_context(|| format!("removing the old {}", output.display()))?;
            }
            disks.push(crate::image::new(&image_args(name, wasm, output))?);
        }
        let spare = directory.join("spare.img");
        let file = std::fs::File::create(&spare)
            .with_context(|| format!("creating {}", spare.display()))?;
        file.set_len(DISKBENCH_READ_MIB << 20)
            .with_context(|| format!("sizing {}", spare.display()))?;
        disks.push(spare);
        let append = match checkpoints {
            Checkpoints::EverySecond => String::new(),
            Checkpoints::AfterEveryBatch => format!("checkpoint-ms={NO_PERIODIC_CHECKPOINTS_MS}"),
        };
        let config = QemuConfig {
            kernel: self.kernel_elf.to_path_buf(),
            memory_mib: MACHINE_MEMORY_MIB,
            append,
            accel: self.accel,
            console: Console::Stdio,
            disks,
            disk_options: std::collections::BTreeMap::new(),
            net: None,
            user_net: None,
            cluster_secret: None,
            nbd_disks: Vec::new(),
        };
        let mut machine = Machine::boot_named("ipc", &config)?;
        // The first batch is a warm-up, as on the host: the domains' first
        // commits store their modules and memory.
        let mut round_trip_us = Vec::new();
        for batch in 0..=self.batches {
            let line = machine.expect(RESULT_PREFIX, 5 * MINUTE)?;
            let measured = parse_batch(&line).with_context(|| format!("cannot read {line:?}"))?;
            if batch > 0 {
                round_trip_us.push(measured.round_trip_us());
            }
            if checkpoints == Checkpoints::AfterEveryBatch {
                machine.send_line("checkpoint")?;
            }
        }
        Ok((machine, round_trip_us))
    }
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
                    total-ns=1596397900";
        assert_eq!(
            parse_batch(line),
            Some(Batch {
                round_trips: 100,
                message_bytes: 64,
                total_ns: 1_596_397_900,
            })
        );
        assert_eq!(
            parse_batch(line).map(|batch| batch.round_trip_us()),
            Some(15963.979)
        );
        assert_eq!(parse_batch("[ping] bench-result ipc batch=1"), None);
        assert_eq!(
            parse_batch("bench-result ipc round-trips=0 message-bytes=64 total-ns=1"),
            None
        );
        let disk = "diskbench disk 2: read 4096 KiB in 4 KiB requests in 81234 us \
                    (49 MiB/s); write+flush twice: 950 us (median of 64)";
        assert_eq!(parse_commit_floor_us(disk), Some(950.0));
    }
}

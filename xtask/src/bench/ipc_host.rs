//! The IPC benchmark's host part: ping and pong in the vm, and a Linux pipe.
//!
//! Runs inside xtask's release-built `bench_ipc_host` example (the vm at
//! opt-level 1, as in a dev build of xtask, would not be the vm the other
//! host figures measure), which prints [`Record`]s for `cargo xtask bench`:
//!
//! - ping and pong in one `vm::Scheduler`, as `cargo xtask host run` runs
//!   them, once on in-memory disks (`MemoryDevice`) and once on image files
//!   (`FileDevice`, whose flush is `fdatasync`). Each domain's storage is
//!   wrapped in [`TimedStorage`], which times every commit: with no
//!   periodic checkpoint these are the commits the vm asks of a receiver
//!   once its senders keep half an outbox of its messages, so the report
//!   can say how often they come and how much of a round trip they are.
//! - the baseline: the same number of round trips of the same message
//!   between this process and a child (this program again, `--pipe-echo`)
//!   that echoes every message back, over two pipes (its stdin and stdout),
//!   both on one CPU as the two domains are ([`pin_to_current_cpu`]).
//!
//! The three run one after the other, each for a warm-up batch and then
//! the batches measured; the pipe takes its round trips per batch and
//! message size from ping's lines.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use vm::persist::{BlockDevice, FileDevice, Image, MemoryDevice};
use vm::{
    Commit, DEFAULT_FUEL_SLICE, Domain, DomainRecord, LogLevel, PAGE_BYTES, PagerStorage,
    PersistStorage, Platform, Scheduler, SchedulerEvent, StdPlatform, Storage, Stream, Wake,
};
use vm_host::ProtectedBacking;

use crate::bench::ipc::{self, Batch};
use crate::bench::{Record, record};

/// The longest one batch may take before the benchmark gives up.
const BATCH_DEADLINE: Duration = Duration::from_secs(300);

/// The argument that turns this program into the pipe echo.
pub const PIPE_ECHO_ARGUMENT: &str = "--pipe-echo";

/// Count and time of the deliveries' commits, shared by the two domains
/// of a pair.
#[derive(Debug, Default)]
struct CommitClock {
    commits: AtomicU64,
    nanoseconds: AtomicU64,
}

/// A domain's storage with every commit counted and timed.
struct TimedStorage {
    inner: Box<dyn Storage>,
    clock: Arc<CommitClock>,
}

impl Storage for TimedStorage {
    fn load(&mut self) -> Result<DomainRecord, vm::Error> {
        self.inner.load()
    }

    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), vm::Error> {
        self.inner.read_page(page_index, page)
    }

    fn stored_pages(&mut self) -> Result<Vec<u64>, vm::Error> {
        self.inner.stored_pages()
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), vm::Error> {
        let began = Instant::now();
        let result = self.inner.commit(commit);
        let elapsed_ns = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.clock.commits.fetch_add(1, Ordering::Relaxed);
        self.clock
            .nanoseconds
            .fetch_add(elapsed_ns, Ordering::Relaxed);
        result
    }

    fn stored_page_count(&self) -> Option<u64> {
        self.inner.stored_page_count()
    }

    fn pager(&mut self) -> Option<&mut dyn PagerStorage> {
        self.inner.pager()
    }
}

/// The host platform, keeping ping's `bench-result` lines for the
/// benchmark and printing errors and warnings on stderr.
#[derive(Debug, Default)]
struct CapturingPlatform {
    clock: StdPlatform,
    results: Mutex<VecDeque<String>>,
}

impl Platform for CapturingPlatform {
    fn monotonic_ns(&self) -> u64 {
        self.clock.monotonic_ns()
    }

    fn realtime_ns(&self) -> u64 {
        self.clock.realtime_ns()
    }

    fn fill_random(&self, bytes: &mut [u8]) {
        self.clock.fill_random(bytes);
    }

    fn output(&self, domain_name: &str, stream: Stream, line: &str) {
        if line.starts_with(ipc::RESULT_PREFIX) {
            let mut results = self
                .results
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            results.push_back(line.to_owned());
        } else if matches!(
            stream,
            Stream::Stderr | Stream::Log(LogLevel::Error | LogLevel::Warn)
        ) {
            eprintln!("[{domain_name}] {line}");
        }
    }
}

/// Ping and pong in one scheduler, on one kind of disk.
struct Pair {
    scheduler: Scheduler,
    platform: Arc<CapturingPlatform>,
    commits: Arc<CommitClock>,
}

/// What a pair measured in one batch.
#[derive(Debug, Clone, Copy)]
struct PairBatch {
    batch: Batch,
    commits: u64,
    commit_ns: u64,
}

impl Pair {
    fn new<D: BlockDevice + Send + 'static>(
        engine: &vm::wasmi::Engine,
        devices: [(&str, D); 2],
    ) -> Result<Pair> {
        let platform = Arc::new(CapturingPlatform::default());
        let commits = Arc::new(CommitClock::default());
        let mut scheduler = Scheduler::new(DEFAULT_FUEL_SLICE);
        for (name, device) in devices {
            let image = Image::open(device).map_err(|error| anyhow!("{name}'s image: {error}"))?;
            let storage = TimedStorage {
                inner: Box::new(PersistStorage::new(image)),
                clock: Arc::clone(&commits),
            };
            let domain = Domain::open(
                engine,
                Arc::clone(&platform) as Arc<dyn Platform>,
                Box::new(storage),
                Box::new(ProtectedBacking::new()),
            )
            .with_context(|| format!("opening {name}"))?;
            scheduler
                .add(domain, ())
                .with_context(|| format!("adding {name}"))?;
        }
        Ok(Pair {
            scheduler,
            platform,
            commits,
        })
    }

    /// Asks both domains for a checkpoint, as the host runner and the
    /// kernel do every second; here once per batch for the figure of
    /// round trips with a checkpoint of both after every batch. A domain in
    /// a blocking call commits when it next blocks: pong after the first
    /// round trip of the next batch, ping in the yield after the batch.
    fn request_checkpoints(&mut self) -> Result<()> {
        for (name, result) in self.scheduler.checkpoint_all() {
            result.with_context(|| format!("checkpoint of {name}"))?;
        }
        Ok(())
    }

    /// Runs the pair until ping logs its next batch.
    fn next_batch(&mut self) -> Result<PairBatch> {
        let commits_before = self.commits.commits.load(Ordering::Relaxed);
        let commit_ns_before = self.commits.nanoseconds.load(Ordering::Relaxed);
        let deadline = Instant::now() + BATCH_DEADLINE;
        loop {
            let line = self
                .platform
                .results
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop_front();
            if let Some(line) = line {
                let batch = ipc::parse_batch(&line)
                    .with_context(|| format!("cannot read ping's line {line:?}"))?;
                return Ok(PairBatch {
                    batch,
                    commits: self.commits.commits.load(Ordering::Relaxed) - commits_before,
                    commit_ns: self.commits.nanoseconds.load(Ordering::Relaxed) - commit_ns_before,
                });
            }
            if Instant::now() > deadline {
                bail!("ping logged no batch in {} s", BATCH_DEADLINE.as_secs());
            }
            match self.scheduler.run_round().into_iter().next() {
                None => {}
                Some(SchedulerEvent::Halted { name, status, .. }) => {
                    bail!("{name} ended: {status:?}")
                }
                Some(SchedulerEvent::Paused { name, reason, .. }) => {
                    bail!("{name} paused: {reason}")
                }
            }
            match self.scheduler.next_wake() {
                Some(Wake::Now) => {}
                // Only at the start: ping waits for pong to exist.
                Some(Wake::At(_)) => std::thread::sleep(Duration::from_micros(100)),
                _ => bail!("ping and pong both wait for a message nobody sends"),
            }
        }
    }
}

/// The pipe baseline: a child that echoes what it reads.
struct PipeEcho {
    child: Child,
    to_child: ChildStdin,
    from_child: ChildStdout,
}

impl PipeEcho {
    /// Starts the echo on `cpu` (this process runs there already).
    fn start(message_bytes: usize, cpu: u32) -> Result<PipeEcho> {
        let program = std::env::current_exe().context("finding this program to re-run it")?;
        let mut child = Command::new("taskset")
            .args(["--cpu-list", &cpu.to_string()])
            .arg(program)
            .args([PIPE_ECHO_ARGUMENT, &message_bytes.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the pipe echo")?;
        let (Some(to_child), Some(from_child)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the pipe echo has no pipes");
        };
        Ok(PipeEcho {
            child,
            to_child,
            from_child,
        })
    }

    /// Times `round_trips` round trips of `message_bytes`, in nanoseconds.
    fn batch(&mut self, round_trips: u64, message_bytes: usize) -> Result<u64> {
        let mut message = vec![0u8; message_bytes];
        let mut reply = vec![0u8; message_bytes];
        let began = Instant::now();
        for sequence in 0..round_trips {
            for (index, byte) in message.iter_mut().enumerate() {
                *byte = (sequence as u8).wrapping_add(index as u8);
            }
            self.to_child
                .write_all(&message)
                .context("writing to the pipe echo")?;
            self.from_child
                .read_exact(&mut reply)
                .context("reading from the pipe echo")?;
            if reply != message {
                bail!("the pipe echo answered something else than message {sequence}");
            }
        }
        Ok(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

impl Drop for PipeEcho {
    fn drop(&mut self) {
        // The child ends at end of input; kill it in case it does not.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins this process to the CPU it runs on now and returns it, with
/// util-linux's `taskset`: the two domains share one CPU (one scheduler
/// thread here, and the kernel runs on one), so the pipe's two processes
/// get one too. Linux would otherwise put them on one CPU in some runs and
/// on two in others, and a round trip across CPUs costs several times more.
fn pin_to_current_cpu() -> Result<u32> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // Field 39, "processor"; the fields after the command name (which may
    // hold spaces) start after its closing parenthesis, at field 3.
    let cpu: u32 = stat
        .rsplit_once(')')
        .and_then(|(_, fields)| fields.split_whitespace().nth(39 - 3)?.parse().ok())
        .context("no CPU number in /proc/self/stat")?;
    let status = Command::new("taskset")
        .args([
            "--cpu-list",
            "--pid",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the benchmark to one CPU")?;
    if !status.success() {
        bail!("taskset could not pin the benchmark to CPU {cpu} ({status})");
    }
    Ok(cpu)
}

/// The child's side: echoes messages of `message_bytes` until end of input.
pub fn pipe_echo(message_bytes: usize) -> Result<()> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut message = vec![0u8; message_bytes];
    loop {
        match input.read_exact(&mut message) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error).context("reading a message"),
        }
        // Stdout is line-buffered: flush so the message leaves now.
        output
            .write_all(&message)
            .and_then(|()| output.flush())
            .context("echoing a message")?;
    }
}

/// Makes ping's and pong's images as files in `directory`.
fn make_images(directory: &Path, ping_wasm: &Path, pong_wasm: &Path) -> Result<[PathBuf; 2]> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let make = |name: &str, wasm: &Path| -> Result<PathBuf> {
        let output = directory.join(format!("{name}.img"));
        if output.exists() {
            std::fs::remove_file(&output)
                .with_context(|| format!("removing the old {}", output.display()))?;
        }
        crate::image::new(&ipc::image_args(name, wasm, output))
    };
    Ok([make("ping", ping_wasm)?, make("pong", pong_wasm)?])
}

/// Prints one record for `cargo xtask bench`.
fn emit(record: &Record) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string(record).context("encoding a record")?
    );
    Ok(())
}

/// The example's body: `DIRECTORY PING_WASM PONG_WASM BATCHES`.
pub fn run(directory: &Path, ping_wasm: &Path, pong_wasm: &Path, batches: usize) -> Result<()> {
    emit(&Record::Step {
        text: "host: ping and pong in the vm, and a Linux pipe".into(),
    })?;
    let cpu = pin_to_current_cpu()?;
    let [ping_image, pong_image] = make_images(directory, ping_wasm, pong_wasm)?;
    let read = |path: &Path| -> Result<MemoryDevice> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(MemoryDevice::from_bytes(bytes))
    };
    let open = |path: &Path| -> Result<FileDevice> {
        FileDevice::open(path).map_err(|error| anyhow!("opening {}: {error}", path.display()))
    };
    let engine = vm::new_engine();
    let mut in_memory = Pair::new(
        &engine,
        [("ping", read(&ping_image)?), ("pong", read(&pong_image)?)],
    )?;
    let mut on_files = Pair::new(
        &engine,
        [("ping", open(&ping_image)?), ("pong", open(&pong_image)?)],
    )?;
    // Each pair runs its batches without a break: ping's clock runs on
    // while the scheduler stands still, so a pause would land in a round
    // trip. The first batch of each pair is a warm-up and is left out.
    let Batch {
        round_trips,
        message_bytes,
        ..
    } = in_memory.next_batch()?.batch;
    let mut samples = Samples {
        round_trips,
        ..Samples::default()
    };
    for _ in 0..batches {
        samples.memory.push(in_memory.next_batch()?);
    }
    in_memory.request_checkpoints()?;
    for _ in 0..batches {
        samples
            .memory_checkpointed
            .push(in_memory.next_batch()?.batch.round_trip_us());
        in_memory.request_checkpoints()?;
    }
    drop(in_memory);
    let mut pipe = PipeEcho::start(message_bytes, cpu)?;
    pipe.batch(round_trips, message_bytes)?;
    for _ in 0..batches {
        let total_ns = pipe.batch(round_trips, message_bytes)?;
        samples
            .pipe
            .push(total_ns as f64 / 1000.0 / round_trips.max(1) as f64);
    }
    drop(pipe);
    on_files.next_batch()?;
    for _ in 0..batches {
        samples.file.push(on_files.next_batch()?);
    }
    for record in samples.figures() {
        emit(&record)?;
    }
    Ok(())
}

/// Per-batch samples, in microseconds.
#[derive(Debug, Default)]
struct Samples {
    /// Round trips per batch, from ping's lines.
    round_trips: u64,
    /// The pipe's time per round trip of each batch.
    pipe: Vec<f64>,
    /// The in-memory pair's round trip with a checkpoint after each batch.
    memory_checkpointed: Vec<f64>,
    memory: SideSamples,
    file: SideSamples,
}

#[derive(Debug, Default)]
struct SideSamples {
    round_trip: Vec<f64>,
    commits_per_round_trip: Vec<f64>,
    commit_time_per_round_trip: Vec<f64>,
}

impl SideSamples {
    fn push(&mut self, measured: PairBatch) {
        let round_trips = measured.batch.round_trips.max(1) as f64;
        self.round_trip.push(measured.batch.round_trip_us());
        self.commits_per_round_trip
            .push(measured.commits as f64 / round_trips);
        self.commit_time_per_round_trip
            .push(measured.commit_ns as f64 / 1000.0 / round_trips);
    }
}

impl Samples {
    fn figures(&self) -> Vec<Record> {
        let mut records = Vec::new();
        for (side, key, disks) in [
            (&self.memory, "memory", "in-memory disks"),
            (&self.file, "file", "image files (fdatasync)"),
        ] {
            records.push(ipc::round_trip_figure(
                format!("ipc.host_{key}_round_trip"),
                format!("IPC round trip between two domains, host vm on {disks}"),
                side.round_trip.clone(),
                self.pipe.clone(),
                None,
            ));
            records.push(ipc::share_figure(
                format!("ipc.host_{key}_commits"),
                format!("of which commits (time per round trip), {disks}"),
                side.commit_time_per_round_trip.clone(),
                side.round_trip.clone(),
            ));
            records.push(Record::Figure(record::FigureRecord {
                name: format!("ipc.host_{key}_commit_count"),
                title: format!("commits per IPC round trip, host vm on {disks}"),
                unit: "commits".into(),
                amber: side.commits_per_round_trip.clone(),
                baseline: None,
                goal: None,
            }));
        }
        records.push(ipc::round_trip_figure(
            "ipc.host_memory_checkpointed_round_trip".into(),
            format!(
                "IPC round trip, host vm on in-memory disks, a checkpoint of both after \
                 every batch of {}",
                self.round_trips
            ),
            self.memory_checkpointed.clone(),
            self.pipe.clone(),
            None,
        ));
        records
    }
}

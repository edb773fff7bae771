//! Crash states below QEMU: real workloads traced, every cut a drive allows.
//!
//! Each test boots a workload with the disk under test served by the tests'
//! recording NBD server (`tests::crash`), so that every write and flush the
//! kernel's virtio-blk driver issues lands in a trace, and the harness marks
//! the trace where it asked for a checkpoint and where the console said it
//! was committed. After a power cut, the trace gives the crash states a
//! drive with a volatile write cache could hold (every prefix up to a flush;
//! of the writes after the last flush, any subset and order, blocks torn at
//! 512-byte sectors), and each must open with persist at a commit no older
//! than the newest durable one (flushed, or confirmed on the console), with
//! `verify` clean. Samples come from `AMBER_CRASH_SEED` (printed; set it to
//! draw the same states from the same trace).
//!
//! The negative control boots counter with `disk.test_skip_flush=1`, which
//! makes the driver skip VIRTIO_BLK_T_FLUSH: the same check must then find
//! lost or torn commits, or it would prove nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tests::crash::check::{CheckReport, check_recording};
use tests::crash::disk::SparseDisk;
use tests::crash::nbd::RecordingServer;
use tests::crash::states::Plan;
use tests::crash::trace::{Event, Recording};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Cluster, LinkEnd, Machine, NetLink, apps_archive, counts,
    domain_image, environment_number, mac_last_byte, seed_from_environment, test_config, work_dir,
};

/// Periodic checkpoints every 200 ms: many commits in a few seconds.
const KERNEL_ARGUMENTS: &str = "checkpoint-ms=200";

/// Random states per window between two flushes.
const SAMPLES_PER_WINDOW: usize = 32;

/// Random states drawn from the negative control's one window.
const NEGATIVE_SAMPLES: usize = 200;

/// The crash states each workload but bigmem must give: with bigmem's
/// [`BIGMEM_MIN_STATES`], 4 × 250 + 150 = 1,150, over the 1,000 a run must
/// check. Each gives more (the commits come from explicit checkpoints and
/// from the 200 ms timer, which counts wall time however slow the host).
const MIN_STATES_PER_WORKLOAD: usize = 250;

/// bigmem's share: each of its states verifies about 24,000 pages.
const BIGMEM_MIN_STATES: usize = 150;

/// Explicit checkpoints per workload, each asked and confirmed on the console.
const CHECKPOINTS: usize = 3;

/// A whole live migration between two TCG machines on a loaded host.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(180);

/// This test's samples: from `AMBER_CRASH_SEED` when set, else the clock.
fn plan() -> Result<Plan> {
    Ok(Plan {
        seed: seed_from_environment("AMBER_CRASH_SEED")?,
        samples_per_window: SAMPLES_PER_WINDOW,
    })
}

/// Asks for a checkpoint of `name` on the console, marking the trace
/// before the ask and after a `NAME: committed` answer.
fn checkpoint(machine: &mut Machine, server: &RecordingServer, name: &str) -> Result<bool> {
    server.mark(Event::CheckpointAsked);
    machine.send_line(&format!("checkpoint {name}"))?;
    let answer = machine.expect(&format!("{name}: "), ANSWER_TIMEOUT)?;
    let is_committed = answer.trim_end().ends_with(&format!("{name}: committed"));
    if is_committed {
        server.mark(Event::CheckpointConfirmed);
    } else {
        println!("checkpoint {name} answered {answer:?}");
    }
    Ok(is_committed)
}

/// A few explicit checkpoints a little apart, then a moment more of work.
fn checkpoints(machine: &mut Machine, server: &RecordingServer, name: &str) -> Result<usize> {
    let mut confirmed = 0;
    for _ in 0..CHECKPOINTS {
        std::thread::sleep(Duration::from_millis(300));
        confirmed += usize::from(checkpoint(machine, server, name)?);
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(confirmed)
}

/// Checks every crash state of `recording` and prints what it found.
fn check(workload: &str, recording: &Recording, plan: Plan) -> Result<(CheckReport, Plan)> {
    let started = Instant::now();
    let counts = recording.counts();
    let report = check_recording(recording, &plan)?;
    println!(
        "{workload}: trace of {} writes ({} KiB, {} superblocks), {} flushes, {} confirmed \
         checkpoints; {} (checked in {:.1} s, AMBER_CRASH_SEED={})",
        counts.writes,
        counts.written_bytes / 1024,
        counts.superblock_writes,
        counts.flushes,
        counts.confirmations,
        report.summary(),
        started.elapsed().as_secs_f64(),
        plan.seed
    );
    Ok((report, plan))
}

/// Checks a workload's recording: no finding, and enough states with a
/// confirmed checkpoint among them. Fails naming the seed and the first
/// findings.
fn check_clean(
    workload: &str,
    recording: &Recording,
    transcript: &str,
    confirmed: usize,
) -> Result<()> {
    check_clean_by(
        workload,
        recording,
        transcript,
        confirmed,
        plan()?,
        MIN_STATES_PER_WORKLOAD,
    )
}

/// [`check_clean`] with states drawn by `plan`.
fn check_clean_by(
    workload: &str,
    recording: &Recording,
    transcript: &str,
    confirmed: usize,
    plan: Plan,
    min_states: usize,
) -> Result<()> {
    let (report, plan) = check(workload, recording, plan)?;
    if !report.findings.is_empty() {
        let saved = saved_trace_dir(workload);
        let replay = match recording.save(&saved) {
            Ok(()) => format!(
                "replay: AMBER_CRASH_REPLAY={} AMBER_CRASH_SEED={} AMBER_CRASH_SAMPLES={} cargo \
                 test --release -p tests --test crash_states a_saved_trace -- --ignored",
                saved.display(),
                plan.seed,
                plan.samples_per_window
            ),
            Err(error) => format!("the trace could not be saved: {error:#}"),
        };
        let first: Vec<String> = report
            .findings
            .iter()
            .take(5)
            .map(ToString::to_string)
            .collect();
        bail!(
            "{workload}: {} of {} crash states broke a commit (AMBER_CRASH_SEED={}):\n{}\n\
             {replay}\n----- transcript -----\n{transcript}",
            report.findings.len(),
            report.states,
            plan.seed,
            first.join("\n")
        );
    }
    assert_enough(workload, &report, confirmed, min_states);
    Ok(())
}

/// Where a failing workload's trace is saved for a replay.
fn saved_trace_dir(workload: &str) -> PathBuf {
    xtask::paths::amber_dir()
        .join("test-work")
        .join(format!("crash-failed-{}", workload.replace(' ', "-")))
}

/// Checks a trace that a failing run saved, without booting anything:
/// `AMBER_CRASH_REPLAY=DIR` with that run's `AMBER_CRASH_SEED` and
/// `AMBER_CRASH_SAMPLES` draws the same states again (the failure message
/// prints all three). A tool, not a check: it runs only when asked, with
/// `--ignored`.
#[test]
#[ignore = "replays a saved trace: set AMBER_CRASH_REPLAY=DIR and pass --ignored"]
fn a_saved_trace_replays_when_asked() -> Result<()> {
    let Some(directory) = std::env::var_os("AMBER_CRASH_REPLAY") else {
        bail!("set AMBER_CRASH_REPLAY to the directory a failing run saved its trace in");
    };
    let recording = Recording::load(std::path::Path::new(&directory))?;
    let samples = environment_number("AMBER_CRASH_SAMPLES")?;
    let plan = Plan {
        samples_per_window: samples.map_or(SAMPLES_PER_WINDOW, |samples| samples as usize),
        ..plan()?
    };
    let (report, plan) = check("replay", &recording, plan)?;
    for finding in &report.findings {
        println!("{finding}");
    }
    if !report.findings.is_empty() {
        bail!(
            "{} of {} states broke a commit (AMBER_CRASH_SEED={})",
            report.findings.len(),
            report.states,
            plan.seed
        );
    }
    Ok(())
}

/// Asserts a workload gave the states its share needs and a commit to keep.
fn assert_enough(workload: &str, report: &CheckReport, confirmed: usize, min_states: usize) {
    assert!(
        report.states >= min_states,
        "{workload}: only {} crash states: {}",
        report.states,
        report.summary()
    );
    assert!(
        confirmed > 0,
        "{workload}: no checkpoint was confirmed on the console"
    );
}

/// Boots `config` with `server`'s disk after its file disks.
fn boot(mut config: tests::QemuConfig, server: &RecordingServer) -> Result<Machine> {
    config.nbd_disks = vec![server.disk()];
    Machine::boot(&config)
}

/// Counter, checkpointed three times, then a power cut; with `append` on
/// the kernel command line.
fn record_counter(directory: &str, append: &str) -> Result<(Recording, String, usize)> {
    let directory = work_dir(directory)?;
    let server = RecordingServer::start(&domain_image(&directory, "counter", "counter")?)?;
    let mut config = test_config()?;
    config.append = append.to_string();
    let mut machine = boot(config, &server)?;
    machine.expect("[counter] count 3", BOOT_TIMEOUT)?;
    let confirmed = checkpoints(&mut machine, &server, "counter")?;
    machine.power_cut();
    Ok((server.finish()?, machine.transcript(), confirmed))
}

#[test]
fn counter_loses_no_commit_in_any_crash_state() -> Result<()> {
    let (recording, transcript, confirmed) = record_counter("crash-counter", KERNEL_ARGUMENTS)?;
    check_clean("counter", &recording, &transcript, confirmed)
}

#[test]
fn kv_loses_no_commit_in_any_crash_state() -> Result<()> {
    let directory = work_dir("crash-kv")?;
    let server = RecordingServer::start(&domain_image(&directory, "kv", "kv")?)?;
    let mut config = test_config()?;
    config.append = KERNEL_ARGUMENTS.into();
    config.disks = vec![domain_image(&directory, "kvclient", "kvclient")?];
    let mut machine = boot(config, &server)?;
    machine.expect("[kvclient] kvclient done", BOOT_TIMEOUT)?;
    let confirmed = checkpoints(&mut machine, &server, "kv")?;
    machine.power_cut();
    let recording = server.finish()?;
    check_clean("kv", &recording, &machine.transcript(), confirmed)
}

#[test]
fn bigmem_paging_loses_no_commit_in_any_crash_state() -> Result<()> {
    let directory = work_dir("crash-bigmem")?;
    tests::build_apps()?;
    let image = xtask::image::new(&xtask::image::NewArgs {
        wasm: xtask::paths::apps_dir().join("bigmem.wasm"),
        name: "bigmem".into(),
        memory_max_mib: Some(BIGMEM_MAX_MIB),
        size_mib: None,
        args: vec![BIGMEM_MIB.to_string()],
        env: Vec::new(),
        output: Some(directory.join("bigmem.img")),
        listen: Vec::new(),
        durable_replies: false,
    })?;
    let server = RecordingServer::start(&image)?;
    let mut config = test_config()?;
    config.append = BIGMEM_KERNEL_ARGUMENTS.into();
    config.memory_mib = BIGMEM_RAM_MIB;
    let mut machine = boot(config, &server)?;
    machine.expect(
        &format!("[bigmem] verified {BIGMEM_MIB} MiB"),
        BIGMEM_TIMEOUT,
    )?;
    let stats = machine.run_command("stats")?;
    println!("bigmem: {stats:?}");
    let confirmed = checkpoints(&mut machine, &server, "bigmem")?;
    machine.power_cut();
    let recording = server.finish()?;
    // Each of its states verifies about 24,000 pages: fewer samples.
    let plan = Plan {
        samples_per_window: BIGMEM_SAMPLES_PER_WINDOW,
        ..plan()?
    };
    check_clean_by(
        "bigmem",
        &recording,
        &machine.transcript(),
        confirmed,
        plan,
        BIGMEM_MIN_STATES,
    )
}

/// bigmem's memory: more than the machine's RAM can hold in frames.
const BIGMEM_MIB: u32 = 96;

/// Its image's maximum memory.
const BIGMEM_MAX_MIB: u64 = 128;

/// Random states per window of bigmem's trace.
const BIGMEM_SAMPLES_PER_WINDOW: usize = 6;

/// Checkpoints every 500 ms: fewer commits than the others make, each
/// writing more pages.
const BIGMEM_KERNEL_ARGUMENTS: &str = "checkpoint-ms=500";

/// The machine's RAM.
const BIGMEM_RAM_MIB: u32 = 64;

/// Writing and checking 96 MiB through 64 MiB under TCG on a loaded host.
const BIGMEM_TIMEOUT: Duration = Duration::from_secs(180);

/// Size of the spare that `spawn` formats.
const SPARE_MIB: u64 = 256;

#[test]
fn a_spawned_domain_loses_no_commit_in_any_crash_state() -> Result<()> {
    work_dir("crash-spawn")?;
    let server = RecordingServer::serve(SparseDisk::new(SPARE_MIB << 20))?;
    let mut config = test_config()?;
    config.append = KERNEL_ARGUMENTS.into();
    // The archive builds the apps again: not while another test of this
    // process builds them (their temporary files are named by process).
    tests::build_apps()?;
    config.disks = vec![apps_archive()?];
    let mut machine = boot(config, &server)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let answer = machine.run_command("spawn counter")?;
    if !answer.iter().any(|line| line.contains("counter: spawned")) {
        bail!("spawn answered {answer:?}");
    }
    machine.expect("[counter] count 3", ANSWER_TIMEOUT)?;
    let confirmed = checkpoints(&mut machine, &server, "counter")?;
    machine.power_cut();
    let recording = server.finish()?;
    check_clean("spawn", &recording, &machine.transcript(), confirmed)
}

#[test]
fn a_migration_target_loses_no_commit_in_any_crash_state() -> Result<()> {
    let directory = work_dir("crash-migration")?;
    let counter: PathBuf = domain_image(&directory, "counter", "counter")?;
    let cluster = Cluster::new()?;
    let server = RecordingServer::serve(SparseDisk::new(64 << 20))?;
    let mut a = cluster.machine(LinkEnd::Listen, 1, vec![counter])?;
    let mut config = test_config()?;
    config.append = format!("ip=169.254.0.2 {KERNEL_ARGUMENTS}");
    config.net = Some(NetLink {
        end: LinkEnd::Connect,
        port: cluster.port,
        mac_last_byte: mac_last_byte(2),
    });
    config.cluster_secret = Some(cluster.secret.clone());
    let mut b = boot(config, &server)?;
    b.expect_prompt(BOOT_TIMEOUT)?;
    a.expect("[counter] count 5", BOOT_TIMEOUT)?;
    // The source says moved only once the target answered that its copy
    // is durable.
    server.mark(Event::CheckpointAsked);
    a.send_line("migrate counter 169.254.0.2")?;
    a.expect("[migrate] counter: moved to 169.254.0.2", MIGRATION_TIMEOUT)?;
    server.mark(Event::CheckpointConfirmed);
    b.expect(
        "[migrate] counter arrived from 169.254.0.1",
        MIGRATION_TIMEOUT,
    )?;
    let last_on_a = counts("counter", &a.transcript())
        .last()
        .copied()
        .unwrap_or(0);
    b.expect(
        &format!("[counter] count {}", last_on_a + 3),
        ANSWER_TIMEOUT,
    )?;
    let confirmed = 1 + checkpoints(&mut b, &server, "counter")?;
    b.power_cut();
    a.power_cut();
    let recording = server.finish()?;
    check_clean("migration target", &recording, &b.transcript(), confirmed)
}

#[test]
fn the_check_finds_lost_commits_when_the_driver_skips_flushes() -> Result<()> {
    let (recording, transcript, confirmed) = record_counter(
        "crash-negative",
        &format!("{KERNEL_ARGUMENTS} disk.test_skip_flush=1"),
    )?;
    assert!(
        transcript.contains("WARNING: disk.test_skip_flush=1"),
        "no warning at boot:\n{transcript}"
    );
    assert_eq!(recording.counts().flushes, 0, "a flush reached the disk");
    // Without flushes the whole trace is one window: draw many more from it.
    let plan = Plan {
        samples_per_window: NEGATIVE_SAMPLES,
        ..plan()?
    };
    let (report, _) = check("negative control", &recording, plan)?;
    println!(
        "negative control: {} lost and {} torn commits found, as expected; first: {}",
        report.lost(),
        report.torn(),
        report
            .findings
            .first()
            .map_or_else(String::new, ToString::to_string)
    );
    assert!(confirmed > 0, "no checkpoint was confirmed");
    assert!(
        report.lost() + report.torn() > 0,
        "with flushes skipped the check found nothing: {}",
        report.summary()
    );
    Ok(())
}

//! `cargo xtask host`: run domains on Linux with the same vm and persist code.
//!
//! Each image file is one domain (a `FileDevice`). Output lines are prefixed
//! `[NAME] `. Every `--checkpoint-ms` the runner asks every domain for a
//! commit; domains at a safe point commit at once, busy ones at their next
//! blocking call. Ctrl-C commits every domain and exits; after a SIGKILL the
//! next run resumes each domain from its last commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use vm::persist::{FileDevice, Image};
use vm::{
    DEFAULT_FUEL_SLICE, Domain, DomainStatus, HashedHeapBacking, PersistStorage, Platform,
    Scheduler, SchedulerEvent, StdPlatform, Wake,
};

/// Host runner subcommands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Run domain images until they all end or Ctrl-C.
    Run(RunArgs),
}

/// `host run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The domain images (from `cargo xtask image new`).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Commit every domain this often, in milliseconds.
    #[arg(long = "checkpoint-ms", default_value_t = 1000)]
    pub checkpoint_ms: u64,
}

pub fn run(command: HostCommand) -> Result<()> {
    match command {
        HostCommand::Run(args) => run_images(&args),
    }
}

/// The longest the runner idles before looking at its domains again.
const MAX_IDLE: Duration = Duration::from_millis(10);

/// How long Ctrl-C waits for busy domains to reach a safe point.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Opens one image file as a domain.
pub fn open_domain(
    engine: &vm::wasmi::Engine,
    platform: Arc<dyn Platform>,
    path: &Path,
) -> Result<Domain> {
    let device =
        FileDevice::open(path).map_err(|error| anyhow!("opening {}: {error}", path.display()))?;
    let image = Image::open(device).map_err(|error| anyhow!("{}: {error}", path.display()))?;
    Domain::open(
        engine,
        platform,
        Box::new(PersistStorage::new(image)),
        Box::new(HashedHeapBacking::new()),
    )
    .with_context(|| format!("starting the domain in {}", path.display()))
}

/// `cargo xtask host run`.
pub fn run_images(args: &RunArgs) -> Result<()> {
    if args.checkpoint_ms == 0 {
        bail!("--checkpoint-ms must be at least 1");
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let engine = vm::new_engine();
    let platform: Arc<dyn Platform> = Arc::new(StdPlatform::default());
    let mut scheduler = Scheduler::new(DEFAULT_FUEL_SLICE);
    for path in &args.images {
        // A domain that cannot start (a bad image or module) is reported and
        // the others run on.
        let domain = match open_domain(&engine, platform.clone(), path) {
            Ok(domain) => domain,
            Err(error) => {
                eprintln!("[host] {error:#}");
                continue;
            }
        };
        if domain.status() != DomainStatus::Running {
            let status = describe(&domain.status());
            eprintln!("[host] {} is not running: {status}", domain.name());
        }
        if let Err(error) = scheduler.add(domain, ()) {
            eprintln!("[host] {}: {error}", path.display());
        }
    }
    if scheduler.is_empty() {
        bail!("no domain could be started");
    }
    let checkpoint_every = Duration::from_millis(args.checkpoint_ms);
    let mut last_checkpoint = Instant::now();
    loop {
        if interrupted.load(Ordering::SeqCst) {
            eprintln!("[host] interrupted: committing every domain");
            shut_down(&mut scheduler);
            return Ok(());
        }
        for event in scheduler.run_round() {
            match event {
                SchedulerEvent::Halted { name, status, .. } => {
                    eprintln!("[host] {name} {}", describe(&status));
                }
                SchedulerEvent::Paused { name, reason, .. } => report_pause(&name, &reason),
            }
        }
        if scheduler.is_finished() {
            return Ok(());
        }
        if last_checkpoint.elapsed() >= checkpoint_every {
            report_checkpoints(&mut scheduler);
            last_checkpoint = Instant::now();
        }
        let until_checkpoint = checkpoint_every.saturating_sub(last_checkpoint.elapsed());
        let idle = match scheduler.next_wake() {
            Some(Wake::Now) => continue,
            Some(Wake::At(time_ns)) => {
                Duration::from_nanos(time_ns.saturating_sub(platform.monotonic_ns()))
            }
            _ => MAX_IDLE,
        };
        std::thread::sleep(idle.min(until_checkpoint).min(MAX_IDLE));
    }
}

fn report_checkpoints(scheduler: &mut Scheduler) {
    for (name, result) in scheduler.checkpoint_all() {
        match result {
            Err(vm::Error::DiskFull { .. }) => report_pause(&name, &vm::PauseReason::DiskFull),
            Err(error) => eprintln!("[host] checkpoint of {name} failed: {error}"),
            Ok(_) => {}
        }
    }
}

/// One line for a domain that paused: it waits, its last commit intact.
fn report_pause(name: &str, reason: &vm::PauseReason) {
    eprintln!("[host] {name} paused: {reason}; its last commit is intact and it waits");
}

/// Commits every domain, giving busy ones a moment to reach a safe point.
fn shut_down(scheduler: &mut Scheduler) {
    report_checkpoints(scheduler);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while Instant::now() < deadline {
        let pending: Vec<String> = scheduler
            .domains()
            .filter(|domain| domain.is_checkpoint_pending())
            .map(|domain| domain.name().to_string())
            .collect();
        if pending.is_empty() {
            return;
        }
        scheduler.run_round();
        if scheduler.next_wake() != Some(Wake::Now) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for domain in scheduler.domains() {
        if domain.is_checkpoint_pending() {
            eprintln!(
                "[host] {} reached no safe point in time: it will resume from its previous commit",
                domain.name()
            );
        }
    }
}

fn describe(status: &DomainStatus) -> String {
    match status {
        DomainStatus::Running => "is running".into(),
        DomainStatus::Stopped => "is stopped".into(),
        DomainStatus::Exited(code) => format!("exited with code {code}"),
        DomainStatus::Trapped(reason) => format!("trapped: {reason}"),
        DomainStatus::MovedAway => "moved away".into(),
    }
}

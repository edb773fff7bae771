//! `cargo xtask host`: run domains on Linux with the same vm and persist code.
//!
//! Each image file is one domain (a `FileDevice`). Output lines are prefixed
//! `[NAME] `. Every `--checkpoint-ms` the runner asks every domain for a
//! commit; domains at a safe point commit at once, busy ones at their next
//! blocking call. Ctrl-C commits every domain and exits; after a SIGKILL the
//! next run resumes each domain from its last commit.
//!
//! The domains share one [`StdNetwork`]: each port an image declares
//! (`image new --listen`) is served on 127.0.0.1 only, at the same port or
//! where `--port-offset`/`--forward` put it, and a domain connects to
//! 127.0.0.1 alone. The runner prints the mapping as it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use vm::net::Network;
use vm::persist::{FileDevice, Image};
use vm::{
    DEFAULT_FUEL_SLICE, Domain, DomainId, DomainStatus, PersistStorage, Platform, PortMap,
    Scheduler, SchedulerEvent, StdNetwork, StdPlatform, Wake,
};
use vm_host::ProtectedBacking;

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
    /// Serve each domain port P at host port P + N on 127.0.0.1.
    #[arg(long = "port-offset", value_name = "N", default_value_t = 0)]
    pub port_offset: u16,
    /// Serve domain port PORT at host port HOST on 127.0.0.1 (repeatable;
    /// before the offset).
    #[arg(long = "forward", value_name = "HOST:PORT", value_parser = parse_forward)]
    pub forward: Vec<Forward>,
}

/// `--forward HOST:PORT`: domain port `domain_port` at host port `host_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host_port: u16,
    pub domain_port: u16,
}

fn parse_forward(text: &str) -> Result<Forward, String> {
    let (host, domain) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not HOST:PORT (two port numbers)"))?;
    let port = |part: &str| -> Result<u16, String> {
        match part.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{part:?} is not a port number (1-65535)")),
            Ok(port) => Ok(port),
        }
    };
    Ok(Forward {
        host_port: port(host)?,
        domain_port: port(domain)?,
    })
}

/// The port map `args` ask for.
pub fn port_map(args: &RunArgs) -> PortMap {
    let mut map = PortMap::with_offset(args.port_offset);
    for forward in &args.forward {
        map.forward(forward.host_port, forward.domain_port);
    }
    map
}

pub fn run(command: HostCommand) -> Result<()> {
    match command {
        HostCommand::Run(args) => run_images(&args),
    }
}

/// The longest the runner idles before looking at its domains again (a
/// socket a domain waits for ends the wait sooner).
const MAX_IDLE: Duration = Duration::from_millis(10);

/// How long Ctrl-C waits for busy domains to reach a safe point.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Opens one image file as a domain; also returns the ports it declares.
pub fn open_domain(
    engine: &vm::wasmi::Engine,
    platform: Arc<dyn Platform>,
    path: &Path,
) -> Result<(Domain, Vec<u16>)> {
    let device =
        FileDevice::open(path).map_err(|error| anyhow!("opening {}: {error}", path.display()))?;
    let image = Image::open(device).map_err(|error| anyhow!("{}: {error}", path.display()))?;
    let ports = image.metadata().network.listen.clone();
    let domain = Domain::open(
        engine,
        platform,
        Box::new(PersistStorage::new(image)),
        Box::new(ProtectedBacking::new()),
    )
    .with_context(|| format!("starting the domain in {}", path.display()))?;
    Ok((domain, ports))
}

/// One line per declared port: where on this machine it is served.
fn report_ports(name: &str, ports: &[u16], network: &StdNetwork) {
    for &port in ports {
        match network.host_port(port) {
            Some(host_port) => eprintln!("[host] {name} port {port} at 127.0.0.1:{host_port}"),
            None => eprintln!("[host] {name} port {port}: past 65535 with this offset, not served"),
        }
    }
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
    if let Err(error) = vm_host::check_protection() {
        eprintln!(
            "[host] dirty pages are found by hashing every page at each commit: no \
             write-protected memory here ({error})"
        );
    }
    let engine = vm::new_engine();
    let network = Arc::new(StdNetwork::new(port_map(args)));
    let platform: Arc<dyn Platform> = Arc::new(StdPlatform::with_network(network.clone()));
    let mut scheduler: Scheduler<DomainId> = Scheduler::new(DEFAULT_FUEL_SLICE);
    for path in &args.images {
        // A domain that cannot start (a bad image or module) is reported and
        // the others run on.
        let (domain, ports) = match open_domain(&engine, platform.clone(), path) {
            Ok(opened) => opened,
            Err(error) => {
                eprintln!("[host] {error:#}");
                continue;
            }
        };
        if domain.status() != DomainStatus::Running {
            let status = describe(&domain.status());
            eprintln!("[host] {} is not running: {status}", domain.name());
        }
        report_ports(domain.name(), &ports, &network);
        let id = domain.id();
        if let Err(error) = scheduler.add(domain, id) {
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
                SchedulerEvent::Halted {
                    handle,
                    name,
                    status,
                } => {
                    // Its ports and connections go with it.
                    network.forget_domain(handle);
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
        // Woken early by a client or bytes for a waiting domain.
        network.wait(idle.min(until_checkpoint).min(MAX_IDLE));
    }
}

fn report_checkpoints(scheduler: &mut Scheduler<DomainId>) {
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
fn shut_down(scheduler: &mut Scheduler<DomainId>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_is_two_ports() {
        assert_eq!(
            parse_forward("16379:6379"),
            Ok(Forward {
                host_port: 16379,
                domain_port: 6379
            })
        );
        for bad in ["6379", "0:6379", "1:0", "70000:1", "a:b", ":", "1:2:3"] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwards_win_over_the_offset() {
        let args = RunArgs {
            images: Vec::new(),
            checkpoint_ms: 1000,
            port_offset: 10_000,
            forward: vec![Forward {
                host_port: 8080,
                domain_port: 80,
            }],
        };
        let map = port_map(&args);
        assert_eq!(map.host_port(80), Some(8080));
        assert_eq!(map.host_port(6379), Some(16_379));
    }
}

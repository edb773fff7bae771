//! Harness for tests that boot the Amber kernel in QEMU.
//!
//! The QEMU console driver is xtask's [`Machine`] (one QEMU process with the
//! serial console on pipes, text awaited against deadlines, QEMU killed on
//! every path, the transcript in every error); this crate re-exports it and
//! adds what tests share: a kernel built once per test process, images of
//! the apps, spare disks, linked and port-forwarded machines, seeds, a RESP
//! client, and readers of what the demo domains print.

#![forbid(unsafe_code)]

pub mod crash;
pub mod peer;
pub mod resp;

use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
pub use xtask::machine::{ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, PROMPT};
pub use xtask::private::ClusterSecretFile;
pub use xtask::qemu::{
    Accel, Console, FAILURE_EXIT_STATUS, Forward, LinkEnd, NetLink, QemuConfig, UserNet, free_port,
};

/// How long a service may take to answer its first client after boot on a
/// loaded host under TCG.
pub const SERVICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Boots with the test defaults plus `append` on the kernel command line.
pub fn boot_with_arguments(append: &str) -> Result<Machine> {
    let mut config = test_config()?;
    config.append = append.to_string();
    Machine::boot(&config)
}

/// N in a `[NAME] count N` line that a counter domain named `name` printed
/// (the counter app prints one ten times a second).
pub fn count_of(name: &str, line: &str) -> Option<u64> {
    line.split(&format!("[{name}] count "))
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Every `[NAME] count N` in a transcript, in order.
pub fn counts(name: &str, transcript: &str) -> Vec<u64> {
    transcript
        .lines()
        .filter_map(|line| count_of(name, line))
        .collect()
}

/// The last `[NAME] count N` in a transcript.
pub fn last_count(name: &str, transcript: &str) -> Option<u64> {
    transcript
        .lines()
        .rev()
        .find_map(|line| count_of(name, line))
}

/// N in each line of a domain's log (as `logs NAME` and `image logs` show
/// it: `SECONDS.MILLIS count N`) that a counter domain printed, in order.
pub fn logged_counts<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
    lines
        .into_iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let stamp = words.next()?;
            stamp.split_once('.')?;
            (words.next()? == "count").then_some(())?;
            let count = words.next()?.parse().ok()?;
            words.next().is_none().then_some(count)
        })
        .collect()
}

/// Whether `counts` go up one at a time.
pub fn is_consecutive(counts: &[u64]) -> bool {
    counts.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

/// A machine on a two-machine link with address 169.254.0.`host` (set by
/// `ip=`; its MAC ends in 0x10 + `host`, so the MAC-derived default would
/// differ), `disks` and the cluster secret `secret` (none: it accepts and
/// starts no migration), booted to its prompt. The `LinkEnd::Listen` end
/// must boot first.
pub fn linked_machine(
    end: LinkEnd,
    port: u16,
    host: u8,
    disks: Vec<std::path::PathBuf>,
    secret: Option<&ClusterSecretFile>,
) -> Result<Machine> {
    let config = linked_config(end, port, host, disks, secret)?;
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    Ok(machine)
}

/// The configuration [`linked_machine`] boots, for a test that adds to it
/// (a user-networking card, say).
pub fn linked_config(
    end: LinkEnd,
    port: u16,
    host: u8,
    disks: Vec<std::path::PathBuf>,
    secret: Option<&ClusterSecretFile>,
) -> Result<QemuConfig> {
    let mut config = test_config()?;
    config.append = format!("ip=169.254.0.{host}");
    config.disks = disks;
    config.net = Some(NetLink {
        end,
        port,
        mac_last_byte: mac_last_byte(host),
    });
    config.cluster_secret = secret.cloned();
    Ok(config)
}

/// The MAC's last byte [`linked_machine`] gives the machine at 169.254.0.`host`.
pub fn mac_last_byte(host: u8) -> u8 {
    0x10 + host
}

/// What the machines of one test's cluster share: the port of their link
/// and a cluster secret new for this test.
#[derive(Debug)]
pub struct Cluster {
    /// The TCP port on 127.0.0.1 that carries the link.
    pub port: u16,
    /// The secret every machine of the cluster gets.
    pub secret: ClusterSecretFile,
}

impl Cluster {
    /// A free port and a fresh random secret.
    pub fn new() -> Result<Cluster> {
        Ok(Cluster {
            port: free_port()?,
            secret: ClusterSecretFile::generate()?,
        })
    }

    /// The same cluster on a new link (a new port, the same secret): for
    /// machines booted again after a power cut, as a real cluster keeps
    /// its secret over reboots.
    pub fn relinked(&self) -> Result<Cluster> {
        Ok(Cluster {
            port: free_port()?,
            secret: self.secret.clone(),
        })
    }

    /// The configuration of a machine of this cluster: [`linked_config`]
    /// with its port and secret.
    pub fn config(
        &self,
        end: LinkEnd,
        host: u8,
        disks: Vec<std::path::PathBuf>,
    ) -> Result<QemuConfig> {
        linked_config(end, self.port, host, disks, Some(&self.secret))
    }

    /// A machine of this cluster: [`linked_machine`] with its port and secret.
    pub fn machine(
        &self,
        end: LinkEnd,
        host: u8,
        disks: Vec<std::path::PathBuf>,
    ) -> Result<Machine> {
        linked_machine(end, self.port, host, disks, Some(&self.secret))
    }
}

/// A xorshift64 generator: enough to pick random moments, and replayable.
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Xorshift {
        // Xorshift never leaves zero.
        Xorshift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut state = self.0;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        self.0 = state;
        state
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// A number from the environment variable `name`, if it is set.
pub fn environment_number(name: &str) -> Result<Option<u64>> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={text:?} is not a number")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(error) => bail!("{name}: {error}"),
    }
}

/// A random seed: the environment variable `name` when set (to replay a
/// run), else one from the clock.
pub fn seed_from_environment(name: &str) -> Result<u64> {
    Ok(environment_number(name)?.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)
    }))
}

/// A fresh, empty directory for one test's files under target/amber/test-work.
pub fn work_dir(test_name: &str) -> Result<std::path::PathBuf> {
    let directory = xtask::paths::amber_dir().join("test-work").join(test_name);
    if directory.exists() {
        std::fs::remove_dir_all(&directory)
            .with_context(|| format!("clearing {}", directory.display()))?;
    }
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    Ok(directory)
}

/// When a domain's replies leave for the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replies {
    /// As soon as the domain writes them.
    Immediate,
    /// Once a commit holds the state that wrote them (`image new
    /// --durable-replies`).
    Durable,
}

/// A new domain image of app `app` named `name` in `directory`. The apps are
/// built once per test process.
pub fn domain_image(
    directory: &std::path::Path,
    app: &str,
    name: &str,
) -> Result<std::path::PathBuf> {
    app_image(directory, app, name, &[], Replies::Immediate)
}

/// A new image of app `app` named `name` in `directory` that declares the
/// ports `listen` and sends its replies as `replies` says.
pub fn app_image(
    directory: &std::path::Path,
    app: &str,
    name: &str,
    listen: &[u16],
    replies: Replies,
) -> Result<std::path::PathBuf> {
    build_apps()?;
    let arguments = xtask::image::NewArgs {
        wasm: xtask::paths::apps_dir().join(format!("{app}.wasm")),
        name: name.to_string(),
        memory_max_mib: None,
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(directory.join(format!("{name}.img"))),
        listen: listen.to_vec(),
        durable_replies: replies == Replies::Durable,
    };
    xtask::image::new(&arguments)
}

/// Builds every app into target/amber/apps, once per test process.
pub fn build_apps() -> Result<()> {
    static APPS: OnceLock<Result<(), String>> = OnceLock::new();
    APPS.get_or_init(|| {
        xtask::app::build_apps(&[])
            .map(|_| ())
            .map_err(|error| format!("{error:#}"))
    })
    .clone()
    .map_err(|error| anyhow!("building the apps: {error}"))
}

/// The apps archive disk (every app, for `spawn`), built once per test
/// process at target/amber/apps-archive.img.
pub fn apps_archive() -> Result<std::path::PathBuf> {
    static ARCHIVE: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| xtask::archive::build(&[]).map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow!("building the apps archive: {error}"))
}

/// A blank (all zeros, sparse) disk of `size_mib` MiB at `path`: a spare.
pub fn blank_disk(path: &std::path::Path, size_mib: u64) -> Result<std::path::PathBuf> {
    std::fs::File::create(path)
        .and_then(|file| file.set_len(size_mib * 1024 * 1024))
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// A machine with a user-networking card that forwards a free port of
/// 127.0.0.1 to each of `guest_ports` (QEMU `hostfwd`), booted with
/// `append` to its prompt. Returns it with the forwards, in the order of
/// `guest_ports`: the test connects to `127.0.0.1:forward.host_port`.
pub fn forwarded_machine(append: &str, guest_ports: &[u16]) -> Result<(Machine, Vec<Forward>)> {
    let mut config = test_config()?;
    config.append = append.into();
    let forwards = forwards_to(guest_ports)?;
    config.user_net = Some(UserNet {
        forwards: forwards.clone(),
    });
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    Ok((machine, forwards))
}

/// Free host ports forwarded to `guest_ports`, in their order.
pub fn forwards_to(guest_ports: &[u16]) -> Result<Vec<Forward>> {
    guest_ports
        .iter()
        .map(|&guest_port| {
            Ok(Forward {
                host_port: free_port()?,
                guest_port,
            })
        })
        .collect()
}

/// A machine with `disks` and a user-networking card with `forwards`,
/// booted to its prompt. Booting the same forwards again after a power cut
/// gives clients the same ports.
pub fn boot_forwarded(disks: &[std::path::PathBuf], forwards: &[Forward]) -> Result<Machine> {
    let mut config = test_config()?;
    config.disks = disks.to_vec();
    config.user_net = Some(UserNet {
        forwards: forwards.to_vec(),
    });
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    Ok(machine)
}

/// Whether the host program `tool` is installed (`.ci/run` installs the
/// clients the network tests use: redis-tools, curl).
pub fn has_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Retries `attempt` every 500 ms until it succeeds or `timeout` passes,
/// then returns its last error (a service may still be starting; slirp
/// takes a host connection before the guest does).
pub fn retry_until<T>(
    timeout: std::time::Duration,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(error) if std::time::Instant::now() >= deadline => return Err(error),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// Builds the kernel once per test process (a no-op when `cargo xtask test`
/// has just built it) and returns the configuration tests start from.
pub fn test_config() -> Result<QemuConfig> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            xtask::kernel::build_kernel()
                .map(|_| ())
                .map_err(|error| format!("{error:#}"))
        })
        .clone()
        .map_err(|error| anyhow!("building the kernel: {error}"))?;
    Ok(QemuConfig::for_tests())
}

/// Opens `count` connections to `address` from several threads at once
/// (one after another, slirp takes each in turn) and returns those that
/// opened.
pub fn flood(address: std::net::SocketAddr, count: usize) -> Vec<std::net::TcpStream> {
    const THREADS: usize = 25;
    let workers: Vec<_> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                (thread..count)
                    .step_by(THREADS)
                    .filter_map(|_| {
                        std::net::TcpStream::connect_timeout(
                            &address,
                            std::time::Duration::from_secs(5),
                        )
                        .ok()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|worker| worker.join().unwrap_or_default())
        .collect()
}

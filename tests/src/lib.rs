//! Harness for tests that boot the Amber kernel in QEMU.
//!
//! A [`Machine`] is one QEMU process with the serial console on its stdio. A
//! reader thread collects everything the guest prints; tests wait for text
//! with a deadline ([`Machine::expect`]), type commands ([`Machine::send_line`])
//! and check how QEMU ended ([`Machine::expect_exit`]). QEMU is killed when
//! the `Machine` is dropped, on every path, and every error carries the
//! transcript so a failing test shows what the guest said.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
pub use xtask::qemu::{
    Accel, Console, FAILURE_EXIT_STATUS, LinkEnd, NetLink, QemuConfig, free_port,
};

/// How long a boot may take to reach the prompt. Boots take well under a
/// second under TCG; the margin is for loaded CI machines, never for speed.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The default wait for one answer on the console.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The console prompt.
pub const PROMPT: &str = "amber> ";

/// A machine on a two-machine link with address 169.254.0.`host` (set by
/// `ip=`; its MAC ends in 0x10 + `host`, so the MAC-derived default would
/// differ) and `disks`, booted to its prompt. The `LinkEnd::Listen` end
/// must boot first.
pub fn linked_machine(
    end: LinkEnd,
    port: u16,
    host: u8,
    disks: Vec<std::path::PathBuf>,
) -> Result<Machine> {
    let mut config = test_config()?;
    config.append = format!("ip=169.254.0.{host}");
    config.disks = disks;
    config.net = Some(NetLink {
        end,
        port,
        mac_last_byte: 0x10 + host,
    });
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    Ok(machine)
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

/// A new domain image of app `app` named `name` in `directory`. The apps are
/// built once per test process.
pub fn domain_image(
    directory: &std::path::Path,
    app: &str,
    name: &str,
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

struct Output {
    text: String,
    /// Output streams (stdout, stderr) not yet at end of file.
    open_streams: usize,
}

impl Output {
    fn is_closed(&self) -> bool {
        self.open_streams == 0
    }
}

/// One running QEMU instance.
pub struct Machine {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<(Mutex<Output>, Condvar)>,
    /// Byte offset in the output up to which `expect` has consumed.
    cursor: usize,
    exit_status: Option<ExitStatus>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Machine")
            .field("pid", &self.child.id())
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Machine {
    /// Starts QEMU with `config`.
    pub fn boot(config: &QemuConfig) -> Result<Machine> {
        let mut command = config.command()?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("starting QEMU")?;
        let output = Arc::new((
            Mutex::new(Output {
                text: String::new(),
                open_streams: 2,
            }),
            Condvar::new(),
        ));
        let stdout = child.stdout.take().context("QEMU's stdout")?;
        let stderr = child.stderr.take().context("QEMU's stderr")?;
        spawn_reader(stdout, Arc::clone(&output), "");
        spawn_reader(stderr, Arc::clone(&output), "qemu: ");
        Ok(Machine {
            stdin: child.stdin.take(),
            child,
            output,
            cursor: 0,
            exit_status: None,
        })
    }

    /// Boots with the test defaults plus `append` on the kernel command line.
    pub fn boot_with_arguments(append: &str) -> Result<Machine> {
        let mut config = test_config()?;
        config.append = append.to_string();
        Machine::boot(&config)
    }

    /// Everything the guest (and QEMU, prefixed `qemu: `) printed so far.
    pub fn transcript(&self) -> String {
        lock(&self.output.0).text.clone()
    }

    fn failure(&self, what: String) -> anyhow::Error {
        anyhow!(
            "{what}\n----- transcript -----\n{}\n----- end of transcript -----",
            self.transcript()
        )
    }

    /// Waits until `pattern` appears after what earlier calls consumed, and
    /// the line it is on is complete; returns that line (without the line
    /// end). Text up to the end of the match is consumed.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_for(pattern, timeout, Until::LineEnd)
    }

    fn wait_for(&mut self, pattern: &str, timeout: Duration, until: Until) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (mutex, condvar) = &*self.output;
        let mut output = lock(mutex);
        loop {
            if let Some(offset) = output.text[self.cursor..].find(pattern) {
                let start = self.cursor + offset;
                let end = start + pattern.len();
                let line_start = output.text[..start].rfind('\n').map_or(0, |i| i + 1);
                let line_end = output.text[end..].find('\n').map(|i| end + i);
                if line_end.is_some() || until == Until::Match || output.is_closed() {
                    let line_end = line_end.unwrap_or(output.text.len());
                    let line = output.text[line_start..line_end].to_string();
                    self.cursor = end;
                    return Ok(line);
                }
            }
            let now = Instant::now();
            if output.is_closed() || now >= deadline {
                let reason = if output.is_closed() {
                    "QEMU closed its output"
                } else {
                    "timed out"
                };
                drop(output);
                return Err(self.failure(format!(
                    "{reason} after waiting {:.1} s for {pattern:?}",
                    timeout.as_secs_f64() - deadline.saturating_duration_since(now).as_secs_f64()
                )));
            }
            output = condvar
                .wait_timeout(output, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Waits for the console prompt.
    pub fn expect_prompt(&mut self, timeout: Duration) -> Result<()> {
        // The prompt has no line end: it waits for input.
        self.wait_for(PROMPT, timeout, Until::Match).map(|_| ())
    }

    /// Types `line` and Enter on the console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("QEMU's stdin is closed")?;
        stdin
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|()| stdin.flush())
            .context("writing to QEMU's console")
    }

    /// Types `command`, then returns every line up to the next prompt.
    pub fn run_command(&mut self, command: &str) -> Result<Vec<String>> {
        self.send_line(command)?;
        let start = self.cursor;
        self.expect_prompt(ANSWER_TIMEOUT)?;
        let output = lock(&self.output.0);
        let answer = &output.text[start..self.cursor - PROMPT.len()];
        Ok(answer
            .lines()
            .skip(1) // the echoed command
            .map(|line| line.trim_end_matches('\r').to_string())
            .collect())
    }

    /// Waits for QEMU to exit and checks its status code.
    pub fn expect_exit(&mut self, expected_code: i32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for QEMU")? {
                self.exit_status = Some(status);
                return match status.code() {
                    Some(code) if code == expected_code => Ok(()),
                    _ => Err(self.failure(format!(
                        "QEMU exited with {status}, expected exit code {expected_code}"
                    ))),
                };
            }
            if Instant::now() >= deadline {
                bail!(self.failure(format!(
                    "QEMU still runs {} s later; expected exit code {expected_code}",
                    timeout.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Machine {
    /// Kills QEMU with SIGKILL, as a power cut would stop the machine: no
    /// flush, no shutdown. Returns once the transcript holds everything QEMU
    /// wrote before it died (its pipes are read to their end), so tests can
    /// compare what was printed before the cut with what comes after.
    pub fn power_cut(&mut self) {
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exit_status = Some(status);
        }
        // The reader threads reach end of file as soon as the pipes drain; the
        // deadline only guards against a grandchild holding them open.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mutex, condvar) = &*self.output;
        let mut output = lock(mutex);
        while !output.is_closed() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            output = condvar
                .wait_timeout(output, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.exit_status.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// What `wait_for` waits for once the pattern is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The match itself.
    Match,
    /// The end of the line the match is on.
    LineEnd,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies a QEMU output stream into the shared transcript, dropping the
/// carriage returns the kernel sends for terminals.
fn spawn_reader(
    mut stream: impl Read + Send + 'static,
    output: Arc<(Mutex<Output>, Condvar)>,
    prefix: &'static str,
) {
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        loop {
            let count = match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(count) => count,
            };
            let text = String::from_utf8_lossy(&buffer[..count]).replace('\r', "");
            let (mutex, condvar) = &*output;
            let mut output = lock(mutex);
            if prefix.is_empty() {
                output.text.push_str(&text);
            } else {
                for line in text.lines() {
                    output.text.push_str(prefix);
                    output.text.push_str(line);
                    output.text.push('\n');
                }
            }
            condvar.notify_all();
        }
        let (mutex, condvar) = &*output;
        lock(mutex).open_streams -= 1;
        condvar.notify_all();
    });
}

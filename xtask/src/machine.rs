//! One QEMU machine driven through its serial console: tests, benches, migrate.
//!
//! A [`Machine`] is one QEMU process with the serial console on pipes. Two
//! reader threads collect everything the kernel (stdout) and QEMU (stderr,
//! each line prefixed `qemu: `) print; callers wait for text with a deadline
//! ([`Machine::expect`]), type commands ([`Machine::send_line`]) and check
//! how QEMU ended ([`Machine::expect_exit`]). QEMU is killed when the
//! `Machine` is dropped, on every path, and every error carries the
//! transcript, so a failure shows what the machine said.
//!
//! The QEMU tests (tests/), the benchmarks (bench/) and `cargo xtask
//! migrate` all drive QEMU through this one type.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::private::ClusterSecretFile;
use crate::qemu::QemuConfig;

/// How long a boot may take to reach the prompt. Boots take well under a
/// second under TCG; the margin is for loaded CI machines, never for speed.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The default wait for one answer on the console.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The console prompt.
pub const PROMPT: &str = "amber> ";

/// What the reader threads collected.
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
    /// The name failures carry ("A", "B"), when there are several machines.
    name: Option<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<(Mutex<Output>, Condvar)>,
    /// Byte offset in the output up to which `expect` has consumed.
    cursor: usize,
    exit_status: Option<ExitStatus>,
    /// The machine's cluster secret file, kept until the machine is
    /// dropped: QEMU reads it while it starts, after `boot` has returned.
    _cluster_secret: Option<ClusterSecretFile>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Machine")
            .field("name", &self.name)
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
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("QEMU's standard output streams are missing");
        };
        spawn_reader(stdout, Arc::clone(&output), "");
        spawn_reader(stderr, Arc::clone(&output), "qemu: ");
        Ok(Machine {
            name: None,
            stdin: child.stdin.take(),
            child,
            output,
            cursor: 0,
            exit_status: None,
            _cluster_secret: config.cluster_secret.clone(),
        })
    }

    /// Starts QEMU with `config`; failures name the machine `name`.
    pub fn boot_named(name: &str, config: &QemuConfig) -> Result<Machine> {
        let mut machine = Machine::boot(config)?;
        machine.name = Some(name.to_string());
        Ok(machine)
    }

    /// Everything the kernel (and QEMU, prefixed `qemu: `) printed so far.
    pub fn transcript(&self) -> String {
        lock(&self.output.0).text.clone()
    }

    /// An error saying `what`, naming the machine and carrying its transcript.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let name = self
            .name
            .as_ref()
            .map_or_else(String::new, |name| format!("machine {name}: "));
        anyhow!(
            "{name}{what}\n----- transcript -----\n{}\n----- end of transcript -----",
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
            let mut from = self.cursor;
            while let Some(offset) = output.text[from..].find(pattern) {
                let start = from + offset;
                let end = start + pattern.len();
                let line_start = output.text[..start].rfind('\n').map_or(0, |i| i + 1);
                if until == Until::LineStart && start != line_start {
                    from = start + pattern.chars().next().map_or(1, char::len_utf8);
                    continue;
                }
                let line_end = output.text[end..].find('\n').map(|i| end + i);
                if line_end.is_some() || until != Until::LineEnd || output.is_closed() {
                    let line_end = line_end.unwrap_or(output.text.len());
                    let line = output.text[line_start..line_end].to_string();
                    self.cursor = end;
                    return Ok(line);
                }
                break;
            }
            let now = Instant::now();
            if output.is_closed() || now >= deadline {
                let reason = if output.is_closed() {
                    "QEMU closed its output"
                } else {
                    "timed out"
                };
                drop(output);
                return Err(self.failure(&format!(
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

    /// Waits for the console prompt: at the start of a line, where the
    /// kernel prints it, so that a domain's line that says `amber> ` (shown
    /// after its `[NAME] ` prefix) is never taken for it.
    pub fn expect_prompt(&mut self, timeout: Duration) -> Result<()> {
        // The prompt has no line end: it waits for input.
        self.wait_for(PROMPT, timeout, Until::LineStart).map(|_| ())
    }

    /// Waits for a whole line whose first word is `start` (a row of `ps`)
    /// and returns it.
    pub fn expect_line_starting(&mut self, start: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The match starts at the line end before the row, so the
            // returned text is two lines: keep the row.
            let lines = self.expect(&format!("\n{start}"), remaining)?;
            let line = lines.rsplit('\n').next().unwrap_or_default();
            if line.split_whitespace().next() == Some(start) {
                return Ok(line.to_string());
            }
        }
    }

    /// The last complete line of the whole transcript containing `pattern`.
    pub fn last_line_with(&self, pattern: &str) -> Option<String> {
        let output = lock(&self.output.0);
        output
            .text
            .lines()
            .rev()
            .find(|line| line.contains(pattern))
            .map(|line| line.trim_end().to_string())
    }

    /// Types `line` and Enter on the console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.type_text(&format!("{line}\r"))
    }

    /// Types `text` on the console as it is (Enter only where it says
    /// `\r`).
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.failure("QEMU's stdin is closed"));
        };
        let written = stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush());
        written.map_err(|error| self.failure(&format!("typing {text:?} on the console: {error}")))
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

    /// Waits for QEMU to exit and checks its status code (0 after
    /// `shutdown`; see `qemu::FAILURE_EXIT_STATUS` for a kernel failure).
    pub fn expect_exit(&mut self, expected_code: i32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let waited = self.child.try_wait();
            let status =
                waited.map_err(|error| self.failure(&format!("waiting for QEMU: {error}")))?;
            if let Some(status) = status {
                self.exit_status = Some(status);
                return match status.code() {
                    Some(code) if code == expected_code => Ok(()),
                    _ => Err(self.failure(&format!(
                        "QEMU exited with {status}, expected exit code {expected_code}"
                    ))),
                };
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "QEMU still runs {} s later; expected exit code {expected_code}",
                    timeout.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills QEMU with SIGKILL, as a power cut would stop the machine: no
    /// flush, no shutdown. Returns once the transcript holds everything QEMU
    /// wrote before it died (its pipes are read to their end), so callers
    /// can compare what was printed before the cut with what comes after.
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
    /// The match itself, where it begins a line.
    LineStart,
    /// The end of the line the match is on.
    LineEnd,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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

//! A QEMU instance driven through its serial console, for xtask's own runs.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::qemu::QemuConfig;

/// One QEMU instance with its console on pipes (the tests' harness in
/// tests/src/lib.rs is richer; xtask cannot depend on it).
#[derive(Debug)]
pub struct Guest {
    label: &'static str,
    child: Child,
    stdin: ChildStdin,
    output: Arc<(Mutex<String>, Condvar)>,
    cursor: usize,
    has_exited: bool,
}

impl Guest {
    pub fn boot(label: &'static str, config: &QemuConfig) -> Result<Guest> {
        let mut child = config
            .command()?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting QEMU")?;
        let output = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("QEMU's standard streams are missing");
        };
        spawn_reader(stdout, Arc::clone(&output));
        spawn_reader(stderr, Arc::clone(&output));
        Ok(Guest {
            label,
            child,
            stdin,
            output,
            cursor: 0,
            has_exited: false,
        })
    }

    pub fn text(&self) -> MutexGuard<'_, String> {
        self.output
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "machine {}: {what}\n----- transcript -----\n{}\n----- end of transcript -----",
            self.label,
            self.text()
        )
    }

    /// Waits for `pattern` after what was consumed, then for the end of its
    /// line (except for the prompt, which has none); returns the line.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let output = Arc::clone(&self.output);
        let (mutex, condvar) = &*output;
        let mut text = mutex
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(offset) = text[self.cursor..].find(pattern) {
                let start = self.cursor + offset;
                let end = start + pattern.len();
                let line_start = text[..start].rfind('\n').map_or(0, |index| index + 1);
                let line_end = text[end..].find('\n').map(|index| end + index);
                if line_end.is_some() || pattern.ends_with("> ") {
                    let line_end = line_end.unwrap_or(text.len());
                    let line = text[line_start..line_end].trim_end().to_string();
                    self.cursor = line_end.max(end);
                    return Ok(line);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                drop(text);
                return Err(self.failure(&format!(
                    "timed out after {} s waiting for {pattern:?}",
                    timeout.as_secs()
                )));
            }
            text = condvar
                .wait_timeout(text, (deadline - now).min(Duration::from_millis(200)))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Waits for a whole line that starts with `start` (a row of `ps`).
    pub fn expect_line_starting(&mut self, start: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The match starts at the line end before the row: keep the row.
            let lines = self.expect(&format!("\n{start}"), remaining)?;
            let line = lines.rsplit('\n').next().unwrap_or_default();
            if line.split_whitespace().next() == Some(start) {
                return Ok(line.to_string());
            }
        }
    }

    /// The last complete line of the whole transcript containing `pattern`.
    pub fn last_line_with(&self, pattern: &str) -> Option<String> {
        let text = self.text();
        text.lines()
            .rev()
            .find(|line| line.contains(pattern))
            .map(|line| line.trim_end().to_string())
    }

    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.stdin
            .write_all(format!("{line}\r").as_bytes())
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("typing {line:?} on machine {}'s console", self.label))
    }

    pub fn expect_exit_success(&mut self, timeout: Duration) -> Result<()> {
        let status = crate::qemu::wait_or_kill(&mut self.child, timeout);
        self.has_exited = true;
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(self.failure(&format!("QEMU exited with {status}"))),
            None => Err(self.failure("QEMU did not power off in time (killed)")),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if !self.has_exited {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Appends a QEMU output stream to the transcript, without carriage returns.
fn spawn_reader(mut stream: impl Read + Send + 'static, output: Arc<(Mutex<String>, Condvar)>) {
    thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count) = stream.read(&mut buffer) {
            if count == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buffer[..count]).replace('\r', "");
            let (mutex, condvar) = &*output;
            mutex
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push_str(&text);
            condvar.notify_all();
        }
    });
}

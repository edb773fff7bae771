//! The host runner end to end with the real apps: hello's exact output, and
//! domains killed with SIGKILL resume from their last commit (counter goes on
//! mid-loop, never back to 1; kv keeps its keys).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use xtask::app::build_apps;
use xtask::image::{NewArgs, new};

/// How long any expected line may take to appear.
const LINE_DEADLINE: Duration = Duration::from_secs(20);

/// The built apps, once per test binary.
fn apps() -> &'static [PathBuf] {
    static APPS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    APPS.get_or_init(|| {
        build_apps(&["hello", "counter", "kv", "kvclient"]).expect("the apps build")
    })
}

fn app(name: &str) -> PathBuf {
    apps()
        .iter()
        .find(|path| path.file_stem().is_some_and(|stem| stem == name))
        .unwrap_or_else(|| panic!("{name} was built"))
        .clone()
}

/// A fresh directory for one test's images.
fn work_dir(test: &str) -> PathBuf {
    let dir = xtask::paths::amber_dir()
        .join("test-host-runner")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the work directory");
    dir
}

fn image(dir: &Path, app_name: &str, file: &str) -> PathBuf {
    let output = dir.join(file);
    new(&NewArgs {
        wasm: app(app_name),
        name: app_name.into(),
        memory_max_mib: Some(16),
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(output.clone()),
        listen: Vec::new(),
        durable_replies: false,
    })
    .expect("image new")
}

/// A running `xtask host run` whose stdout lines arrive on a channel.
struct Runner {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Runner {
    fn start(images: &[&Path]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["host", "run", "--checkpoint-ms", "200"])
            .args(images)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the host runner");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line for which `wanted` returns something.
    fn wait_for<T>(&mut self, mut wanted: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + LINE_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = wanted(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "no expected line in time; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGKILL, as a power cut of the host process.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("killing the runner");
        let _ = self.child.wait();
        self.seen
    }
}

fn count_of(line: &str) -> Option<u64> {
    line.strip_prefix("[counter] count ")?.parse().ok()
}

#[test]
fn hello_prints_exactly_its_lines() {
    let dir = work_dir("hello");
    let hello = image(&dir, "hello", "hello.img");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["host", "run"])
        .arg(&hello)
        .output()
        .expect("running hello");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "[hello] Hello from Amber!\n"
    );
    assert!(stderr.contains("[hello] hello on stderr\n"), "{stderr}");
    assert!(
        stderr.contains("[host] hello exited with code 0"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_counter_resumes_from_its_last_commit() {
    let dir = work_dir("counter");
    let counter = image(&dir, "counter", "counter.img");
    let mut runner = Runner::start(&[&counter]);
    runner.wait_for(|line| count_of(line).filter(|&count| count >= 12));
    let seen = runner.kill();
    let last_printed = seen
        .iter()
        .filter_map(|line| count_of(line))
        .max()
        .unwrap_or(0);

    let mut runner = Runner::start(&[&counter]);
    let resumed = runner.wait_for(count_of);
    let seen_after = runner.kill();
    // Commits every 200 ms and a count every 100 ms: at most a few counts
    // after the last commit are lost, and the loop never starts over.
    assert!(
        resumed > 1 && resumed <= last_printed + 1 && resumed + 5 >= last_printed,
        "printed up to {last_printed} before SIGKILL, resumed at {resumed}\n{}",
        seen_after.join("\n")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_kv_keeps_its_keys() {
    let dir = work_dir("kv");
    let kv = image(&dir, "kv", "kv.img");
    let client = image(&dir, "kvclient", "kvclient-1.img");
    let mut runner = Runner::start(&[&kv, &client]);
    runner.wait_for(|line| (line == "[kvclient] runs before this one: 0").then_some(()));
    runner.wait_for(|line| (line == "[kvclient] get answer: 42").then_some(()));
    runner.wait_for(|line| (line == "[kvclient] kvclient done").then_some(()));
    // Let two checkpoint periods pass so that kv's state is committed.
    std::thread::sleep(Duration::from_millis(600));
    runner.kill();

    let client = image(&dir, "kvclient", "kvclient-2.img");
    let mut runner = Runner::start(&[&kv, &client]);
    let runs = runner.wait_for(|line| {
        line.strip_prefix("[kvclient] runs before this one: ")
            .map(String::from)
    });
    runner.wait_for(|line| (line == "[kvclient] kvclient done").then_some(()));
    let mut child = runner.child;
    child.kill().expect("killing the runner");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    let _ = child.wait();
    assert_eq!(runs, "1", "kv lost its keys over SIGKILL\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

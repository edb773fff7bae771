//! The host runner end to end with the real apps: hello's exact output,
//! domains killed with SIGKILL resume from their last commit (counter goes on
//! mid-loop, never back to 1; kv keeps its keys), and redis serves clients
//! through a forwarded port and keeps every key it acknowledged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
        build_apps(&["hello", "counter", "kv", "kvclient", "redis"]).expect("the apps build")
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
    image_with(dir, app_name, file, Vec::new(), false)
}

fn image_with(
    dir: &Path,
    app_name: &str,
    file: &str,
    listen: Vec<u16>,
    durable_replies: bool,
) -> PathBuf {
    let output = dir.join(file);
    new(&NewArgs {
        wasm: app(app_name),
        name: app_name.into(),
        memory_max_mib: Some(16),
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(output.clone()),
        listen,
        durable_replies,
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
        Self::start_with(&[], images)
    }

    fn start_with(options: &[&str], images: &[&Path]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["host", "run", "--checkpoint-ms", "200"])
            .args(options)
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
        std::mem::take(&mut self.seen)
    }

    /// [`Runner::kill`], returning what the runner wrote to stderr.
    fn kill_for_stderr(mut self) -> String {
        self.child.kill().expect("killing the runner");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let _ = self.child.wait();
        stderr
    }
}

impl Drop for Runner {
    /// A failing test leaves no runner behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let stderr = runner.kill_for_stderr();
    assert_eq!(runs, "1", "kv lost its keys over SIGKILL\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A port nothing listens on now, on 127.0.0.1.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

/// One RESP command on `stream` and redis's reply to it.
fn redis(stream: &mut TcpStream, words: &[&str]) -> String {
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream
        .write_all(request.as_bytes())
        .expect("sending to redis");
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        let read = stream.read(&mut byte).expect("reading redis's reply");
        assert_eq!(read, 1, "redis closed the connection; got {reply:?}");
        reply.push(byte[0]);
    }
    // A bulk string: its bytes and their CRLF follow the length line.
    if let Some(length) = reply.strip_prefix(b"$") {
        let length = String::from_utf8_lossy(&length[..length.len() - 2]).into_owned();
        if let Ok(length) = length.parse::<usize>() {
            let mut data = vec![0u8; length + 2];
            stream.read_exact(&mut data).expect("reading a bulk string");
            reply.extend_from_slice(&data);
        }
    }
    String::from_utf8(reply).expect("a text reply")
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + LINE_DEADLINE;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(LINE_DEADLINE))
                    .expect("a read timeout");
                return stream;
            }
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("nothing listens on 127.0.0.1:{port}: {error}"),
        }
    }
}

/// redis under the host runner reads what clients send into its linear
/// memory (which the runner keeps read-only between commits to find dirty
/// pages) and answers through the forward; with durable replies, every key
/// whose OK arrived is there after a SIGKILL.
#[test]
fn redis_serves_through_the_forward_and_keeps_acknowledged_keys() {
    let dir = work_dir("redis");
    let redis_image = image_with(&dir, "redis", "redis.img", vec![6379], true);
    let port = free_port();
    let forward = format!("{port}:6379");
    let mut runner = Runner::start_with(&["--forward", &forward], &[&redis_image]);
    runner.wait_for(|line| line.contains("redis ready on port 6379").then_some(()));
    let mut stream = connect(port);
    assert_eq!(redis(&mut stream, &["PING"]), "+PONG\r\n");
    // Replies larger than one read, and many rounds, all through the
    // runner's buffer.
    let big = "x".repeat(40_000);
    for key in 0..50 {
        let key = format!("key{key}");
        assert_eq!(redis(&mut stream, &["SET", &key, &big]), "+OK\r\n");
    }
    assert_eq!(redis(&mut stream, &["SET", "last", "seen"]), "+OK\r\n");
    assert_eq!(redis(&mut stream, &["DBSIZE"]), ":51\r\n");
    drop(stream);
    runner.kill();

    // Resumed mid-loop, redis does not print its first line again.
    let runner = Runner::start_with(&["--forward", &forward], &[&redis_image]);
    let mut stream = connect(port);
    assert_eq!(redis(&mut stream, &["DBSIZE"]), ":51\r\n");
    assert_eq!(redis(&mut stream, &["GET", "last"]), "$4\r\nseen\r\n");
    assert_eq!(redis(&mut stream, &["STRLEN", "key49"]), ":40000\r\n");
    drop(stream);
    runner.kill();
    let _ = std::fs::remove_dir_all(dir);
}

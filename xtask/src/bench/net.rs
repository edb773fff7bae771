//! The network benchmark: Amber's redis under the host runner against Debian's.
//!
//! Debian's `redis-server` runs twice, as the baselines measured in the
//! same run: durable (`--appendonly yes --appendfsync always`, every write
//! on disk before its reply) and plain (`--save "" --appendonly no`).
//! Amber's `redis` app (built here as `cargo xtask app build` does, to
//! target/amber/apps/redis.wasm) runs under `xtask host run` from a release
//! build of xtask (`bench::release_xtask`) twice too: with durable
//! replies (`image new --durable-replies`: no reply leaves before a commit
//! holds it) and without. `redis-benchmark -t set,get -c 50 -q` measures
//! each; the figures are Amber durable against always-fsync and Amber plain
//! against no persistence, in requests per second. Everything listens on
//! 127.0.0.1 at a port the OS just had free. A missing redis (apt packages
//! redis-server and redis-tools) or app skips that part with a line saying
//! so; timing never fails the benchmark, and every child is bounded in
//! time and killed on every path. Then the same redis, durable, in the
//! kernel under QEMU (`net_kernel.rs`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{BaselineRecord, Collector, FigureRecord, Mode, Record};
use crate::paths;

/// How long a server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The port Amber's redis declares (`image new --listen`).
const REDIS_PORT: u16 = 6379;

/// The commands measured, as redis-benchmark names them in its output.
const TESTS: [&str; 2] = ["SET", "GET"];

/// Requests per run, repetitions, and the longest one run may take.
fn workload(mode: Mode) -> (u32, usize, Duration) {
    match mode {
        Mode::Full => (100_000, 3, Duration::from_secs(300)),
        Mode::Quick => (2_000, 1, Duration::from_secs(30)),
    }
}

/// A child process killed and reaped when dropped, whatever the path.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Requests per second of each test, one sample per repetition.
#[derive(Debug, Default, Clone, PartialEq)]
struct Rates {
    set: Vec<f64>,
    get: Vec<f64>,
}

pub fn run(collector: &mut Collector) -> Result<()> {
    let Some(benchmark) = find_program("redis-benchmark") else {
        collector
            .print_text("net: redis-benchmark not found (apt-get install redis-tools): skipped");
        return Ok(());
    };
    // redis-benchmark's output goes here too (`run_bounded`).
    let directory = paths::bench_dir().join("net");
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    collector.step("building the redis app");
    let module = match crate::app::build_apps(&["redis"]).map(|mut built| built.pop()) {
        Ok(Some(module)) => module,
        Ok(None) => {
            collector.print_text("net: amber redis: app not built");
            return Ok(());
        }
        Err(error) => {
            collector.print_text(&format!("net: amber redis: app not built ({error:#})"));
            return Ok(());
        }
    };
    match find_program("redis-server") {
        Some(server) => host_comparison(collector, &server, &benchmark, &module)?,
        None => collector.print_text(
            "net: redis-server not found (apt-get install redis-server): \
             the comparison on the host skipped",
        ),
    }
    crate::bench::net_kernel::run(collector, &module, &benchmark)
}

/// Amber's redis under the host runner against Debian's redis-server.
fn host_comparison(
    collector: &mut Collector,
    server: &Path,
    benchmark: &Path,
    module: &Path,
) -> Result<()> {
    let directory = paths::bench_dir().join("net");
    collector.set_environment("host, 127.0.0.1, redis-benchmark -c 50");

    collector.step("redis-server, appendfsync always");
    let always = measure_redis(
        collector,
        server,
        benchmark,
        &directory.join("always"),
        &["--appendonly", "yes", "--appendfsync", "always"],
    )?;
    collector.step("redis-server, no persistence");
    let plain = measure_redis(
        collector,
        server,
        benchmark,
        &directory.join("plain"),
        &["--save", "", "--appendonly", "no"],
    )?;
    for (label, rates) in [("always-fsync", &always), ("no persistence", &plain)] {
        collector.print_text(&format!(
            "net: redis-server {label}: SET {:.0} requests/s, GET {:.0} requests/s",
            median(&rates.set),
            median(&rates.get)
        ));
    }

    let runner = crate::bench::release_xtask(collector)?;
    for (durability, baseline, baseline_label) in [
        (
            Durability::Durable,
            &always,
            "redis-server, appendfsync always",
        ),
        (Durability::Plain, &plain, "redis-server, no persistence"),
    ] {
        collector.step(format!("amber redis, {}", durability.label()));
        let amber = measure_amber(
            collector, &runner, benchmark, module, &directory, durability,
        )?;
        for (test, amber_samples, baseline_samples) in [
            ("set", &amber.set, &baseline.set),
            ("get", &amber.get, &baseline.get),
        ] {
            collector.record(Record::Figure(FigureRecord {
                name: format!("net.redis_{test}_{}", durability.key()),
                title: format!(
                    "redis {} throughput, {}",
                    test.to_uppercase(),
                    durability.label()
                ),
                unit: "requests/s".into(),
                amber: amber_samples.clone(),
                baseline: Some(BaselineRecord {
                    label: baseline_label.into(),
                    samples: baseline_samples.clone(),
                }),
                goal: None,
            }))?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    Durable,
    Plain,
}

impl Durability {
    pub(super) fn label(self) -> &'static str {
        match self {
            Durability::Durable => "durable replies",
            Durability::Plain => "plain",
        }
    }

    pub(super) fn key(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::Plain => "plain",
        }
    }
}

/// Debian's redis-server with `options`, its files in `directory`.
fn measure_redis(
    collector: &mut Collector,
    server: &Path,
    benchmark: &Path,
    directory: &Path,
    options: &[&str],
) -> Result<Rates> {
    // A fresh directory: an old append-only file would be loaded first.
    let _ = std::fs::remove_dir_all(directory);
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let port = free_port()?;
    let mut command = Command::new(server);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(directory)
        .args(["--daemonize", "no", "--logfile", ""])
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = Guard(
        command
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?,
    );
    wait_for_port(port, server).and_then(|server| run_benchmark(collector, benchmark, port, server))
}

/// Amber's redis under the host runner `runner` (a release xtask),
/// `durability` as asked.
fn measure_amber(
    collector: &mut Collector,
    runner: &Path,
    benchmark: &Path,
    module: &Path,
    directory: &Path,
    durability: Durability,
) -> Result<Rates> {
    let image = directory.join(format!("amber-{}.img", durability.key()));
    let _ = std::fs::remove_file(&image);
    let mut new_image = Command::new(runner);
    new_image
        .args(["image", "new", "--name", "redis", "--listen"])
        .arg(REDIS_PORT.to_string())
        .arg("--wasm")
        .arg(module)
        .arg("--output")
        .arg(&image)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if durability == Durability::Durable {
        new_image.arg("--durable-replies");
    }
    let status = new_image.status().context("running image new")?;
    if !status.success() {
        bail!("image new for amber redis exited with {status}");
    }
    let port = free_port()?;
    let log_path = directory.join(format!("amber-{}.log", durability.key()));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut host = Command::new(runner);
    host.args(["host", "run", "--forward"])
        .arg(format!("{port}:{REDIS_PORT}"))
        .arg(&image)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sharing the runner's log")?)
        .stderr(log);
    let host = Guard(host.spawn().context("starting the host runner")?);
    wait_for_port(port, host)
        .and_then(|host| run_benchmark(collector, benchmark, port, host))
        .with_context(|| format!("amber redis (runner log: {})", log_path.display()))
}

/// Waits until something accepts on 127.0.0.1:`port`, or fails when the
/// server exits or [`START_DEADLINE`] passes.
fn wait_for_port(port: u16, mut server: Guard) -> Result<Guard> {
    let started = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
        }
        if let Some(status) = server.0.try_wait().context("watching the server")? {
            bail!("the server exited with {status} before listening on port {port}");
        }
        if started.elapsed() > START_DEADLINE {
            bail!("nothing listened on port {port} within {START_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repetitions of redis-benchmark against `port`; `server` is killed
/// when they are done.
fn run_benchmark(
    collector: &mut Collector,
    benchmark: &Path,
    port: u16,
    server: Guard,
) -> Result<Rates> {
    let (requests, repetitions, deadline) = workload(collector.mode());
    let mut rates = Rates::default();
    for _ in 0..repetitions {
        let output = run_bounded(
            Command::new(benchmark)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args([
                    "-t",
                    "set,get",
                    "-c",
                    "50",
                    "-n",
                    &requests.to_string(),
                    "-q",
                ]),
            deadline,
        )?;
        for test in TESTS {
            let rate = parse_rate(&output, test).with_context(|| {
                format!("no {test} rate in redis-benchmark's output {output:?}")
            })?;
            match test {
                "SET" => rates.set.push(rate),
                _ => rates.get.push(rate),
            }
        }
    }
    drop(server);
    Ok(rates)
}

/// Runs `command` to its end or `deadline`, returning its stdout.
pub(super) fn run_bounded(command: &mut Command, deadline: Duration) -> Result<String> {
    let output_path = paths::bench_dir()
        .join("net")
        .join(paths::unique_name("redis-benchmark", "out"));
    let output_file = std::fs::File::create(&output_path)
        .with_context(|| format!("creating {}", output_path.display()))?;
    // Its errors too (a reset, an error reply), so a failure says why.
    let error_file = output_file
        .try_clone()
        .context("sharing redis-benchmark's output file")?;
    let mut child = Guard(
        command
            .stdin(Stdio::null())
            .stdout(output_file)
            .stderr(error_file)
            .spawn()
            .context("starting redis-benchmark")?,
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().context("waiting for redis-benchmark")? {
            break status;
        }
        if started.elapsed() > deadline {
            bail!("redis-benchmark did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&output_path)
        .with_context(|| format!("reading {}", output_path.display()))?;
    let _ = std::fs::remove_file(&output_path);
    if !status.success() {
        bail!("redis-benchmark exited with {status}: {output:?}");
    }
    Ok(output)
}

/// The rate of `test` in redis-benchmark's `-q` output: the segment
/// `SET: 123456.79 requests per second, p50=0.199 msec`. Progress updates
/// (`SET: rps=...`) share the line, separated by carriage returns.
pub(super) fn parse_rate(output: &str, test: &str) -> Option<f64> {
    output
        .split(['\r', '\n'])
        .filter_map(|segment| segment.trim().strip_prefix(test)?.strip_prefix(':'))
        .filter_map(|rest| {
            let (number, unit) = rest.trim().split_once(' ')?;
            unit.starts_with("requests per second")
                .then(|| number.parse::<f64>().ok())
                .flatten()
        })
        .rfind(|rate| rate.is_finite() && *rate > 0.0)
}

fn median(samples: &[f64]) -> f64 {
    super::record::Summary::of(samples).map_or(f64::NAN, |summary| summary.median)
}

/// A port free on 127.0.0.1 a moment ago (the OS's choice).
pub(super) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// `name` in a directory of `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|directory| directory.join(name))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quiet_output() {
        let output = "SET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r\
            SET: 98039.22 requests per second, p50=0.271 msec                    \n\
            GET: rps=112000.0 (overall: 111000.0) avg_msec=0.3 (overall: 0.3)\r\
            GET: 114942.53 requests per second, p50=0.239 msec                    \n";
        assert_eq!(parse_rate(output, "SET"), Some(98_039.22));
        assert_eq!(parse_rate(output, "GET"), Some(114_942.53));
        assert_eq!(parse_rate(output, "INCR"), None);
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse_rate("", "SET"), None);
        assert_eq!(parse_rate("SET: lots requests per second", "SET"), None);
        assert_eq!(parse_rate("SET: NaN requests per second", "SET"), None);
        assert_eq!(parse_rate("SET: -5 requests per second", "SET"), None);
        assert_eq!(parse_rate("SETX: 5 requests per second", "SET"), None);
        assert_eq!(parse_rate("SET: 5 bananas", "SET"), None);
    }
}

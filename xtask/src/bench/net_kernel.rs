//! The network benchmark's kernel part: redis with durable replies in QEMU.
//!
//! One machine (TCG here) boots Amber's `redis` app from an image made with
//! `--durable-replies`, so no reply leaves before a commit holds the state
//! that wrote it, plus a blank spare disk; QEMU's user networking forwards a
//! free 127.0.0.1 port to the domain's 6379. Three figures:
//!
//! - requests per second of `redis-benchmark -t set` through the forward,
//!   against the same redis booted without durable replies;
//! - the latency of one durable reply (a SET and its `+OK`, one request at a
//!   time on one connection) against the least one durable commit costs on
//!   the same disk: `diskbench`'s write + flush, twice, on the spare disk,
//!   in the same machine;
//! - the same SET latency against the plain redis's: what durability adds
//!   to a reply on top of the network path's own latency. (Every reply of a
//!   durable domain waits for a commit, a GET's too, so a GET is no
//!   baseline.)
//!
//! The machine is killed on every path (`Machine` drops QEMU); timing never
//! fails the benchmark.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::kernel_work::{machine_config, parse_diskbench, spare_disk};
use super::net::Durability;
use super::{BaselineRecord, Collector, FigureRecord, Mode, Record};
use crate::image::{self, NewArgs};
use crate::machine::Machine;
use crate::qemu::{Forward, UserNet};

/// The port Amber's redis declares.
const REDIS_PORT: u16 = 6379;

/// Machine memory: redis and its paging pool with room to spare.
const MACHINE_MEMORY_MIB: u32 = 256;

/// How long the domain may take to answer its first PING after boot.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// How long one request may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The work of one run.
#[derive(Debug, Clone, Copy)]
struct Workload {
    /// redis-benchmark's requests per run, and the runs (samples).
    benchmark_requests: u32,
    benchmark_runs: usize,
    /// Requests timed one at a time (each a sample), SETs and GETs alike.
    timed_requests: usize,
    /// diskbench runs (samples) and the MiB each reads.
    diskbench_runs: usize,
    diskbench_mib: u64,
}

fn workload(mode: Mode) -> Workload {
    match mode {
        Mode::Full => Workload {
            benchmark_requests: 2_000,
            benchmark_runs: 3,
            timed_requests: 100,
            diskbench_runs: 5,
            diskbench_mib: 16,
        },
        Mode::Quick => Workload {
            benchmark_requests: 200,
            benchmark_runs: 1,
            timed_requests: 10,
            diskbench_runs: 1,
            diskbench_mib: 4,
        },
    }
}

/// What one machine measured.
struct Measured {
    set_us: Vec<f64>,
    rates: Vec<f64>,
    commit_floor_us: Vec<f64>,
}

/// Runs the kernel part with redis built at `module` and redis-benchmark
/// at `benchmark`.
pub fn run(collector: &mut Collector, module: &Path, benchmark: &Path) -> Result<()> {
    collector.set_environment("QEMU");
    let (kernel_elf, directory, accel) =
        super::prepare_qemu(collector, "net-kernel", "256 MiB, user networking")?;
    let work = workload(collector.mode());
    let machine = MachineParts {
        kernel_elf: &kernel_elf,
        directory: &directory,
        accel,
        module,
        benchmark,
        work,
    };
    collector.step("kernel redis, durable replies");
    let durable = machine.measure(Durability::Durable)?;
    collector.step("kernel redis, plain");
    let plain = machine.measure(Durability::Plain)?;

    collector.record(Record::Figure(FigureRecord {
        name: "net.kernel_redis_set_durable".into(),
        title: "redis SET throughput in the kernel, durable replies against plain \
                (redis-benchmark -c 10)"
            .into(),
        unit: "requests/s".into(),
        amber: durable.rates,
        baseline: Some(BaselineRecord {
            label: "the same redis in the kernel without durable replies".into(),
            samples: plain.rates,
        }),
        goal: None,
    }))?;
    collector.record(Record::Figure(FigureRecord {
        name: "net.kernel_durable_reply_latency".into(),
        title: "latency of one durable reply in the kernel (SET to +OK, one at a time)".into(),
        unit: "us".into(),
        amber: durable.set_us.clone(),
        baseline: Some(BaselineRecord {
            label: "one commit's floor on the same disk: write + flush, twice".into(),
            samples: durable.commit_floor_us,
        }),
        goal: None,
    }))?;
    collector.record(Record::Figure(FigureRecord {
        name: "net.kernel_durable_reply_vs_plain".into(),
        title: "latency of one SET in the kernel, durable reply against plain".into(),
        unit: "us".into(),
        amber: durable.set_us,
        baseline: Some(BaselineRecord {
            label: "the same SET without durable replies (no commit waited for)".into(),
            samples: plain.set_us,
        }),
        goal: None,
    }))?;
    Ok(())
}

/// What every boot of this benchmark shares.
struct MachineParts<'a> {
    kernel_elf: &'a Path,
    directory: &'a Path,
    accel: crate::qemu::Accel,
    module: &'a Path,
    benchmark: &'a Path,
    work: Workload,
}

impl MachineParts<'_> {
    /// Boots redis (`durability`) and a blank spare disk, and measures.
    fn measure(&self, durability: Durability) -> Result<Measured> {
        let work = self.work;
        let key = durability.key();
        let image_path = self.directory.join(format!("redis-{key}.img"));
        if image_path.exists() {
            std::fs::remove_file(&image_path)
                .with_context(|| format!("removing the old {}", image_path.display()))?;
        }
        image::new(&NewArgs {
            wasm: self.module.to_path_buf(),
            name: "redis".into(),
            memory_max_mib: None,
            size_mib: None,
            args: Vec::new(),
            env: Vec::new(),
            output: Some(image_path.clone()),
            listen: vec![REDIS_PORT],
            durable_replies: durability == Durability::Durable,
        })?;
        let spare = spare_disk(self.directory, work.diskbench_mib)?;
        let host_port = super::net::free_port()?;
        let mut config =
            machine_config(self.kernel_elf, &image_path, self.accel, MACHINE_MEMORY_MIB);
        config.disks.push(spare);
        config.user_net = Some(UserNet {
            forwards: vec![Forward {
                host_port,
                guest_port: REDIS_PORT,
            }],
        });
        let mut machine = Machine::boot_named(&format!("net-kernel-{key}"), &config)?;
        machine.expect_prompt(START_DEADLINE)?;
        let measured = self
            .measure_booted(&mut machine, host_port, durability)
            .map_err(|error| {
                let transcript = machine.transcript();
                let tail_start = transcript.len().saturating_sub(4000);
                let tail = transcript.get(tail_start..).unwrap_or(&transcript);
                error.context(format!("redis ({key}) in QEMU; the console's end:\n{tail}"))
            })?;
        machine.send_line("shutdown")?;
        let _ = machine.expect_exit(0, Duration::from_secs(60));
        Ok(measured)
    }

    /// The measurements on a booted machine forwarding `host_port`.
    fn measure_booted(
        &self,
        machine: &mut Machine,
        host_port: u16,
        durability: Durability,
    ) -> Result<Measured> {
        let work = self.work;
        let address = SocketAddr::from(([127, 0, 0, 1], host_port));
        let mut client = wait_for_redis(address)?;
        let mut set_us = Vec::new();
        for index in 0..work.timed_requests {
            let key = format!("bench:{index}");
            set_us.push(time_request(
                &mut client,
                &["SET", &key, "value"],
                b"+OK\r\n",
            )?);
        }
        drop(client);
        let mut rates = Vec::new();
        for _ in 0..work.benchmark_runs {
            rates.push(benchmark_set(
                self.benchmark,
                host_port,
                work.benchmark_requests,
            )?);
        }
        let mut commit_floor_us = Vec::new();
        if durability == Durability::Durable {
            for _ in 0..work.diskbench_runs {
                machine.send_line(&format!("diskbench {}", work.diskbench_mib))?;
                let line = machine.expect("diskbench disk", Duration::from_secs(300))?;
                let (_, floor) =
                    parse_diskbench(&line).with_context(|| format!("cannot read {line:?}"))?;
                commit_floor_us.push(floor);
            }
        }
        Ok(Measured {
            set_us,
            rates,
            commit_floor_us,
        })
    }
}

/// Connects and PINGs until the domain answers (slirp accepts a host
/// connection before the guest does, so a connect alone proves nothing).
fn wait_for_redis(address: SocketAddr) -> Result<TcpStream> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        let attempt = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .context("connecting")
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.set_nodelay(true)?;
                time_request(&mut stream, &["PING"], b"+PONG\r\n")?;
                Ok(stream)
            });
        match attempt {
            Ok(stream) => {
                stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
                return Ok(stream);
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!("redis at {address} never answered PING")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Sends one command and reads until exactly `expected` came back; the
/// time from the write to the reply's last byte, in microseconds.
fn time_request(stream: &mut TcpStream, words: &[&str], expected: &[u8]) -> Result<f64> {
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    let began = Instant::now();
    stream.write_all(request.as_bytes())?;
    let mut reply = Vec::with_capacity(expected.len());
    let mut buffer = [0u8; 64];
    while reply.len() < expected.len() {
        let count = stream.read(&mut buffer).context("reading the reply")?;
        if count == 0 {
            bail!(
                "the connection closed after {:?}",
                String::from_utf8_lossy(&reply)
            );
        }
        reply.extend_from_slice(&buffer[..count]);
    }
    let elapsed = began.elapsed();
    if reply != expected {
        bail!(
            "{} answered {:?}, not {:?}",
            words[0],
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(expected)
        );
    }
    Ok(elapsed.as_secs_f64() * 1e6)
}

/// One run of `redis-benchmark -t set` of `requests` requests; its rate.
fn benchmark_set(benchmark: &Path, port: u16, requests: u32) -> Result<f64> {
    let output = super::net::run_bounded(
        Command::new(benchmark)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            // 10 clients: QEMU's user networking listens for a forward
            // with a backlog of one, and 50 connecting at once under load
            // leave some waiting on the host's SYN cookies for good (the
            // kernel itself takes 64 at once: net_apps.rs).
            .args(["-t", "set", "-c", "10", "-n", &requests.to_string(), "-q"]),
        Duration::from_secs(600),
    )?;
    super::net::parse_rate(&output, "SET")
        .with_context(|| format!("no SET rate in redis-benchmark's output {output:?}"))
}

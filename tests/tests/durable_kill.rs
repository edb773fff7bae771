//! Durable replies under power cuts: no `+OK` a client read is ever lost.
//!
//! One redis image with durable replies (`image new --durable-replies`) is
//! booted again and again with a forward of 6379. Every round waits until
//! redis answers, then sets keys from a client thread (`SET key:R:I`, one
//! after another, each `+OK` recorded) beside `redis-benchmark -t set` as
//! extra load when it is installed, and kills QEMU with SIGKILL at a random
//! moment after the first `+OK` (a seeded xorshift picks it; the seed is
//! printed and `AMBER_DURABLE_KILL_SEED` replays it). The client connected
//! across the cut must see its connection end (an end of stream or a
//! reset, never a hang: every read has a timeout); the next boot it
//! reconnects and must find every key whose `+OK` any round's client read,
//! with its value. A last boot checks the last cut and shuts down.
//!
//! `AMBER_DURABLE_KILL_ROUNDS` sets the number of rounds (default 30).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tests::resp::{Reply, RespClient};
use tests::{
    ANSWER_TIMEOUT, Forward, Machine, Replies, SERVICE_TIMEOUT, Xorshift, app_image,
    boot_forwarded, environment_number, forwards_to, has_tool, retry_until, seed_from_environment,
    work_dir,
};

/// Rounds when `AMBER_DURABLE_KILL_ROUNDS` is not set.
const DEFAULT_ROUNDS: u64 = 30;

/// The port redis listens on in the guest.
const REDIS_PORT: u16 = 6379;

/// The cut comes this long after the client's first `+OK`, at least ...
const MIN_CUT_DELAY_MS: u64 = 300;

/// ... and at most: short rounds keep 20 of them within a few minutes
/// under TCG, and every one still sees many commits.
const MAX_CUT_DELAY_MS: u64 = 3000;

/// How long one reply may take: a commit on a loaded host under TCG.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many GETs the check sends in one pipeline.
const GETS_PER_PIPELINE: usize = 100;

/// A key whose `+OK` a client read, and the value it set.
#[derive(Debug, Clone)]
struct Acknowledged {
    key: String,
    value: String,
}

/// How the setting client's connection ended at the cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The stream ended (QEMU's slirp socket closed with it).
    EndOfStream,
    /// A reset or a broken pipe.
    Reset,
}

/// What the setting client of one round did.
#[derive(Debug)]
struct ClientReport {
    acknowledged: Vec<Acknowledged>,
    ending: Ending,
}

/// `redis-benchmark` running beside the client, killed when dropped.
struct Benchmark(Child);

impl Benchmark {
    /// Whether it is still running (it gave load until now).
    fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Benchmark {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-benchmark -t set` against `port`, its output to `log`, or
/// none when it is not installed.
fn start_benchmark(port: u16, log: &Path) -> Result<Option<Benchmark>> {
    if !has_tool("redis-benchmark") {
        return Ok(None);
    }
    let output =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        // Random keys among 10,000 keep the keyspace (and so each commit's
        // dirty pages) bounded over the rounds.
        // Ten clients: QEMU's user networking listens for a forward with
        // a backlog of one, and more at once may wait on SYN cookies.
        .args(["-t", "set", "-n", "100000", "-r", "10000", "-c", "10", "-q"])
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .context("starting redis-benchmark")?;
    Ok(Some(Benchmark(child)))
}

/// The value `SET` gives key `index` of round `round`: long enough that
/// the values of a round fill pages, and unique.
fn value_of(round: u64, index: u64) -> String {
    format!(
        "value-{round}-{index}-{}",
        "x".repeat((index % 48) as usize)
    )
}

/// Sets `key:ROUND:I` for I = 0, 1, ... one after another on one
/// connection until it ends, telling `first_ok` at the first `+OK`.
fn set_keys(
    address: SocketAddr,
    round: u64,
    first_ok: mpsc::Sender<()>,
) -> Result<ClientReport, String> {
    let mut client = RespClient::connect(address, REPLY_TIMEOUT)
        .map_err(|error| format!("connecting: {error}"))?;
    let mut acknowledged = Vec::new();
    let mut index = 0u64;
    let ending = loop {
        let key = format!("key:{round}:{index}");
        let value = value_of(round, index);
        match client.command(&[b"SET", key.as_bytes(), value.as_bytes()]) {
            Ok(reply) if reply.is_ok() => {
                if acknowledged.is_empty() {
                    let _ = first_ok.send(());
                }
                acknowledged.push(Acknowledged { key, value });
                index += 1;
            }
            Ok(reply) => return Err(format!("SET {key} answered {reply:?}")),
            Err(error) => match error.kind() {
                io::ErrorKind::UnexpectedEof => break Ending::EndOfStream,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => break Ending::Reset,
                // A timeout is a hang: the machine was still up, or its
                // death did not reach the connection.
                _ => return Err(format!("SET {key}: {error} ({:?})", error.kind())),
            },
        }
    };
    Ok(ClientReport {
        acknowledged,
        ending,
    })
}

/// Whether redis answers `PING` on a new connection.
fn ping(address: SocketAddr) -> Result<()> {
    let mut client = RespClient::connect(address, REPLY_TIMEOUT)?;
    match client.command(&[b"PING"])? {
        Reply::Simple(text) if text == "PONG" => Ok(()),
        reply => bail!("PING answered {reply:?}"),
    }
}

/// The keys of `expected` that redis does not hold with their value, each
/// with what it held instead; GETs pipelined on one connection.
fn missing_keys(address: SocketAddr, expected: &[Acknowledged]) -> Result<Vec<(String, Reply)>> {
    let mut client = RespClient::connect(address, REPLY_TIMEOUT)?;
    let mut missing = Vec::new();
    for chunk in expected.chunks(GETS_PER_PIPELINE) {
        let commands: Vec<Vec<&[u8]>> = chunk
            .iter()
            .map(|entry| vec![&b"GET"[..], entry.key.as_bytes()])
            .collect();
        let replies = client.pipeline(&commands).context("pipelined GETs")?;
        for (entry, reply) in chunk.iter().zip(replies) {
            if reply != Reply::Bulk(Some(entry.value.clone().into_bytes())) {
                missing.push((entry.key.clone(), reply));
            }
        }
    }
    Ok(missing)
}

/// Whether a transcript shows the kernel panicking or redis trapping.
fn has_failed(transcript: &str) -> bool {
    transcript.contains("PANIC") || transcript.contains("trapped")
}

/// The test's state across rounds.
struct Kills {
    seed: u64,
    random: Xorshift,
    /// The test's work directory, for redis-benchmark's output.
    directory: PathBuf,
    disks: Vec<PathBuf>,
    forwards: Vec<Forward>,
    address: SocketAddr,
    /// Every key whose `+OK` a client read, over all rounds.
    acknowledged: Vec<Acknowledged>,
    /// The transcript of the boot before the current one, for failures.
    previous_transcript: String,
    resets: u64,
    ends_of_stream: u64,
    /// Rounds killed while redis-benchmark still ran beside the client.
    loaded_rounds: u64,
}

impl Kills {
    /// An error naming the seed, with both boots' transcripts.
    fn failure(&self, round: u64, what: &str, machine: &Machine) -> anyhow::Error {
        anyhow!(
            "round {round}: {what}\nreplay with AMBER_DURABLE_KILL_SEED={}\n\
             ----- transcript of the boot before (ends at the kill) -----\n{}\n\
             ----- transcript of this boot -----\n{}\n----- end of transcripts -----",
            self.seed,
            self.previous_transcript,
            machine.transcript(),
        )
    }

    /// Boots, waits until redis answers, and checks that it holds every
    /// acknowledged key: the client cut off by the last kill reconnects
    /// and finds its data.
    fn boot_and_check(&self, round: u64) -> Result<Machine> {
        let machine = boot_forwarded(&self.disks, &self.forwards)?;
        retry_until(SERVICE_TIMEOUT, || ping(self.address))
            .map_err(|error| self.failure(round, &format!("PING: {error:#}"), &machine))?;
        let missing = missing_keys(self.address, &self.acknowledged)
            .map_err(|error| self.failure(round, &format!("GET: {error:#}"), &machine))?;
        if !missing.is_empty() {
            let shown: Vec<_> = missing.iter().take(20).collect();
            return Err(self.failure(
                round,
                &format!(
                    "{} of {} acknowledged keys lost (first ones, with what GET answered): \
                     {shown:?}",
                    missing.len(),
                    self.acknowledged.len()
                ),
                &machine,
            ));
        }
        if has_failed(&machine.transcript()) {
            return Err(self.failure(round, "the kernel or redis failed", &machine));
        }
        Ok(machine)
    }

    /// One round: boot and check, then set keys under load and kill QEMU.
    fn round(&mut self, round: u64) -> Result<()> {
        let started = Instant::now();
        let mut machine = self.boot_and_check(round)?;
        let checked_ms = started.elapsed().as_millis();

        let (first_ok, first_ok_seen) = mpsc::channel();
        let address = self.address;
        let client = thread::spawn(move || set_keys(address, round, first_ok));
        if first_ok_seen.recv_timeout(SERVICE_TIMEOUT).is_err() {
            // Killed first, so that the join below cannot wait on a
            // client that is still setting keys.
            machine.power_cut();
            let why = match client.join() {
                Ok(Err(error)) => error,
                Ok(Ok(report)) => format!("the connection ended ({:?})", report.ending),
                Err(_) => "the client panicked".into(),
            };
            return Err(self.failure(round, &format!("no +OK to the first SET: {why}"), &machine));
        }
        // Only now, with the client's connection accepted: the kernel
        // takes at most LISTEN_BACKLOG (64) new clients at once on a port
        // and resets the others.
        let log = self.directory.join(format!("redis-benchmark-{round}.log"));
        let mut benchmark = start_benchmark(self.address.port(), &log)?;
        let cut_delay_ms = self.random.between(MIN_CUT_DELAY_MS, MAX_CUT_DELAY_MS);
        thread::sleep(Duration::from_millis(cut_delay_ms));
        let load = match benchmark.as_mut().map(Benchmark::is_running) {
            Some(true) => {
                self.loaded_rounds += 1;
                "redis-benchmark running"
            }
            Some(false) => {
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                println!("round {round}: redis-benchmark stopped early: {output:?}");
                "redis-benchmark had stopped"
            }
            None => "no redis-benchmark",
        };
        machine.power_cut();
        drop(benchmark);

        // The client's reads time out after REPLY_TIMEOUT, so this join ends.
        let report = client
            .join()
            .map_err(|_| anyhow!("round {round}: the setting client panicked"))?
            .map_err(|error| {
                self.failure(round, &format!("the setting client: {error}"), &machine)
            })?;
        if has_failed(&machine.transcript()) {
            return Err(self.failure(round, "the kernel or redis failed", &machine));
        }
        match report.ending {
            Ending::EndOfStream => self.ends_of_stream += 1,
            Ending::Reset => self.resets += 1,
        }
        for disk in &self.disks {
            xtask::image::verify(disk).map_err(|error| {
                self.failure(
                    round,
                    &format!("verifying after the kill: {error:#}"),
                    &machine,
                )
            })?;
        }
        println!(
            "round {round}: booted and checked {} keys in {checked_ms} ms; killed {cut_delay_ms} \
             ms after the first +OK ({load}); {} keys acknowledged, connection {:?}",
            self.acknowledged.len(),
            report.acknowledged.len(),
            report.ending,
        );
        self.acknowledged.extend(report.acknowledged);
        self.previous_transcript = machine.transcript();
        Ok(())
    }
}

#[test]
fn every_acknowledged_set_survives_sigkill_of_qemu_at_random_moments() -> Result<()> {
    let started = Instant::now();
    let rounds = environment_number("AMBER_DURABLE_KILL_ROUNDS")?.unwrap_or(DEFAULT_ROUNDS);
    let seed = seed_from_environment("AMBER_DURABLE_KILL_SEED")?;
    println!("durable kill test: {rounds} rounds, AMBER_DURABLE_KILL_SEED={seed}");
    if !has_tool("redis-benchmark") {
        println!(
            "redis-benchmark is missing (apt-get install redis-tools; .ci/run does): \
             the client sets keys without the extra load"
        );
    }
    let directory = work_dir("durable_kill")?;
    let disks = vec![app_image(
        &directory,
        "redis",
        "redis",
        &[REDIS_PORT],
        Replies::Durable,
    )?];
    let forwards = forwards_to(&[REDIS_PORT])?;
    let address = SocketAddr::from(([127, 0, 0, 1], forwards[0].host_port));
    let mut kills = Kills {
        seed,
        random: Xorshift::new(seed),
        directory,
        disks,
        forwards,
        address,
        acknowledged: Vec::new(),
        previous_transcript: String::new(),
        resets: 0,
        ends_of_stream: 0,
        loaded_rounds: 0,
    };
    for round in 0..rounds {
        kills
            .round(round)
            .with_context(|| format!("round {round}, AMBER_DURABLE_KILL_SEED={seed}"))?;
    }
    let mut machine = kills
        .boot_and_check(rounds)
        .with_context(|| format!("the boot after the last kill, AMBER_DURABLE_KILL_SEED={seed}"))?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;

    if rounds > 0 {
        assert!(
            !kills.acknowledged.is_empty(),
            "no SET was acknowledged in {rounds} rounds"
        );
    }
    println!(
        "durable kill test: {rounds} kills, {} acknowledged keys, 0 lost ({} connections ended, \
         {} reset; {} rounds under redis-benchmark) in {:.1} s (seed {seed})",
        kills.acknowledged.len(),
        kills.ends_of_stream,
        kills.resets,
        kills.loaded_rounds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

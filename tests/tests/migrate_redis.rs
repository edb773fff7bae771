//! A live migration of redis under a running client, through one stable port.
//!
//! A runs redis, B has a spare disk; each forwards a host port of its own
//! to port 6379, and xtask's gateway sits in front of both. A client sets
//! `k<i>` to `v<i>` through the gateway, one key after another, while A
//! moves redis to B: the connection open at the hand-over is reset, and the
//! client connects again through the same port. Once redis runs on B, more
//! keys go there, and every key the client saw `+OK` for is read back
//! through the gateway: redis's data moved with its linear memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Cluster, Forward, LinkEnd, Machine, UserNet, build_apps,
    free_port, work_dir,
};
use xtask::gateway::{Backend, Gateway};

/// A whole migration between two TCG machines on a loaded host.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(180);

/// How long redis may take to answer its first client, or the client to
/// get its next keys through, on a loaded host under TCG.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Keys acknowledged before the migration starts, and again after it.
const KEYS_EACH_SIDE: usize = 20;

/// The largest bulk reply the client takes (its values are a few bytes).
const MAX_BULK_BYTES: usize = 1 << 20;

/// A reply of redis's protocol (RESP 2) that this test reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
}

/// One connection speaking RESP, every read bounded by [`REPLY_TIMEOUT`].
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(address: SocketAddr) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&address, REPLY_TIMEOUT)
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends `words` as one command and reads its reply.
    fn command(&mut self, words: &[&str]) -> Result<Reply> {
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        self.writer.write_all(request.as_bytes())?;
        let line = self.line()?;
        let Some(kind) = line.chars().next() else {
            bail!("an empty reply line");
        };
        let rest = &line[kind.len_utf8()..];
        Ok(match kind {
            '+' => Reply::Status(rest.to_string()),
            '-' => Reply::Error(rest.to_string()),
            ':' => Reply::Integer(rest.parse().context("an integer reply")?),
            '$' if rest == "-1" => Reply::Bulk(None),
            '$' => {
                let length: usize = rest.parse().context("a bulk length")?;
                if length > MAX_BULK_BYTES {
                    bail!("a bulk reply of {length} bytes");
                }
                let mut body = vec![0u8; length + 2];
                self.reader.read_exact(&mut body)?;
                body.truncate(length);
                Reply::Bulk(Some(String::from_utf8(body).context("a bulk reply")?))
            }
            _ => bail!("an unexpected reply {line:?}"),
        })
    }

    /// One reply line without its CRLF; an end of stream is an error.
    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let length = (&mut self.reader)
            .take(MAX_BULK_BYTES as u64)
            .read_line(&mut line)?;
        if length == 0 {
            bail!("the connection closed");
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// What the writing client did, shared with the test.
#[derive(Default)]
struct Progress {
    /// The indexes of the keys redis acknowledged, in order.
    acknowledged: Mutex<Vec<u64>>,
    /// Connections the client had to open again.
    reconnects: AtomicUsize,
    /// The last error the client saw, for a failure's message.
    last_error: Mutex<Option<String>>,
    is_stopping: AtomicBool,
}

impl Progress {
    fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().map_or(0, |keys| keys.len())
    }
}

/// Stops the writer when dropped, on every path out of the test.
struct StopOnDrop(Arc<Progress>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.is_stopping.store(true, Ordering::SeqCst);
    }
}

/// Sets `k<i>` to `v<i>` for i = 0, 1, ... through `address`, each key
/// until redis acknowledges it (a SET sent again sets the same value),
/// connecting again after any error, until told to stop.
fn write_keys(address: SocketAddr, progress: &Progress) {
    let mut client: Option<Client> = None;
    let mut index: u64 = 0;
    while !progress.is_stopping.load(Ordering::SeqCst) {
        let result = (|| -> Result<Reply> {
            if client.is_none() {
                client = Some(Client::connect(address)?);
            }
            let connection = client.as_mut().ok_or_else(|| anyhow!("no connection"))?;
            connection.command(&["SET", &format!("k{index}"), &format!("v{index}")])
        })();
        match result {
            Ok(Reply::Status(status)) if status == "OK" => {
                if let Ok(mut keys) = progress.acknowledged.lock() {
                    keys.push(index);
                }
                index += 1;
            }
            Ok(other) => {
                if let Ok(mut error) = progress.last_error.lock() {
                    *error = Some(format!("SET k{index}: {other:?}"));
                }
                client = None;
                thread::sleep(Duration::from_millis(100));
            }
            Err(error) => {
                if let Ok(mut last) = progress.last_error.lock() {
                    *last = Some(format!("SET k{index}: {error:#}"));
                }
                if client.take().is_some() {
                    progress.reconnects.fetch_add(1, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Waits until the client has `count` keys acknowledged.
fn wait_for_keys(progress: &Progress, count: usize, machine: &Machine) -> Result<()> {
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    while progress.acknowledged_count() < count {
        if Instant::now() >= deadline {
            let error = progress
                .last_error
                .lock()
                .map_or(None, |error| error.clone());
            return Err(machine.failure(&format!(
                "{} of {count} keys acknowledged within {SERVICE_TIMEOUT:?}; last error: {error:?}",
                progress.acknowledged_count()
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A new redis image in `directory` declaring port 6379.
fn redis_image(directory: &Path) -> Result<PathBuf> {
    build_apps()?;
    xtask::image::new(&xtask::image::NewArgs {
        wasm: xtask::paths::apps_dir().join("redis.wasm"),
        name: "redis".into(),
        memory_max_mib: None,
        size_mib: None,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(directory.join("redis.img")),
        listen: vec![6379],
        durable_replies: false,
    })
}

/// A blank disk as large as `like` (at least 64 MiB): a spare it fits on.
fn spare_like(like: &Path, path: &Path) -> Result<PathBuf> {
    let length = std::fs::metadata(like)
        .with_context(|| format!("reading {}", like.display()))?
        .len()
        .max(64 << 20);
    std::fs::File::create(path)
        .and_then(|file| file.set_len(length))
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// Boots a machine of `cluster` with a user card forwarding 127.0.0.1:`host_port` to 6379.
fn boot(
    cluster: &Cluster,
    name: &str,
    end: LinkEnd,
    host: u8,
    disks: Vec<PathBuf>,
    host_port: u16,
) -> Result<Machine> {
    let mut config = cluster.config(end, host, disks)?;
    config.user_net = Some(UserNet {
        forwards: vec![Forward {
            host_port,
            guest_port: 6379,
        }],
    });
    let mut machine = Machine::boot_named(name, &config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    Ok(machine)
}

#[test]
fn every_acknowledged_key_is_read_through_the_stable_port_after_a_live_migration() -> Result<()> {
    let started = Instant::now();
    let directory = work_dir("migrate-redis")?;
    let redis = redis_image(&directory)?;
    let b_spare = spare_like(&redis, &directory.join("b-spare.img"))?;
    let cluster = Cluster::new()?;
    let (a_port, b_port) = (free_port()?, free_port()?);
    let mut a = boot(&cluster, "A", LinkEnd::Listen, 1, vec![redis], a_port)?;
    let mut b = boot(&cluster, "B", LinkEnd::Connect, 2, vec![b_spare], b_port)?;
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let gateway = Gateway::start(
        "redis",
        0,
        vec![
            Backend {
                machine: "A".into(),
                address: local(a_port),
            },
            Backend {
                machine: "B".into(),
                address: local(b_port),
            },
        ],
    )?;
    a.expect("[redis] redis ready on port 6379", SERVICE_TIMEOUT)?;
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let pong =
            Client::connect(gateway.address()).and_then(|mut client| client.command(&["PING"]));
        match pong {
            Ok(Reply::Status(status)) if status == "PONG" => break,
            other if Instant::now() >= deadline => {
                return Err(a.failure(&format!("PING through the gateway: {other:?}")));
            }
            _ => thread::sleep(Duration::from_millis(500)),
        }
    }

    let progress = Arc::new(Progress::default());
    let _stop = StopOnDrop(Arc::clone(&progress));
    let writer = {
        let progress = Arc::clone(&progress);
        let address = gateway.address();
        thread::spawn(move || write_keys(address, &progress))
    };
    wait_for_keys(&progress, KEYS_EACH_SIDE, &a)?;

    let at_start = progress.acknowledged_count();
    a.send_line("migrate redis 169.254.0.2")?;
    let moved = a.expect("[migrate] redis: moved to 169.254.0.2", MIGRATION_TIMEOUT)?;
    b.expect(
        "[migrate] redis arrived from 169.254.0.1",
        MIGRATION_TIMEOUT,
    )?;
    let at_hand_over = progress.acknowledged_count();

    // More keys, which B must take: A no longer runs redis.
    wait_for_keys(&progress, at_hand_over + KEYS_EACH_SIDE, &b)?;
    progress.is_stopping.store(true, Ordering::SeqCst);
    if writer.join().is_err() {
        bail!("the writing client panicked");
    }
    assert_eq!(gateway.current_machine(), "B", "the gateway did not follow");
    let acknowledged = progress
        .acknowledged
        .lock()
        .map_err(|_| anyhow!("the writer's list is poisoned"))?
        .clone();

    // Every acknowledged key, read back through the stable port.
    let mut client = Client::connect(gateway.address())?;
    let mut lost = Vec::new();
    for index in &acknowledged {
        let key = format!("k{index}");
        let reply = client
            .command(&["GET", &key])
            .map_err(|error| b.failure(&format!("GET {key}: {error:#}")))?;
        if reply != Reply::Bulk(Some(format!("v{index}"))) {
            lost.push((key, reply));
        }
    }
    let size = client.command(&["DBSIZE"])?;
    let table = b.run_command("ps")?;
    assert!(
        table
            .iter()
            .any(|line| line.starts_with("redis ") && line.contains("running")),
        "B: {table:?}"
    );
    let table = a.run_command("ps")?;
    assert!(
        table
            .iter()
            .any(|line| line.starts_with("redis ") && line.contains("moved away")),
        "A: {table:?}"
    );
    eprintln!(
        "redis through the gateway: {} keys acknowledged ({at_start} before the migrate \
         command, {} during it, {} after it on B), {} reconnects, DBSIZE {size:?}, lost {}; \
         {} in {:?}",
        acknowledged.len(),
        at_hand_over - at_start,
        acknowledged.len() - at_hand_over,
        progress.reconnects.load(Ordering::SeqCst),
        lost.len(),
        moved.trim(),
        started.elapsed()
    );
    assert!(lost.is_empty(), "keys lost or changed: {lost:?}");
    a.send_line("shutdown")?;
    a.expect_exit(0, ANSWER_TIMEOUT)?;
    b.send_line("shutdown")?;
    b.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

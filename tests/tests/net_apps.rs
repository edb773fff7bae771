//! Apps that serve the network, reached from the host as a user would:
//! Debian's `redis-cli` and `curl` through QEMU's forwards on 127.0.0.1.
//!
//! - `redis` keeps the keys a client set across a commit and a power cut;
//! - `httpd`'s visit counter and the plain std `webstd` app answer curl,
//!   and the counter survives a reboot;
//! - an image that does not declare the port its app listens on is
//!   refused the port;
//! - 1,000 clients at once leave the other domains running;
//! - 60 clients connecting at once to a durable redis are all served.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::resp::RespClient;
use tests::{
    ANSWER_TIMEOUT, Forward, Machine, Replies, SERVICE_TIMEOUT, app_image, boot_forwarded, flood,
    forwards_to, has_tool, last_count, retry_until, work_dir,
};

/// A new image of `app` named `name` declaring `listen`, replies at once.
fn image(directory: &Path, app: &str, name: &str, listen: &[u16]) -> Result<PathBuf> {
    app_image(directory, app, name, listen, Replies::Immediate)
}

/// The output of `program arguments`, trimmed, or why it failed.
fn run(program: &str, arguments: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .with_context(|| format!("running {program}"))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        bail!(
            "{program} {arguments:?} failed ({}): {text} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(text)
}

/// `redis-cli` against port `port` of 127.0.0.1 (with a timeout).
fn redis_cli(port: u16, command: &[&str]) -> Result<String> {
    let port = port.to_string();
    // This redis-cli has no timeout option: coreutils' `timeout` bounds it.
    let mut arguments = vec!["20", "redis-cli", "-h", "127.0.0.1", "-p", &port];
    arguments.extend_from_slice(command);
    let answer = run("timeout", &arguments)?;
    // redis-cli exits 0 on a refused connection and says so on stdout.
    if answer.contains("Could not connect") || answer.contains("Connection reset") {
        bail!("{answer}");
    }
    Ok(answer)
}

/// `curl` of `path` at port `port` of 127.0.0.1.
fn curl(port: u16, path: &str) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    run("curl", &["-sS", "--max-time", "20", &url])
}

/// Boots `disks` (a fresh redis on the first) with redis's port forwarded
/// from the host, and waits until redis answers PING through it.
fn boot_redis(disks: &[PathBuf]) -> Result<(Machine, Vec<Forward>)> {
    let forwards = forwards_to(&[6379])?;
    let port = forwards[0].host_port;
    let mut machine = boot_forwarded(disks, &forwards)?;
    machine.expect("[redis] redis ready on port 6379", SERVICE_TIMEOUT)?;
    let answer = retry_until(SERVICE_TIMEOUT, || redis_cli(port, &["PING"]))
        .map_err(|error| machine.failure(&format!("PING: {error:#}")))?;
    assert_eq!(answer, "PONG");
    Ok((machine, forwards))
}

#[test]
fn redis_cli_sets_keys_that_survive_a_power_cut_after_a_commit() -> Result<()> {
    if !has_tool("redis-cli") {
        bail!("redis-cli is missing: apt-get install redis-tools (.ci/run does)");
    }
    let directory = work_dir("net_apps_redis")?;
    let disks = vec![image(&directory, "redis", "redis", &[6379])?];
    let (mut machine, forwards) = boot_redis(&disks)?;
    let port = forwards[0].host_port;
    for index in 0..20 {
        let key = format!("key:{index}");
        let value = format!("value-{index}");
        let answer = redis_cli(port, &["SET", &key, &value])
            .map_err(|error| machine.failure(&format!("SET {key}: {error:#}")))?;
        assert_eq!(answer, "OK", "SET {key}");
    }
    assert_eq!(redis_cli(port, &["GET", "key:7"])?, "value-7");
    assert_eq!(redis_cli(port, &["DBSIZE"])?, "20");
    assert_eq!(redis_cli(port, &["INCR", "visits"])?, "1");

    // A client connected across the power cut loses its connection; a new
    // one finds every key the commit held.
    let stale = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let answer = machine.run_command("checkpoint redis")?;
    assert!(
        answer.iter().any(|line| line.contains("redis")),
        "checkpoint: {answer:?}"
    );
    machine.power_cut();
    drop(machine);
    drop(stale);

    let mut machine = boot_forwarded(&disks, &forwards)?;
    let answer = retry_until(SERVICE_TIMEOUT, || redis_cli(port, &["GET", "key:19"]))
        .map_err(|error| machine.failure(&format!("GET after the reboot: {error:#}")))?;
    assert_eq!(answer, "value-19");
    assert_eq!(redis_cli(port, &["DBSIZE"])?, "21");
    assert_eq!(redis_cli(port, &["INCR", "visits"])?, "2");
    let table = machine.run_command("ps")?;
    assert!(
        table.iter().any(|line| line.starts_with("redis ")),
        "ps: {table:?}"
    );
    Ok(())
}

/// A burst of clients (redis-benchmark opens its 50 at once) while the
/// domain commits: each needs a listening socket of its own in the kernel,
/// and one that finds none is reset (as every client past the 16th was).
#[test]
fn sixty_clients_connecting_at_once_to_a_durable_redis_are_all_served() -> Result<()> {
    const CLIENTS: usize = 60;
    if !has_tool("redis-cli") {
        bail!("redis-cli is missing: apt-get install redis-tools (.ci/run does)");
    }
    let directory = work_dir("net_apps_burst")?;
    let disks = vec![app_image(
        &directory,
        "redis",
        "redis",
        &[6379],
        Replies::Durable,
    )?];
    let (machine, forwards) = boot_redis(&disks)?;
    let port = forwards[0].host_port;

    // One SET starts a commit; the burst arrives while it runs.
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut first = RespClient::connect(address, ANSWER_TIMEOUT)?;
    first.send(&[b"SET", b"first", b"1"])?;
    // Each client sends its SET as soon as it is connected, as
    // redis-benchmark's do: the domain serves and commits while the later
    // ones connect. (QEMU's user networking listens for a forward with a
    // backlog of one, so under heavy guest traffic connects faster than it
    // accepts can wait on the host's SYN cookies instead; this burst is
    // light enough that QEMU keeps up, and a millisecond apart the guest
    // would keep up too and test nothing.)
    let mut clients = Vec::with_capacity(CLIENTS);
    for index in 0..CLIENTS {
        let mut client = RespClient::connect(address, ANSWER_TIMEOUT)
            .map_err(|error| machine.failure(&format!("connecting client {index}: {error}")))?;
        let key = format!("burst:{index:02}");
        client
            .send(&[b"SET", key.as_bytes(), b"v"])
            .map_err(|error| machine.failure(&format!("client {index} sending: {error}")))?;
        clients.push(client);
    }
    for (index, client) in clients.iter_mut().enumerate() {
        let reply = client.read_reply().map_err(|error| {
            machine.failure(&format!("client {index} of {CLIENTS} got no +OK: {error}"))
        })?;
        assert!(reply.is_ok(), "client {index}: {reply:?}");
    }
    drop(clients);
    drop(first);
    let size = redis_cli(port, &["DBSIZE"])?;
    assert_eq!(size, (CLIENTS + 1).to_string(), "DBSIZE after the burst");
    Ok(())
}

#[test]
fn curl_gets_pages_whose_visit_counter_survives_a_reboot() -> Result<()> {
    if !has_tool("curl") {
        bail!("curl is missing: apt-get install curl (.ci/run does)");
    }
    let directory = work_dir("net_apps_http")?;
    let disks = vec![
        image(&directory, "httpd", "httpd", &[8080])?,
        image(&directory, "webstd", "webstd", &[8081])?,
    ];
    let forwards = forwards_to(&[8080, 8081])?;
    let (httpd, webstd) = (forwards[0].host_port, forwards[1].host_port);
    let mut machine = boot_forwarded(&disks, &forwards)?;
    let page = retry_until(SERVICE_TIMEOUT, || curl(httpd, "/"))
        .map_err(|error| machine.failure(&format!("curl httpd: {error:#}")))?;
    assert!(page.contains("visited"), "httpd's page: {page:?}");
    curl(httpd, "/")?;
    let visits = |json: &str| -> Option<u64> {
        json.strip_prefix("{\"visits\":")?
            .strip_suffix('}')?
            .parse()
            .ok()
    };
    let before = curl(httpd, "/api/visits")?;
    assert_eq!(visits(&before), Some(2), "{before:?}");
    let std_page = retry_until(SERVICE_TIMEOUT, || curl(webstd, "/"))
        .map_err(|error| machine.failure(&format!("curl webstd: {error:#}")))?;
    assert!(!std_page.is_empty(), "webstd answered nothing");

    let answer = machine.run_command("checkpoint")?;
    assert!(!answer.is_empty(), "checkpoint said nothing");
    machine.power_cut();
    drop(machine);

    let machine = boot_forwarded(&disks, &forwards)?;
    let after = retry_until(SERVICE_TIMEOUT, || curl(httpd, "/api/visits"))
        .map_err(|error| machine.failure(&format!("curl httpd after reboot: {error:#}")))?;
    assert_eq!(visits(&after), Some(2), "after the reboot: {after:?}");
    curl(httpd, "/")?;
    assert_eq!(visits(&curl(httpd, "/api/visits")?), Some(3));
    retry_until(SERVICE_TIMEOUT, || curl(webstd, "/"))
        .map_err(|error| machine.failure(&format!("curl webstd after reboot: {error:#}")))?;
    Ok(())
}

#[test]
fn an_undeclared_port_is_refused_and_a_flood_of_clients_leaves_the_others_running() -> Result<()> {
    let directory = work_dir("net_apps_limits")?;
    // redis listens on 6379, which this image does not declare.
    let disks = vec![
        image(&directory, "redis", "squatter", &[7000])?,
        image(&directory, "redis", "redis", &[6379])?,
        image(&directory, "counter", "counter", &[])?,
    ];
    let forwards = forwards_to(&[6379])?;
    let address = SocketAddr::from(([127, 0, 0, 1], forwards[0].host_port));
    let mut machine = boot_forwarded(&disks, &forwards)?;
    let refusal = machine.expect("[squatter] ", ANSWER_TIMEOUT)?;
    machine.expect("cannot listen on port 6379", ANSWER_TIMEOUT)?;
    eprintln!("squatter: {refusal}");
    machine.expect("[redis] redis ready on port 6379", SERVICE_TIMEOUT)?;
    machine.expect("[counter] count ", SERVICE_TIMEOUT)?;
    if has_tool("redis-cli") {
        retry_until(SERVICE_TIMEOUT, || {
            redis_cli(address.port(), &["SET", "a", "1"])
        })
        .map_err(|error| machine.failure(&format!("SET before the flood: {error:#}")))?;
    }

    let before = last_count("counter", &machine.transcript()).unwrap_or(0);
    let flood_started = Instant::now();
    let clients = flood(address, 1000);
    eprintln!(
        "{} of 1000 clients connected in {:?}",
        clients.len(),
        flood_started.elapsed()
    );
    // counter goes on counting and the console answers while they are open.
    let deadline = Instant::now() + SERVICE_TIMEOUT;
    loop {
        let table = machine.run_command("ps")?;
        let now = last_count("counter", &machine.transcript()).unwrap_or(0);
        if now >= before + 3 {
            assert!(
                table.iter().any(|line| line.starts_with("redis ")),
                "{table:?}"
            );
            break;
        }
        if Instant::now() >= deadline {
            return Err(machine.failure(&format!(
                "counter stopped during the flood (from {before} to {now})"
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(clients);
    if has_tool("redis-cli") {
        let answer = retry_until(3 * SERVICE_TIMEOUT, || {
            redis_cli(address.port(), &["GET", "a"])
        })
        .map_err(|error| machine.failure(&format!("GET after the flood: {error:#}")))?;
        assert_eq!(answer, "1");
    }
    let transcript = machine.transcript();
    if transcript.contains("PANIC") || transcript.contains("out of memory") {
        return Err(machine.failure("the kernel failed during the flood"));
    }
    Ok(())
}

/// A domain connects out: `tcpping` on machine A pings `redis` on machine
/// B over the link between them (no forward, no host in between), and
/// after B's redis is stopped it says why there is no answer, then finds
/// it again once redis is started.
#[test]
fn a_domain_connects_out_to_a_domain_on_another_machine() -> Result<()> {
    let directory = work_dir("net-connect")?;
    let redis = image(&directory, "redis", "redis", &[6379])?;
    let tcpping = image(&directory, "tcpping", "tcpping", &[])?;
    let cluster = tests::Cluster::new()?;
    let mut b = cluster.machine(tests::LinkEnd::Listen, 2, vec![redis])?;
    b.expect("[redis] redis ready on port 6379", SERVICE_TIMEOUT)?;
    let mut a = cluster.machine(tests::LinkEnd::Connect, 1, vec![tcpping])?;
    let reply = a.expect(
        "[tcpping] reply +PONG from 169.254.0.2:6379",
        SERVICE_TIMEOUT,
    )?;
    println!("A: {reply}");
    b.send_line("stop redis")?;
    b.expect("redis: stopped", ANSWER_TIMEOUT)?;
    let refused = a.expect(
        "[tcpping] warn: no reply from 169.254.0.2:6379",
        SERVICE_TIMEOUT,
    )?;
    println!("A, with redis stopped: {refused}");
    b.send_line("start redis")?;
    a.expect(
        "[tcpping] reply +PONG from 169.254.0.2:6379",
        SERVICE_TIMEOUT,
    )?;
    Ok(())
}

//! Named snapshots of running domains from the console.
//!
//! - counter: `snapshot` while it counts, `rollback` makes it count on from
//!   the snapshot's number, the snapshots survive a power cut, and deleting
//!   one leaves `image verify` clean (no block leaked or used twice);
//! - redis: keys set after a snapshot are gone after a rollback to it, the
//!   keys from before are back, and the port answers again (clients
//!   reconnect: connections open at the rollback are reset);
//! - kv: a rollback brings back the keys of its snapshot, across reboots.

use std::process::Command;

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, Replies, app_image, boot_forwarded, count_of,
    domain_image, forwards_to, has_tool, last_count, retry_until, test_config, work_dir,
};

/// The tags in the table `snapshots NAME` printed.
fn listed_tags(table: &[String]) -> Vec<String> {
    table
        .iter()
        .skip_while(|line| !line.starts_with("ID"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1).map(String::from))
        .collect()
}

/// The count counter prints next after `after` (a transcript length).
fn next_count(machine: &mut Machine, after: usize) -> Result<u64> {
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let transcript = machine.transcript();
        if let Some(line) = transcript
            .get(after..)
            .and_then(|rest| rest.lines().find(|line| line.contains("[counter] count ")))
            && let Some(count) = count_of("counter", line)
        {
            return Ok(count);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(machine.failure("counter printed no count"))
}

#[test]
fn counter_rolls_back_to_its_snapshot_and_the_snapshots_survive_a_power_cut() -> Result<()> {
    let directory = work_dir("snapshots-counter")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut config = test_config()?;
    config.disks = vec![counter.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[counter] count 5", BOOT_TIMEOUT)?;

    machine.send_line("snapshot counter first")?;
    let taken = machine.expect("counter: snapshot ", ANSWER_TIMEOUT)?;
    println!("console: {taken}");
    if !taken.contains("'first' taken") {
        bail!("unexpected answer to snapshot: {taken}");
    }
    // The snapshot is the state at a safe point: after the last count
    // printed before the answer.
    let transcript = machine.transcript();
    let before_answer = &transcript[..transcript.rfind("counter: snapshot ").unwrap_or(0)];
    let at_snapshot = last_count("counter", before_answer).context("no count before snapshot")?;
    machine.expect(
        &format!("[counter] count {}", at_snapshot + 15),
        ANSWER_TIMEOUT,
    )?;

    let mark = machine.transcript().len();
    machine.send_line("rollback counter first")?;
    let rolled = machine.expect("counter: rolled back to snapshot 'first'", ANSWER_TIMEOUT)?;
    println!("console: {rolled}");
    let after = machine.transcript().len().max(mark);
    let next = next_count(&mut machine, after)?;
    println!("counted {at_snapshot} at the snapshot; {next} next after the rollback");
    if !(at_snapshot + 1..=at_snapshot + 2).contains(&next) {
        bail!("after the rollback counter went on from {next}, not from {at_snapshot}");
    }

    machine.send_line("snapshot counter")?;
    machine.expect("'snap-1' taken", ANSWER_TIMEOUT)?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    let table = machine.run_command("snapshots counter")?;
    if listed_tags(&table) != ["first", "snap-1"] {
        bail!("snapshots counter listed {table:?}");
    }
    machine.power_cut();

    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let table = machine.run_command("snapshots counter")?;
    println!("after the power cut: {table:?}");
    if listed_tags(&table) != ["first", "snap-1"] {
        bail!("after a power cut snapshots counter listed {table:?}");
    }
    machine.send_line("snapshot counter first")?;
    machine.expect(
        "error: counter: a snapshot is tagged \"first\" already",
        ANSWER_TIMEOUT,
    )?;
    machine.send_line("rollback counter nothing")?;
    machine.expect(
        "error: counter: no snapshot is tagged \"nothing\"",
        ANSWER_TIMEOUT,
    )?;
    machine.send_line("snapshot-delete counter first")?;
    machine.expect("counter: snapshot 'first' deleted", ANSWER_TIMEOUT)?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    let table = machine.run_command("snapshots counter")?;
    if listed_tags(&table) != ["snap-1"] {
        bail!("after the delete snapshots counter listed {table:?}");
    }
    machine.expect("[counter] count ", ANSWER_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    xtask::image::verify_with_record(&counter).context("image verify after the snapshots")?;
    Ok(())
}

/// `redis-cli -p PORT WORDS...`, trimmed.
fn redis_cli(port: u16, words: &[&str]) -> Result<String> {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(words)
        .output()
        .context("running redis-cli")?;
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if answer.is_empty() {
        bail!(
            "redis-cli {words:?} answered nothing ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(answer)
}

/// redis-cli's answer, asked again until redis answers (it binds its port
/// again after a rollback) or the time is up.
fn redis_answer(port: u16, words: &[&str]) -> Result<String> {
    retry_until(BOOT_TIMEOUT, || {
        let answer = redis_cli(port, words)?;
        if answer.starts_with("Could not connect") {
            bail!("redis did not answer {words:?}: {answer:?}");
        }
        Ok(answer)
    })
}

#[test]
fn redis_rolls_back_to_the_keys_of_its_snapshot() -> Result<()> {
    if !has_tool("redis-cli") {
        println!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return Ok(());
    }
    let directory = work_dir("snapshots-redis")?;
    let redis = app_image(&directory, "redis", "redis", &[6379], Replies::Immediate)?;
    let forwards = forwards_to(&[6379])?;
    let port = forwards[0].host_port;
    let mut machine = boot_forwarded(&[redis], &forwards)?;
    if redis_answer(port, &["SET", "kept", "before"])? != "OK" {
        bail!("redis refused the first SET");
    }
    // A connection open at the snapshot and closed before the rollback:
    // the rolled-back redis holds it in its memory, and must find it reset.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", port))?;
    held.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    std::io::Write::write_all(&mut held, b"*1\r\n$4\r\nPING\r\n")?;
    let mut pong = [0u8; 7];
    std::io::Read::read_exact(&mut held, &mut pong)?;
    if &pong != b"+PONG\r\n" {
        bail!("redis answered PING with {pong:?}");
    }
    machine.send_line("snapshot redis before")?;
    machine.expect("redis: snapshot ", ANSWER_TIMEOUT)?;
    drop(held);
    redis_answer(port, &["SET", "kept", "after"])?;
    redis_answer(port, &["SET", "later", "gone"])?;
    if redis_answer(port, &["DBSIZE"])? != "2" {
        bail!("redis does not hold two keys before the rollback");
    }
    machine.send_line("rollback redis before")?;
    let rolled = machine.expect("redis: rolled back", ANSWER_TIMEOUT)?;
    println!("console: {rolled}");
    let kept = redis_answer(port, &["GET", "kept"])
        .map_err(|error| machine.failure(&format!("after the rollback: {error:#}")))?;
    let later = redis_cli(port, &["EXISTS", "later"])?;
    println!("after the rollback: kept = {kept:?}, EXISTS later = {later:?}");
    if kept != "before" || later != "0" {
        bail!("after the rollback redis has kept = {kept:?} and EXISTS later = {later:?}");
    }
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

#[test]
fn a_fork_of_counter_counts_on_beside_it_with_a_new_id() -> Result<()> {
    let directory = work_dir("snapshots-fork")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let spare = tests::blank_disk(&directory.join("spare.img"), 64)?;
    let mut config = test_config()?;
    config.disks = vec![counter, spare];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[counter] count 5", BOOT_TIMEOUT)?;

    machine.send_line("fork counter twin")?;
    let forked = machine.expect("twin: forked from counter's state now", ANSWER_TIMEOUT)?;
    println!("console: {forked}");
    if !forked.contains("generation 1") || !forked.ends_with("now running") {
        bail!("unexpected answer to fork: {forked}");
    }
    let transcript = machine.transcript();
    let before_answer = &transcript[..transcript.rfind("twin: forked").unwrap_or(0)];
    let at_fork = last_count("counter", before_answer).context("no count before the fork")?;
    let said = machine.expect("[twin] forked at count ", ANSWER_TIMEOUT)?;
    println!("twin: {said}");
    let first = machine.expect("[twin] count ", ANSWER_TIMEOUT)?;
    let first = count_of("twin", &first).context("unreadable count of twin")?;
    if !(at_fork + 1..=at_fork + 2).contains(&first) {
        bail!("twin counted {first} first; counter was at {at_fork} when forked");
    }
    machine.expect(&format!("[counter] count {}", at_fork + 5), ANSWER_TIMEOUT)?;
    machine.expect(&format!("[twin] count {}", first + 5), ANSWER_TIMEOUT)?;
    let table = machine.run_command("ps")?;
    let id_of = |name: &str| {
        table
            .iter()
            .find(|row| row.split_whitespace().next() == Some(name))
            .and_then(|row| row.split_whitespace().nth(1).map(String::from))
    };
    let (Some(parent), Some(child)) = (id_of("counter"), id_of("twin")) else {
        bail!("ps does not list both: {table:?}");
    };
    if parent == child {
        bail!("the fork has its parent's ID {parent}");
    }
    machine.send_line("fork counter twin")?;
    machine.expect(
        "error: a domain named 'twin' exists already",
        ANSWER_TIMEOUT,
    )?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

/// QEMU killed at random moments while it takes, rolls back to and
/// deletes snapshots: after each kill the image verifies clean (no block
/// leaked or used twice), and counter runs on after the last.
#[test]
fn power_cuts_during_snapshot_rollback_and_delete_leave_a_clean_image() -> Result<()> {
    let seed = tests::seed_from_environment("AMBER_SNAPSHOT_CUT_SEED")?;
    println!("seed {seed} (AMBER_SNAPSHOT_CUT_SEED to repeat)");
    let mut random = tests::Xorshift::new(seed);
    let directory = work_dir("snapshots-power-cut")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut config = test_config()?;
    config.disks = vec![counter.clone()];
    let rounds = 9;
    for round in 0..rounds {
        let mut machine = Machine::boot(&config)?;
        machine.expect_prompt(BOOT_TIMEOUT)?;
        machine.expect("[counter] count ", BOOT_TIMEOUT)?;
        let command = match round % 3 {
            0 => format!("snapshot counter s{round}"),
            1 => format!("rollback counter s{}", round - 1),
            _ => format!("snapshot-delete counter s{}", round - 2),
        };
        // Sometimes the command completes first (the cut then falls in the
        // commits that follow), sometimes the cut falls inside it.
        if round % 3 != 2 && random.between(0, 2) == 0 {
            machine.send_line(&command)?;
            machine.expect("counter: ", ANSWER_TIMEOUT)?;
        } else {
            machine.send_line(&command)?;
            std::thread::sleep(std::time::Duration::from_millis(random.between(0, 400)));
        }
        machine.power_cut();
        let report = xtask::image::verify(&counter)
            .with_context(|| format!("image verify after the cut in round {round} ({command})"))?;
        println!("round {round}: cut during {command:?}; verify: {report:?}");
    }
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    machine.expect("[counter] count ", BOOT_TIMEOUT)?;
    let table = machine.run_command("snapshots counter")?;
    println!("after {rounds} cuts: {table:?}");
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    xtask::image::verify(&counter).context("image verify at the end")?;
    Ok(())
}

/// kv counts its clients' runs under the key `runs`: a rollback to a
/// snapshot taken after the first run brings that count back, across
/// reboots, although a second client ran and counted since.
#[test]
fn a_rollback_of_kv_brings_back_the_keys_of_its_snapshot() -> Result<()> {
    let directory = work_dir("snapshots-kv")?;
    let kv = domain_image(&directory, "kv", "kv")?;
    let boot = |client: &str, runs_before: u64| -> Result<Machine> {
        let client = domain_image(&directory, "kvclient", client)?;
        let mut config = test_config()?;
        config.disks = vec![kv.clone(), client];
        let mut machine = Machine::boot(&config)?;
        machine.expect(
            &format!("runs before this one: {runs_before}"),
            BOOT_TIMEOUT,
        )?;
        machine.expect("kvclient done", ANSWER_TIMEOUT)?;
        Ok(machine)
    };
    let mut machine = boot("first", 0)?;
    machine.send_line("snapshot kv after-first")?;
    machine.expect("kv: snapshot 0 'after-first' taken", ANSWER_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;

    let mut machine = boot("second", 1)?;
    machine.send_line("rollback kv after-first")?;
    machine.expect("kv: rolled back to snapshot 'after-first'", ANSWER_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;

    // The second run's count is gone with the rollback.
    let mut machine = boot("third", 1)?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    xtask::image::verify_with_record(&kv).context("image verify of kv")?;
    Ok(())
}

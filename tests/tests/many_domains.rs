//! 24 domains at once: fair fuel, a memory quota, and a disk that fills up.
//!
//! One boot carries the whole scene, because 24 disks make a slow boot under
//! TCG: 21 busy loops (no host calls, so every slice uses all its fuel),
//! the counter app, a domain that grows its memory past its image's maximum,
//! and one that dirties new pages on a small disk until a commit finds no
//! free block.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, domain_image, last_count, test_config, work_dir,
};

/// How many busy domains run beside the counter, the quota and the disk filler.
const BUSY_DOMAINS: usize = 21;

/// Loops forever without a host call.
const BUSY: &str = r#"(module
    (import "env" "memory" (memory 1 1))
    (func (export "_start")
        (local $count i64)
        (loop $forever
            (local.set $count (i64.add (local.get $count) (i64.const 1)))
            (br $forever))))"#;

/// Grows its memory a page at a time until `memory.grow` refuses (its image
/// allows 1 MiB), says so, and traps.
const MEMHOG: &str = r#"(module
    (import "env" "memory" (memory 1))
    (import "amber" "log" (func $log (param i32 i32 i32)))
    (data (i32.const 16) "memory.grow refused at the quota")
    (func (export "_start")
        (loop $grow
            (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        (call $log (i32.const 2) (i32.const 16) (i32.const 32))
        unreachable))"#;

/// Forever: grows its memory by one wasm page (16 blocks), writes every 4 KiB
/// page of it, and commits, so each round needs new blocks on its disk.
const DISKFILL: &str = r#"(module
    (import "env" "memory" (memory 1))
    (import "amber" "checkpoint" (func $checkpoint (result i32)))
    (func (export "_start")
        (local $page i32)
        (local $address i32)
        (loop $forever
            (local.set $page (memory.grow (i32.const 1)))
            (if (i32.eq (local.get $page) (i32.const -1)) (then unreachable))
            (local.set $address (i32.shl (local.get $page) (i32.const 16)))
            (loop $touch
                (i32.store (local.get $address) (i32.add (local.get $address) (i32.const 1)))
                (local.set $address (i32.add (local.get $address) (i32.const 4096)))
                (br_if $touch (i32.and (local.get $address) (i32.const 0xffff))))
            (drop (call $checkpoint))
            (br $forever))))"#;

/// An image of the wat module `text` named `name`.
fn wat_image(
    directory: &Path,
    name: &str,
    text: &str,
    memory_max_mib: Option<u64>,
    size_mib: Option<u64>,
) -> Result<PathBuf> {
    let module = wat::parse_str(text).with_context(|| format!("assembling {name}"))?;
    let wasm = directory.join(format!("{name}.wasm"));
    std::fs::write(&wasm, module)?;
    xtask::image::new(&xtask::image::NewArgs {
        wasm,
        name: name.into(),
        memory_max_mib,
        size_mib,
        args: Vec::new(),
        env: Vec::new(),
        output: Some(directory.join(format!("{name}.img"))),
        listen: Vec::new(),
        durable_replies: false,
    })
}

/// How long diskfill may take to fill its disk and memhog to reach its
/// quota: work that shares two TCG cores with 22 busy domains, so it is
/// bounded generously rather than by its usual time (a CI run under load
/// took over a minute, alone it takes well under one).
const FILL_TIMEOUT: Duration = Duration::from_secs(240);

/// Waits until the transcript holds every one of `patterns` and returns it.
fn wait_for_all(machine: &Machine, patterns: &[&str]) -> Result<String> {
    let deadline = Instant::now() + FILL_TIMEOUT;
    loop {
        let transcript = machine.transcript();
        let missing: Vec<&&str> = patterns
            .iter()
            .filter(|pattern| !transcript.contains(**pattern))
            .collect();
        if missing.is_empty() {
            return Ok(transcript);
        }
        if Instant::now() >= deadline {
            bail!("no {missing:?} in time:\n{transcript}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One `ps` row: name, status and fuel.
#[derive(Debug)]
struct Row {
    name: String,
    status: String,
    fuel: u64,
}

/// The rows of a `ps` answer. STATUS may hold spaces, so the numeric columns
/// are read from the right.
fn rows(table: &[String]) -> Result<Vec<Row>> {
    let header = table
        .iter()
        .position(|line| line.starts_with("NAME "))
        .context("no ps header")?;
    let mut rows = Vec::new();
    for line in &table[header + 1..] {
        let words: Vec<&str> = line.split_whitespace().collect();
        // NAME ID DISK STATUS... RESIDENT STORED COMMITS FUEL
        if words.len() < 8 || line.starts_with('[') {
            continue;
        }
        let fuel = words[words.len() - 1]
            .parse()
            .with_context(|| format!("bad FUEL in {line:?}"))?;
        rows.push(Row {
            name: words[0].to_string(),
            status: words[3..words.len() - 4].join(" "),
            fuel,
        });
    }
    Ok(rows)
}

#[test]
fn twenty_four_domains_run_fairly_and_a_full_disk_pauses_only_its_domain() -> Result<()> {
    let directory = work_dir("many-domains")?;
    let mut disks = Vec::new();
    for index in 0..BUSY_DOMAINS {
        disks.push(wat_image(
            &directory,
            &format!("busy{index:02}"),
            BUSY,
            None,
            None,
        )?);
    }
    disks.push(domain_image(&directory, "counter", "counter")?);
    disks.push(wat_image(&directory, "memhog", MEMHOG, Some(1), None)?);
    // 8 MiB (2048 blocks) fills after about 126 rounds of 64 KiB; the pager's
    // reserve for page-outs is given back before the domain is paused, so
    // the image ends nearly full (2030 blocks in use when this was written).
    let diskfill = wat_image(&directory, "diskfill", DISKFILL, Some(64), Some(8))?;
    disks.push(diskfill.clone());
    ensure!(disks.len() == 24);

    let mut config = test_config()?;
    config.disks = disks;
    let started = Instant::now();
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    machine.expect("[counter] count 2", BOOT_TIMEOUT)?;
    eprintln!("boot to count 2: {:.1} s", started.elapsed().as_secs_f64());
    // These come in any order.
    let transcript = wait_for_all(
        &machine,
        &[
            "diskfill: paused: disk full",
            "[memhog] warn: memory.grow refused at the quota",
            "[memhog] error: trapped: ",
        ],
    )?;
    let count_at_pause = last_count("counter", &transcript).context("no count yet")?;
    let pause_lines = transcript
        .lines()
        .filter(|line| line.contains("diskfill") && !line.contains(" INFO "))
        .count();
    ensure!(pause_lines == 1, "{pause_lines} lines about diskfill");

    // Let the busy domains run a while, then compare their fuel.
    thread::sleep(Duration::from_secs(5));
    let table = machine.run_command("ps")?;
    let rows = rows(&table)?;
    ensure!(
        rows.len() == 24,
        "ps shows {} domains: {table:#?}",
        rows.len()
    );
    let busy: Vec<&Row> = rows
        .iter()
        .filter(|row| row.name.starts_with("busy"))
        .collect();
    ensure!(busy.len() == BUSY_DOMAINS, "{table:#?}");
    for row in &busy {
        ensure!(row.status == "running", "{row:?}");
    }
    let least = busy.iter().map(|row| row.fuel).min().unwrap_or(0);
    let most = busy.iter().map(|row| row.fuel).max().unwrap_or(0);
    eprintln!("busy fuel: least {least}, most {most}");
    if least == 0 || (most - least) * 10 > most {
        bail!("busy domains' fuel differs by more than 10%: {least} to {most}: {table:#?}");
    }
    let status_of = |name: &str| {
        rows.iter()
            .find(|row| row.name == name)
            .map(|row| row.status.clone())
    };
    ensure!(
        status_of("counter").as_deref() == Some("running"),
        "{table:#?}"
    );
    ensure!(
        status_of("diskfill").as_deref() == Some("paused: disk full"),
        "{table:#?}"
    );
    ensure!(
        status_of("memhog").is_some_and(|status| status.starts_with("trapped")),
        "{table:#?}"
    );
    let count_now = last_count("counter", &machine.transcript()).context("no count")?;
    ensure!(
        count_now > count_at_pause + 10,
        "counter went from {count_at_pause} to only {count_now} after the pause"
    );

    // `start` retries the commit; the disk is still full, so it stays paused.
    let answer = machine.run_command("start diskfill")?;
    ensure!(
        answer
            .iter()
            .any(|line| line.contains("diskfill: still paused: the disk is full")),
        "{answer:?}"
    );

    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    eprintln!("whole run: {:.1} s", started.elapsed().as_secs_f64());
    let report = xtask::image::verify(&diskfill)?;
    eprintln!("diskfill image after shutdown: {report:?}");
    ensure!(
        report.blocks_checked > 1900,
        "paused with only {} of 2048 blocks in use",
        report.blocks_checked
    );

    // Nothing was lost: booted again, diskfill starts over from its last
    // commit (it has no asyncify) with every stored page, fills the few
    // blocks left and pauses again.
    config.disks = vec![diskfill.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    machine.expect("diskfill: paused: disk full", BOOT_TIMEOUT)?;
    let table = machine.run_command("ps")?;
    let stored = stored_pages(&table, "diskfill")?;
    ensure!(
        stored >= report.pages_checked,
        "{stored} pages stored after the reboot, {} before",
        report.pages_checked
    );
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    xtask::image::verify(&diskfill)?;
    Ok(())
}

/// The STORED column of `ps` for `name`.
fn stored_pages(table: &[String], name: &str) -> Result<u64> {
    let row = table
        .iter()
        .find(|line| line.split_whitespace().next() == Some(name))
        .with_context(|| format!("no row for {name} in {table:?}"))?;
    let words: Vec<&str> = row.split_whitespace().collect();
    // ... RESIDENT STORED COMMITS FUEL: STORED is third from the right.
    words
        .len()
        .checked_sub(3)
        .and_then(|index| words[index].parse().ok())
        .with_context(|| format!("bad STORED in {row:?}"))
}

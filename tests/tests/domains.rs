//! Domains in the kernel: output, reboots, stop and start, refused disks.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, count_of, domain_image, last_count, test_config,
    work_dir,
};

fn boot(disks: &[PathBuf]) -> Result<Machine> {
    let mut config = test_config()?;
    config.disks = disks.to_vec();
    Machine::boot(&config)
}

#[test]
fn hello_prints_its_lines_and_exits() -> Result<()> {
    let directory = work_dir("domains-hello")?;
    let hello = domain_image(&directory, "hello", "hello")?;
    let mut machine = boot(&[hello])?;
    machine.expect("[hello] Hello from Amber!", BOOT_TIMEOUT)?;
    machine.expect("[hello] exited(0)", ANSWER_TIMEOUT)?;
    Ok(())
}

#[test]
fn counter_resumes_after_shutdown_and_boot() -> Result<()> {
    let directory = work_dir("domains-counter-reboot")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut machine = boot(std::slice::from_ref(&counter))?;
    machine.expect("[counter] count 5", BOOT_TIMEOUT)?;
    machine.send_line("shutdown")?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    let last = last_count("counter", &machine.transcript()).context("no count before shutdown")?;

    let mut machine = boot(&[counter])?;
    let first_line = machine.expect("[counter] count ", BOOT_TIMEOUT)?;
    let first = count_of("counter", &first_line).context("unreadable count")?;
    if first != last + 1 {
        bail!(
            "counted to {last} before shutdown, then {first} after boot (wanted {})",
            last + 1
        );
    }
    Ok(())
}

#[test]
fn a_stopped_domain_stays_stopped_across_boots_until_started() -> Result<()> {
    let directory = work_dir("domains-stop-start")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut machine = boot(std::slice::from_ref(&counter))?;
    machine.expect("[counter] count 3", BOOT_TIMEOUT)?;
    machine.send_line("stop counter")?;
    machine.expect("counter: stopped", ANSWER_TIMEOUT)?;
    let last = last_count("counter", &machine.transcript()).context("no count before stop")?;
    machine.expect_prompt(ANSWER_TIMEOUT)?;
    let table = machine.run_command("ps")?;
    assert!(
        table
            .iter()
            .any(|line| line.starts_with("counter") && line.contains("stopped")),
        "ps: {table:?}"
    );
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;

    let mut machine = boot(&[counter])?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let table = machine.run_command("ps")?;
    assert!(
        table
            .iter()
            .any(|line| line.starts_with("counter") && line.contains("stopped")),
        "ps after boot: {table:?}"
    );
    assert!(
        last_count("counter", &machine.transcript()).is_none(),
        "a stopped counter counted after boot"
    );
    machine.send_line("start counter")?;
    let first_line = machine.expect("[counter] count ", ANSWER_TIMEOUT)?;
    let first = count_of("counter", &first_line).context("unreadable count")?;
    if first != last + 1 {
        bail!("stopped after {last}, started at {first}");
    }
    let answer = machine.run_command("stop nobody")?;
    assert!(
        answer
            .iter()
            .any(|line| line.contains("no domain named 'nobody'")),
        "{answer:?}"
    );
    Ok(())
}

#[test]
fn a_corrupt_disk_is_refused_while_the_others_run() -> Result<()> {
    let directory = work_dir("domains-corrupt")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let broken = domain_image(&directory, "hello", "broken")?;
    // Garbage over both superblocks: not blank, not an image.
    let mut bytes = std::fs::read(&broken)?;
    for (index, byte) in bytes.iter_mut().take(8192).enumerate() {
        *byte = (index * 7 + 13) as u8;
    }
    std::fs::write(&broken, bytes)?;
    let mut machine = boot(&[broken, counter])?;
    let line = machine.expect("disk 0: refused:", BOOT_TIMEOUT)?;
    assert!(
        line.len() > "disk 0: refused: ".len(),
        "no reason given: {line}"
    );
    machine.expect("[counter] count 3", ANSWER_TIMEOUT)?;
    Ok(())
}

/// The RESIDENT column of `ps` for `name`.
fn resident_pages(table: &[String], name: &str) -> Result<u64> {
    ps_column(table, name, "RESIDENT")
}

/// Column `column` of `ps` for `name`, as a number.
fn ps_column(table: &[String], name: &str, column: &str) -> Result<u64> {
    // Domain output may interleave with the answer: find the header.
    let header = table
        .iter()
        .find(|line| line.starts_with("NAME "))
        .context("no ps header")?;
    let column = header
        .split_whitespace()
        .position(|word| word == column)
        .with_context(|| format!("no {column} column"))?;
    let row = table
        .iter()
        .find(|line| line.split_whitespace().next() == Some(name))
        .with_context(|| format!("no row for {name} in {table:?}"))?;
    // STATUS may hold spaces only when trapped; counter runs.
    row.split_whitespace()
        .nth(column)
        .context("short row")?
        .parse()
        .with_context(|| format!("bad {column} in {row:?}"))
}

#[test]
fn a_domain_costs_ram_only_for_the_pages_it_touches() -> Result<()> {
    let directory = work_dir("domains-demand-paging")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    // counter's memory is 19 wasm pages (304 pages of 4 KiB), nearly all
    // untouched: with demand paging only a handful are resident, before and
    // after a reboot (a restore does not fault in the whole memory).
    for boot_number in 0..2 {
        let mut machine = boot(std::slice::from_ref(&counter))?;
        machine.expect("[counter] count ", BOOT_TIMEOUT)?;
        let table = machine.run_command("ps")?;
        let resident = resident_pages(&table, "counter")?;
        if resident == 0 || resident > 32 {
            bail!("boot {boot_number}: counter has {resident} resident pages: {table:?}");
        }
        // Pages committed with non-zero contents (the stack, data, heap).
        let stored = ps_column(&table, "counter", "STORED")?;
        if stored == 0 || stored > 32 {
            bail!("boot {boot_number}: counter has {stored} stored pages: {table:?}");
        }
        machine.send_line("shutdown")?;
        machine.expect_exit(0, ANSWER_TIMEOUT)?;
    }
    Ok(())
}

//! `spawn APP [NAME]`: domains from the apps archive disk onto spare disks.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, apps_archive, blank_disk, count_of, last_count,
    test_config, work_dir,
};

/// Size of each spare disk: room for counter's 64 MiB maximum memory three
/// times over, as `image new` would size it.
const SPARE_MIB: u64 = 256;

fn boot(disks: &[PathBuf]) -> Result<Machine> {
    let mut config = test_config()?;
    config.disks = disks.to_vec();
    Machine::boot(&config)
}

fn says(answer: &[String], text: &str) -> bool {
    answer.iter().any(|line| line.contains(text))
}

/// The `ps` line of domain `name`.
fn ps_line<'a>(table: &'a [String], name: &str) -> Option<&'a String> {
    table
        .iter()
        .find(|line| line.split_whitespace().next() == Some(name))
}

#[test]
fn spawned_counters_run_persist_and_resume_after_a_reboot() -> Result<()> {
    let directory = work_dir("spawn")?;
    let disks = vec![
        apps_archive()?,
        blank_disk(&directory.join("spare-1.img"), SPARE_MIB)?,
        blank_disk(&directory.join("spare-2.img"), SPARE_MIB)?,
    ];
    let mut machine = boot(&disks)?;
    // Every app `cargo xtask app build` builds (more may come).
    let listed = machine.expect("disk 0: apps archive of ", BOOT_TIMEOUT)?;
    for app in ["hello", "counter", "kv", "kvclient", "life", "bigmem"] {
        assert!(listed.contains(&format!(" {app}")), "{listed}");
    }
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let help = machine.run_command("help")?;
    assert!(says(&help, "spawn APP [NAME]"), "help: {help:?}");

    let answer = machine.run_command("spawn counter")?;
    assert!(
        says(&answer, "counter: spawned from counter on disk 1"),
        "{answer:?}"
    );
    machine.expect("[counter] count 3", ANSWER_TIMEOUT)?;

    // The errors, each on one line, none of which takes the spare left.
    let answer = machine.run_command("spawn counter")?;
    assert!(
        says(
            &answer,
            "error: a domain named 'counter' exists already (see ps)"
        ),
        "{answer:?}"
    );
    let answer = machine.run_command("spawn nosuch")?;
    assert!(
        says(
            &answer,
            "error: no app 'nosuch' in the apps archive; it holds: hello, counter, kv,"
        ),
        "{answer:?}"
    );
    // A name is a console word and the tag of every output line: one that
    // could pose as other text is refused before any disk is touched.
    let answer = machine.run_command("spawn counter bad]name")?;
    assert!(
        says(
            &answer,
            "error: refused a name with byte 0x5d at 3 (names are ASCII letters, digits,"
        ),
        "{answer:?}"
    );
    let answer = machine.run_command("spawn")?;
    assert!(
        says(&answer, "usage: spawn APP [NAME]; apps: "),
        "{answer:?}"
    );

    let answer = machine.run_command("spawn counter tally")?;
    assert!(
        says(&answer, "tally: spawned from counter on disk 2"),
        "{answer:?}"
    );
    machine.expect("[tally] count 3", ANSWER_TIMEOUT)?;
    let answer = machine.run_command("spawn hello")?;
    assert!(says(&answer, "error: no spare disk left"), "{answer:?}");

    let table = machine.run_command("ps")?;
    for (name, disk) in [("counter", "1"), ("tally", "2")] {
        let line = ps_line(&table, name).with_context(|| format!("{name} not in {table:?}"))?;
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns.get(2), Some(&disk), "{line}");
        assert!(line.contains("running"), "{line}");
    }
    machine.send_line("shutdown")?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    let transcript = machine.transcript();
    let last_counter = last_count("counter", &transcript).context("no count of counter")?;
    let last_tally = last_count("tally", &transcript).context("no count of tally")?;
    drop(machine);

    // The same disks: both resume from their disks, at the next value.
    let mut machine = boot(&disks)?;
    // The prompt comes before the domains' first slices.
    machine.expect_prompt(BOOT_TIMEOUT)?;
    for (name, last) in [("counter", last_counter), ("tally", last_tally)] {
        let line = machine.expect(&format!("[{name}] count "), BOOT_TIMEOUT)?;
        let first = count_of(name, &line).with_context(|| format!("unreadable: {line}"))?;
        if first != last + 1 {
            bail!(
                "{name} counted to {last} before shutdown, then {first} after boot (wanted {})",
                last + 1
            );
        }
    }
    let answer = machine.run_command("spawn life")?;
    assert!(says(&answer, "error: no spare disk left"), "{answer:?}");
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

#[test]
fn a_damaged_archive_is_refused_with_one_line_and_spawn_says_so() -> Result<()> {
    let directory = work_dir("spawn-damaged-archive")?;
    let mut bytes = std::fs::read(apps_archive()?).context("reading the apps archive")?;
    // A byte of the entry table: its checksum no longer matches.
    bytes[64 + 3] ^= 0x20;
    let damaged = directory.join("damaged-archive.img");
    std::fs::write(&damaged, &bytes).context("writing the damaged archive")?;
    let spare = blank_disk(&directory.join("spare.img"), SPARE_MIB)?;
    let mut machine = boot(&[damaged, spare])?;
    machine.expect(
        "disk 0: refused: apps archive: entry table checksum mismatch",
        BOOT_TIMEOUT,
    )?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    let answer = machine.run_command("spawn counter")?;
    assert!(says(&answer, "error: no apps archive disk"), "{answer:?}");
    let answer = machine.run_command("spawn")?;
    assert!(
        says(&answer, "usage: spawn APP [NAME] (no apps archive disk)"),
        "{answer:?}"
    );
    // The spare is still a spare.
    let stats = machine.run_command("stats")?;
    assert!(says(&stats, "spare disks: 1"), "{stats:?}");
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

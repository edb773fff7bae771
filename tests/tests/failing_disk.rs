//! Failing and refused disks: the domain pauses, the others run on, nothing is lost.
//!
//! A disk fails below the kernel through QEMU's block layer, on the host's
//! side of the virtio-blk device (`QemuConfig::disk_options`): `blkdebug`
//! rules fail the first write (`write_aio`) or the first FLUSH
//! (`flush_to_disk`) with EIO, and QEMU's throttling at one byte per second
//! of writes makes a disk that stops answering (the first write goes
//! through, the next waits for days, so the kernel's request timeout
//! fires). Each case boots a domain (`victim`, a counter) that ran and
//! committed before on its disk, next to another counter (`bystander`) on
//! a healthy disk. The machine must print one line naming the domain, the
//! disk and the reason; `ps` and `disks` must show the domain paused with
//! that reason; the bystander must keep counting; the image must verify
//! clean; and booted again without the fault, the victim must go on from
//! the number after its last commit.
//!
//! A refused disk (an image whose module imports what the vm does not
//! provide, and a disk of garbage) must be named by its domain where the
//! image says it, with its reason, and stay in `ps` and `disks`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, count_of, domain_image, last_count, test_config,
    work_dir,
};
use xtask::qemu::DiskOptions;

/// How long a failure may take to show: the first periodic checkpoint
/// (1 s) plus, for a disk that stops answering, the kernel's 10 s request
/// timeout, with room for a loaded TCG host.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(90);

/// Boots `disks`, `options` applied to some of them, to the prompt.
fn boot(disks: &[PathBuf], options: BTreeMap<usize, DiskOptions>) -> Result<Machine> {
    let mut config = test_config()?;
    config.disks = disks.to_vec();
    config.disk_options = options;
    let mut machine = Machine::boot(&config)?;
    machine.expect_prompt(BOOT_TIMEOUT)?;
    Ok(machine)
}

/// `shutdown`, and QEMU exits with success.
fn shut_down(machine: &mut Machine) -> Result<()> {
    machine.send_line("shutdown")?;
    machine.expect("amber: powering off", ANSWER_TIMEOUT)?;
    machine.expect_exit(0, ANSWER_TIMEOUT)
}

/// Fails if the kernel panicked or a domain ended.
fn check_nothing_ended(machine: &Machine) -> Result<()> {
    let transcript = machine.transcript();
    for bad in ["PANIC", "trapped", "exited("] {
        if transcript.contains(bad) {
            return Err(machine.failure(&format!("the transcript says {bad:?}")));
        }
    }
    Ok(())
}

/// Two counter images, `victim` (disk 0) and `bystander` (disk 1), run and
/// shut down once, so the victim's next boot writes nothing before its
/// first periodic checkpoint. Returns the disks and the victim's last count
/// (the state its last commit holds).
fn committed_pair(directory: &Path) -> Result<(Vec<PathBuf>, u64)> {
    let disks = vec![
        domain_image(directory, "counter", "victim")?,
        domain_image(directory, "counter", "bystander")?,
    ];
    let mut machine = boot(&disks, BTreeMap::new())?;
    machine.expect("[victim] count 5", ANSWER_TIMEOUT)?;
    machine.expect("[bystander] count 5", ANSWER_TIMEOUT)?;
    shut_down(&mut machine)?;
    let last = last_count("victim", &machine.transcript()).context("victim did not count")?;
    Ok((disks, last))
}

/// Rules for `blkdebug` that fail the first request of `iotype` after
/// `event` once with EIO (errno 5), written to `directory`.
fn blkdebug_rules(directory: &Path, event: &str, iotype: &str) -> Result<PathBuf> {
    let path = directory.join(format!("{event}.conf"));
    let rules = format!(
        "[inject-error]\nevent = \"{event}\"\niotype = \"{iotype}\"\nerrno = \"5\"\nonce = \"on\"\n"
    );
    std::fs::write(&path, rules).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The rows of `ps` (or lines of `disks`) that contain `pattern`.
fn lines_with<'a>(answer: &'a [String], pattern: &str) -> Vec<&'a String> {
    answer
        .iter()
        .filter(|line| line.contains(pattern))
        .collect()
}

/// One failing-disk case: `options` on the victim's disk make it fail with
/// `reason` (the words after `disk 0 failed: `).
fn a_failing_disk_pauses_its_domain(case: &str, options: DiskOptions, reason: &str) -> Result<()> {
    let directory = work_dir(&format!("failing-disk-{case}"))?;
    let (disks, last_committed) = committed_pair(&directory)?;
    let victim = disks[0].clone();
    let before = xtask::image::inspect(&victim)?;

    let mut machine = boot(&disks, BTreeMap::from([(0, options)]))?;
    let line = format!("victim: paused: disk 0 failed: {reason}");
    machine.expect(&line, FAILURE_TIMEOUT)?;
    let status = format!("paused: disk failed: {reason}");

    let table = machine.run_command("ps")?;
    let rows = lines_with(&table, "victim ");
    if rows.len() != 1 || !rows[0].contains(&status) {
        return Err(machine.failure(&format!("ps does not show victim {status:?}: {table:?}")));
    }
    if lines_with(&table, "bystander ")
        .first()
        .is_none_or(|row| !row.contains("running"))
    {
        return Err(machine.failure(&format!("ps does not show bystander running: {table:?}")));
    }
    let listing = machine.run_command("disks")?;
    let out_of_service = format!("; out of service: {reason}");
    let held = lines_with(&listing, "  victim: ");
    if held.len() != 1
        || !held[0].starts_with(&format!("  victim: {status}"))
        || !held[0].contains(&out_of_service)
    {
        return Err(machine.failure(&format!("disks: {listing:?}")));
    }
    let answer = machine.run_command("start victim")?;
    if lines_with(&answer, "victim: disk 0 is out of service").len() != 1 {
        return Err(machine.failure(&format!("start victim: {answer:?}")));
    }

    // The bystander goes on, and the victim counts no more.
    let transcript = machine.transcript();
    let bystander_now = last_count("bystander", &transcript).context("bystander never counted")?;
    let victim_paused_at = last_count("victim", &transcript);
    machine.expect(
        &format!("[bystander] count {}", bystander_now + 5),
        ANSWER_TIMEOUT,
    )?;
    if last_count("victim", &machine.transcript()) != victim_paused_at {
        return Err(machine.failure("victim counted while paused"));
    }
    let lines = machine
        .transcript()
        .lines()
        .filter(|candidate| candidate.starts_with("victim: paused: "))
        .count();
    if lines != 1 {
        return Err(machine.failure(&format!("{lines} pause lines, wanted one")));
    }
    check_nothing_ended(&machine)?;
    shut_down(&mut machine)?;

    // The last commit is intact: the image verifies, no commit is lost.
    let report = xtask::image::verify(&victim)?;
    let after = xtask::image::inspect(&victim)?;
    if after.commits < before.commits || report.sequence < before.sequence {
        bail!(
            "{case}: the victim's image went back from commit {} to {}",
            before.sequence,
            report.sequence
        );
    }

    // Booted again on the healthy disk, the victim goes on from its last
    // commit: the number after the last one it counted before the fault's
    // boot (the fault came at its first commit there).
    let mut machine = boot(&disks, BTreeMap::new())?;
    let first_line = machine.expect("[victim] count ", ANSWER_TIMEOUT)?;
    let first = count_of("victim", &first_line).context("unreadable count")?;
    if first != last_committed + 1 {
        return Err(machine.failure(&format!(
            "{case}: victim committed {last_committed}, resumed at {first}"
        )));
    }
    machine.expect("[bystander] count ", ANSWER_TIMEOUT)?;
    check_nothing_ended(&machine)?;
    shut_down(&mut machine)
}

#[test]
fn a_failed_write_pauses_the_domain_and_the_others_run_on() -> Result<()> {
    let directory = work_dir("failing-disk-rules-write")?;
    let options = DiskOptions {
        blkdebug_rules: Some(blkdebug_rules(&directory, "write_aio", "write")?),
        ..DiskOptions::default()
    };
    a_failing_disk_pauses_its_domain("write", options, "a write failed (I/O error at block ")
}

#[test]
fn a_failed_flush_pauses_the_domain_and_the_others_run_on() -> Result<()> {
    let directory = work_dir("failing-disk-rules-flush")?;
    let options = DiskOptions {
        blkdebug_rules: Some(blkdebug_rules(&directory, "flush_to_disk", "flush")?),
        ..DiskOptions::default()
    };
    a_failing_disk_pauses_its_domain("flush", options, "a flush failed (I/O error)")
}

#[test]
fn a_disk_that_stops_answering_pauses_the_domain_after_the_timeout() -> Result<()> {
    let options = DiskOptions {
        write_bytes_per_second: Some(1),
        ..DiskOptions::default()
    };
    a_failing_disk_pauses_its_domain("silent", options, "no answer to a write in 10 s")
}

/// An image holding `module` byte for byte as domain `name`, past every
/// check `image new` makes (which would refuse it): a foreign disk.
fn raw_image(directory: &Path, name: &str, module: &[u8]) -> Result<PathBuf> {
    let path = directory.join(format!("{name}.img"));
    let device = persist::FileDevice::create(&path, 2048)
        .map_err(|error| anyhow!("creating {}: {error}", path.display()))?;
    persist::Image::create(
        device,
        persist::NewDomain {
            id: persist::DomainId::from_le_bytes(*b"refused raw disk"),
            name,
            module,
            memory_pages: 1,
            memory_max_pages: 16,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .map_err(|error| anyhow!("writing {}: {error}", path.display()))?;
    Ok(path)
}

#[test]
fn refused_disks_are_named_and_stay_in_ps_and_disks() -> Result<()> {
    let directory = work_dir("failing-disk-refused")?;
    let module = wat::parse_str(
        r#"(module (import "env" "memory" (memory 1)) (import "hacks" "root" (func))
           (func (export "_start")))"#,
    )?;
    let reason = vm::check_module(&module)
        .err()
        .context("the vm accepts a module importing hacks.root")?
        .to_string();
    let garbage = directory.join("garbage.img");
    std::fs::write(&garbage, vec![0x5a; 4 * 1024 * 1024])?;
    let disks = vec![
        domain_image(&directory, "counter", "counter")?,
        raw_image(&directory, "intruder", &module)?,
        garbage,
    ];
    let mut machine = boot(&disks, BTreeMap::new())?;
    machine.expect("[counter] count 2", ANSWER_TIMEOUT)?;
    let transcript = machine.transcript();
    let named = format!("disk 1: refused: {reason} (the image of domain intruder)");
    let refusals: Vec<&str> = transcript
        .lines()
        .filter(|line| {
            line.starts_with("disk 1: refused: ") || line.starts_with("disk 2: refused: ")
        })
        .collect();
    if refusals.len() != 2 || refusals[0] != named || refusals[1].len() <= "disk 2: refused: ".len()
    {
        return Err(machine.failure(&format!("refusal lines: {refusals:?}, wanted {named:?}")));
    }

    let table = machine.run_command("ps")?;
    let intruder = lines_with(&table, "intruder ");
    if intruder.len() != 1 || !intruder[0].contains(&format!("refused: {reason}")) {
        return Err(machine.failure(&format!("ps: {table:?}")));
    }
    let unnamed: Vec<&String> = table
        .iter()
        .filter(|row| row.starts_with("- ") && row.contains(" refused: "))
        .collect();
    if unnamed.len() != 1 {
        return Err(machine.failure(&format!("ps has no row for the garbage disk: {table:?}")));
    }

    let listing = machine.run_command("disks")?;
    let held: Vec<&String> = listing
        .iter()
        .filter(|line| line.starts_with("  "))
        .collect();
    let wanted_intruder = format!("  intruder: refused: {reason}");
    if held.len() != 3
        || !held[0].starts_with("  counter: running")
        || held[1] != &wanted_intruder
        || !held[2].starts_with("  refused: ")
    {
        return Err(machine.failure(&format!("disks: {listing:?}")));
    }
    // A refused disk answers to no name.
    let answer = machine.run_command("start intruder")?;
    if lines_with(&answer, "no domain named 'intruder'").len() != 1 {
        return Err(machine.failure(&format!("start intruder: {answer:?}")));
    }
    machine.expect("[counter] count 5", ANSWER_TIMEOUT)?;
    check_nothing_ended(&machine)?;
    shut_down(&mut machine)
}

//! `cargo xtask bench --only migrate`: live migration time, downtime, throughput.
//!
//! Two QEMU instances on one link (`-netdev socket` over 127.0.0.1): A runs
//! bigmem with N MiB written and committed (`checkpoint bigmem`, then
//! idle), B has a spare disk. `migrate
//! bigmem 169.254.0.2` on A prints `moved to ... in T ms, K KiB sent,
//! downtime D ms`, measured by A's kernel from the command to the target's
//! `Running`. The baseline is raw TCP between the same two machines in the
//! same run: `nettest send` of the same number of MiB to `nettest listen`.
//! Throughput is KiB sent over total time; the goal is at least 0.7 of raw
//! TCP (issue 6). Total time and downtime by size make the plot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bench::{
    BaselineRecord, Collector, FigureRecord, Goal, Mode, PointRecord, Record, plots,
};
use crate::image::{self, NewArgs};
use crate::machine::{BOOT_TIMEOUT, Machine};
use crate::private::ClusterSecretFile;
use crate::qemu::{Accel, Console, LinkEnd, NetLink, QemuConfig, free_port};
use crate::{app, paths};

const MACHINE_MEMORY_MIB: u32 = 512;

/// A whole migration of the largest domain under TCG on a busy host.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(900);

fn machine(
    kernel_elf: &Path,
    accel: Accel,
    net: NetLink,
    disk: PathBuf,
    secret: &ClusterSecretFile,
) -> QemuConfig {
    QemuConfig {
        kernel: kernel_elf.to_path_buf(),
        memory_mib: MACHINE_MEMORY_MIB,
        append: format!("ip=169.254.0.{}", net.mac_last_byte),
        accel,
        console: Console::Stdio,
        disks: vec![disk],
        disk_options: std::collections::BTreeMap::new(),
        net: Some(net),
        user_net: None,
        cluster_secret: Some(secret.clone()),
        nbd_disks: Vec::new(),
    }
}

/// A and B on a fresh link with a fresh cluster secret: A with `a_disk`, B
/// with `b_disk`.
fn pair(
    kernel_elf: &Path,
    accel: Accel,
    a_disk: PathBuf,
    b_disk: PathBuf,
) -> Result<(Machine, Machine)> {
    let port = free_port()?;
    let secret = ClusterSecretFile::generate()?;
    let link = |end, mac_last_byte| NetLink {
        end,
        port,
        mac_last_byte,
    };
    let mut a = Machine::boot_named(
        "A",
        &machine(kernel_elf, accel, link(LinkEnd::Listen, 1), a_disk, &secret),
    )?;
    a.expect_prompt(BOOT_TIMEOUT)?;
    let mut b = Machine::boot_named(
        "B",
        &machine(
            kernel_elf,
            accel,
            link(LinkEnd::Connect, 2),
            b_disk,
            &secret,
        ),
    )?;
    b.expect_prompt(BOOT_TIMEOUT)?;
    Ok((a, b))
}

fn blank_disk(path: &Path, mib: u64) -> Result<PathBuf> {
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    std::fs::File::create(path)
        .and_then(|file| file.set_len(mib << 20))
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(path.to_path_buf())
}

/// The number after `marker` in `line`.
fn number_after(line: &str, marker: &str) -> Option<f64> {
    line.split(marker)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Total ms, KiB sent and downtime ms from A's `moved to` line.
fn parse_moved(line: &str) -> Option<(f64, f64, f64)> {
    let total = number_after(line, " in ")?;
    let kib = number_after(line, " ms, ")?;
    let downtime = number_after(line, "downtime ")?;
    Some((total, kib, downtime))
}

/// MiB/s from `sent N MiB in X ms (Y MiB/s)`.
fn parse_sent(line: &str) -> Option<f64> {
    let mib = number_after(line, "sent ")?;
    let ms = number_after(line, " MiB in ")?;
    (ms > 0.0).then(|| mib / (ms / 1000.0))
}

/// The share of the source's transfer time spent encrypting, from its
/// `time: ... of T ms, cipher C ms` log line.
fn parse_cipher_share(line: &str) -> Option<f64> {
    let total = number_after(line, " of ")?;
    let cipher = number_after(line, "cipher ")?;
    (total > 0.0).then(|| cipher / total)
}

/// One migration of an `mib` MiB domain, what it measured.
#[derive(Debug, Clone, Copy)]
struct Migration {
    total_ms: f64,
    mib_per_s: f64,
    downtime_ms: f64,
    /// Of the source's transfer time, the share spent in the cipher.
    cipher_share: Option<f64>,
}

/// One migration of an `mib` MiB domain.
fn migrate_once(kernel_elf: &Path, accel: Accel, directory: &Path, mib: u64) -> Result<Migration> {
    let a_disk = image::new(&NewArgs {
        wasm: paths::apps_dir().join("bigmem.wasm"),
        name: "bigmem".into(),
        memory_max_mib: Some(mib + 64),
        size_mib: Some(mib * 3 + 64),
        args: vec![mib.to_string()],
        env: Vec::new(),
        output: Some(directory.join(format!("bigmem-{mib}.img"))),
        listen: Vec::new(),
        durable_replies: false,
    })?;
    let b_disk = blank_disk(&directory.join("b-spare.img"), mib * 3 + 64)?;
    let (mut a, mut b) = pair(kernel_elf, accel, a_disk, b_disk)?;
    a.expect(&format!("[bigmem] verified {mib} MiB"), MIGRATION_TIMEOUT)?;
    // Every run moves a durable domain: without this, whether the periodic
    // checkpoint (every second) has committed the memory bigmem just wrote
    // decides whether the migration first commits `mib` MiB to A's disk.
    // A bigmem between two safe points commits at the next one; asked
    // again then, it answers at once.
    let mut attempts = 0;
    loop {
        a.send_line("checkpoint bigmem")?;
        let answer = a.expect("bigmem: ", MIGRATION_TIMEOUT)?;
        if answer.contains("bigmem: committed") {
            break;
        }
        attempts += 1;
        if attempts == 60 {
            bail!("bigmem was not committed before its migration: {answer:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    a.send_line("migrate bigmem 169.254.0.2")?;
    let line = a.expect("[migrate] bigmem: moved to", MIGRATION_TIMEOUT)?;
    b.expect("[migrate] bigmem arrived", MIGRATION_TIMEOUT)?;
    let (total_ms, kib, downtime_ms) =
        parse_moved(&line).with_context(|| format!("cannot read {line:?}"))?;
    if total_ms <= 0.0 {
        bail!("a migration of 0 ms: {line:?}");
    }
    let cipher_share = a
        .transcript()
        .lines()
        .rfind(|line| line.contains("bigmem: time:"))
        .and_then(parse_cipher_share);
    Ok(Migration {
        total_ms,
        mib_per_s: kib / 1024.0 / (total_ms / 1000.0),
        downtime_ms,
        cipher_share,
    })
}

/// Raw TCP between a fresh pair: `mib` MiB with nettest, in MiB/s.
fn raw_tcp_once(kernel_elf: &Path, accel: Accel, directory: &Path, mib: u64) -> Result<f64> {
    let a_disk = blank_disk(&directory.join("a-blank.img"), 16)?;
    let b_disk = blank_disk(&directory.join("b-blank.img"), 16)?;
    let (mut a, mut b) = pair(kernel_elf, accel, a_disk, b_disk)?;
    b.send_line("nettest listen 7000")?;
    b.expect("nettest: listening on port 7000", Duration::from_secs(60))?;
    a.send_line(&format!("nettest send 169.254.0.2 7000 {mib}"))?;
    let line = a.expect("sent ", MIGRATION_TIMEOUT)?;
    parse_sent(&line).with_context(|| format!("cannot read {line:?}"))
}

pub fn run(collector: &mut Collector) -> Result<()> {
    let (kernel_elf, directory, accel) = crate::bench::prepare_qemu(
        collector,
        "migrate",
        &format!("two linked machines of {MACHINE_MEMORY_MIB} MiB"),
    )?;
    collector.step("building bigmem");
    app::build_apps(&["bigmem"])?;
    let (sizes, repetitions): (&[u64], usize) = match collector.mode() {
        Mode::Full => (&[16, 64, 256], 3),
        Mode::Quick => (&[16], 1),
    };
    for &mib in sizes {
        let mut totals = Vec::new();
        let mut rates = Vec::new();
        let mut downtimes = Vec::new();
        let mut raw = Vec::new();
        let mut cipher_shares = Vec::new();
        for repetition in 1..=repetitions {
            collector.step(format!("{mib} MiB: raw TCP, {repetition}/{repetitions}"));
            raw.push(raw_tcp_once(&kernel_elf, accel, &directory, mib)?);
            collector.step(format!("{mib} MiB: migration, {repetition}/{repetitions}"));
            let migration = migrate_once(&kernel_elf, accel, &directory, mib)?;
            totals.push(migration.total_ms / 1000.0);
            rates.push(migration.mib_per_s);
            downtimes.push(migration.downtime_ms);
            cipher_shares.extend(migration.cipher_share.map(|share| share * 100.0));
        }
        collector.record(Record::Figure(FigureRecord {
            name: format!("migrate.throughput_{mib}mib"),
            title: format!("live migration of a {mib} MiB domain: data sent over total time"),
            unit: "MiB/s".into(),
            amber: rates,
            baseline: Some(BaselineRecord {
                label: format!("raw TCP (nettest) of {mib} MiB, same link"),
                samples: raw,
            }),
            goal: Some(Goal::RatioAtLeast(0.7)),
        }))?;
        if !cipher_shares.is_empty() {
            collector.record(Record::Figure(FigureRecord {
                name: format!("migrate.cipher_share_{mib}mib"),
                title: format!(
                    "share of a {mib} MiB migration's source time spent encrypting \
                     (Noise, ChaChaPoly)"
                ),
                unit: "%".into(),
                amber: cipher_shares,
                baseline: None,
                goal: None,
            }))?;
        }
        collector.record(Record::Figure(FigureRecord {
            name: format!("migrate.downtime_{mib}mib"),
            title: format!("downtime of a live migration of a {mib} MiB domain"),
            unit: "ms".into(),
            amber: downtimes.clone(),
            baseline: None,
            goal: None,
        }))?;
        collector.record(Record::Point(PointRecord {
            plot: plots::MIGRATION_VS_SIZE.into(),
            series: "total".into(),
            x: mib as f64,
            samples: totals,
        }))?;
        collector.record(Record::Point(PointRecord {
            plot: plots::MIGRATION_VS_SIZE.into(),
            series: "downtime".into(),
            x: mib as f64,
            samples: downtimes.iter().map(|ms| ms / 1000.0).collect(),
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_moved_and_sent_lines() {
        let moved =
            "[migrate] bigmem: moved to 169.254.0.2 in 118507 ms, 264052 KiB sent, downtime 724 ms";
        assert_eq!(parse_moved(moved), Some((118507.0, 264052.0, 724.0)));
        let sent = "sent 4 MiB in 400 ms (10.00 MiB/s)";
        assert_eq!(parse_sent(sent), Some(10.0));
        assert_eq!(parse_moved("amber> "), None);
        let time = "[    9.1] INFO  [migrate] bigmem: time: pages 3 ms (disk waits 1 ms in 3 \
                    requests), to TCP 2 ms, from TCP 0 ms, network polls 4 ms, of 250 ms, \
                    cipher 50 ms";
        assert_eq!(parse_cipher_share(time), Some(0.2));
    }
}

//! Power cuts during live migration: exactly one machine runs the domain.
//!
//! Each round boots A (counter) and B (a spare disk) on one link, starts
//! `migrate counter 169.254.0.2` on A, and cuts the power of A or B (chosen
//! at random) a random moment later, then of the other one a little later.
//! Both boot again on a new link; once parked copies have asked their
//! source, exactly one machine must list counter as running, the other
//! never prints a count, the running one goes on at most one above the last
//! value printed and never starts over at 1, and every image verifies.
//! `MIGRATE_CUT_ROUNDS` (default 4) and `MIGRATE_CUT_SEED` replay or extend.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Cluster, LinkEnd, Machine, Xorshift, counts, domain_image,
    environment_number, seed_from_environment, work_dir,
};

const DEFAULT_ROUNDS: u64 = 4;

/// The first cut comes this long after `migrate` at most (a counter
/// migration takes about half a second under TCG; later cuts hit the
/// domain after it moved).
const MAX_CUT_DELAY_MS: u64 = 400;

/// How long a parked copy may take to hear from its source after both boot.
const RESOLUTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `path` is a blank (spare) disk: its superblocks are zero.
fn is_blank(path: &Path) -> Result<bool> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.iter().take(8192).all(|&byte| byte == 0))
}

/// Whether `ps` lists counter as running on `machine`.
fn runs_counter(machine: &mut Machine) -> Result<bool> {
    let table = machine.run_command("ps")?;
    Ok(table
        .iter()
        .any(|line| line.starts_with("counter ") && line.contains(" running")))
}

fn round(directory: &Path, random: &mut Xorshift, round: u64) -> Result<String> {
    let a_disk = domain_image(directory, "counter", "counter")?;
    let b_disk = directory.join("b.img");
    std::fs::File::create(&b_disk)
        .and_then(|file| file.set_len(64 << 20))
        .context("creating B's spare disk")?;
    let disks = [vec![a_disk.clone()], vec![b_disk.clone()]];

    let cluster = Cluster::new()?;
    let mut a = cluster.machine(LinkEnd::Listen, 1, disks[0].clone())?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, disks[1].clone())?;
    a.expect("[counter] count 5", BOOT_TIMEOUT)?;
    // Commit first: a cut before the migration's own commits must then still
    // resume counter past 1 (before any commit, starting over is right).
    a.send_line("checkpoint counter")?;
    a.expect("counter: ", ANSWER_TIMEOUT)?;
    a.expect("[counter] count 8", BOOT_TIMEOUT)?;
    let delay_ms = random.between(0, MAX_CUT_DELAY_MS);
    let victim_is_a = random.next_u64().is_multiple_of(2);
    a.send_line("migrate counter 169.254.0.2")?;
    std::thread::sleep(Duration::from_millis(delay_ms));
    let (first, second) = if victim_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    first.power_cut();
    std::thread::sleep(Duration::from_millis(random.between(0, 500)));
    second.power_cut();
    let printed = counts("counter", &a.transcript())
        .into_iter()
        .chain(counts("counter", &b.transcript()))
        .max()
        .unwrap_or(0);
    let before = format!(
        "round {round}: cut {} {delay_ms} ms after migrate; A said {:?}; B said {:?}; \
         last count printed {printed}",
        if victim_is_a {
            "A, then B"
        } else {
            "B, then A"
        },
        a.transcript()
            .lines()
            .filter(|line| line.contains("[migrate]"))
            .collect::<Vec<_>>(),
        b.transcript()
            .lines()
            .filter(|line| line.contains("[migrate]"))
            .collect::<Vec<_>>(),
    );
    drop(a);
    drop(b);

    for disk in disks.iter().flatten() {
        if !is_blank(disk)? {
            xtask::image::verify(disk).with_context(|| before.clone())?;
        }
    }

    // The rebooted machines keep their cluster's secret, on a new link.
    let cluster = cluster.relinked()?;
    let mut a = cluster.machine(LinkEnd::Listen, 1, disks[0].clone())?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, disks[1].clone())?;
    // A parked copy on B asks A within seconds; wait until one side runs
    // counter, then watch both for a while.
    let deadline = Instant::now() + RESOLUTION_TIMEOUT;
    loop {
        let running = usize::from(runs_counter(&mut a)?) + usize::from(runs_counter(&mut b)?);
        if running == 1 {
            break;
        }
        if running > 1 {
            bail!("{before}\nboth machines run counter");
        }
        if Instant::now() >= deadline {
            bail!(
                "{before}\nno machine runs counter {} s after booting both\nA:\n{}\nB:\n{}",
                RESOLUTION_TIMEOUT.as_secs(),
                a.transcript(),
                b.transcript()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (on_a, on_b) = (
        counts("counter", &a.transcript()),
        counts("counter", &b.transcript()),
    );
    let (runner, resumed) = match (on_a.is_empty(), on_b.is_empty()) {
        (false, true) => ("A", on_a),
        (true, false) => ("B", on_b),
        _ => bail!("{before}\nafter the reboot A printed {on_a:?} and B printed {on_b:?}"),
    };
    let first = resumed[0];
    if first == 1 || first > printed + 1 {
        bail!("{before}\n{runner} went on at {first} after {printed} was printed");
    }
    for mut machine in [a, b] {
        machine.send_line("shutdown")?;
        machine.expect_exit(0, ANSWER_TIMEOUT)?;
    }
    for disk in disks.iter().flatten() {
        if !is_blank(disk)? {
            xtask::image::verify(disk).with_context(|| before.clone())?;
        }
    }
    Ok(format!("{before}; {runner} runs it from {first}"))
}

#[test]
fn power_cuts_during_a_migration_leave_exactly_one_runner() -> Result<()> {
    let rounds = environment_number("MIGRATE_CUT_ROUNDS")?.unwrap_or(DEFAULT_ROUNDS);
    let seed = seed_from_environment("MIGRATE_CUT_SEED")?;
    eprintln!("MIGRATE_CUT_SEED={seed}");
    let mut random = Xorshift::new(seed);
    for number in 1..=rounds {
        let directory = work_dir(&format!("migrate-power-cut-{number}"))?;
        let summary = round(&directory, &mut random, number)?;
        eprintln!("{summary}");
    }
    Ok(())
}

//! Live migration between two linked QEMU instances (console `migrate`).
//!
//! A runs counter; B has only a spare disk. `migrate counter 169.254.0.2`
//! on A streams the image over TCP while counter runs, pauses it for the
//! final round and hands it over: B must go on at exactly the value after
//! A's last, and A must never print another count, not even after a
//! reboot with its old disk (which now holds the hand-over record). kv
//! moves with its keys, and a 256 MiB domain with every page intact.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Cluster, LinkEnd, Machine, counts, domain_image, is_consecutive,
    last_count, logged_counts, test_config, work_dir,
};

/// A whole migration between two TCG machines on a loaded host.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(180);

/// The 256 MiB one (about two minutes on our development machine).
const BIG_MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

/// A blank disk: the kernel keeps it as a spare.
fn spare(directory: &Path, name: &str) -> Result<std::path::PathBuf> {
    let path = directory.join(name);
    let file = std::fs::File::create(&path).context("creating a spare disk")?;
    file.set_len(64 << 20).context("sizing a spare disk")?;
    Ok(path)
}

/// Whether `ps` printed `table` with a row for `name` in `state`.
fn has_row(table: &[String], name: &str, state: &str) -> bool {
    table
        .iter()
        .any(|line| line.starts_with(&format!("{name} ")) && line.contains(state))
}

#[test]
fn counter_moves_live_and_goes_on_from_the_next_value() -> Result<()> {
    let directory = work_dir("live-migrate-counter")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let cluster = Cluster::new()?;
    let mut a = cluster.machine(LinkEnd::Listen, 1, vec![counter.clone()])?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, vec![spare(&directory, "b-spare.img")?])?;
    a.expect("[counter] count 10", BOOT_TIMEOUT)?;
    // A snapshot taken on A goes along.
    a.send_line("snapshot counter before-move")?;
    a.expect("counter: snapshot 0 'before-move' taken", ANSWER_TIMEOUT)?;
    let transcript = a.transcript();
    let answer_at = transcript.rfind("counter: snapshot 0").unwrap_or(0);
    let at_snapshot = last_count("counter", &transcript[..answer_at]).unwrap_or(0);
    a.expect(
        &format!("[counter] count {}", at_snapshot + 5),
        ANSWER_TIMEOUT,
    )?;

    a.send_line("migrate counter 169.254.0.2")?;
    let moved = a.expect("[migrate] counter: moved to 169.254.0.2", MIGRATION_TIMEOUT)?;
    b.expect(
        "[migrate] counter arrived from 169.254.0.1",
        MIGRATION_TIMEOUT,
    )?;
    let on_a = counts("counter", &a.transcript());
    let Some(&last_on_a) = on_a.last() else {
        bail!("A printed no count");
    };
    b.expect(
        &format!("[counter] count {}", last_on_a + 5),
        ANSWER_TIMEOUT,
    )?;
    let on_b = counts("counter", &b.transcript());
    assert_eq!(
        on_b.first(),
        Some(&(last_on_a + 1)),
        "B must go on at the value after A's last ({last_on_a}); B printed {on_b:?}"
    );
    assert!(
        on_b.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "B's counts skip or repeat: {on_b:?}"
    );

    // A shows the domain moved away, and prints no more counts.
    let table = a.run_command("ps")?;
    assert!(has_row(&table, "counter", "moved away"), "{table:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(counts("counter", &a.transcript()).last(), Some(&last_on_a));
    let table = b.run_command("ps")?;
    assert!(has_row(&table, "counter", "running"), "{table:?}");
    // Its log came along: B's `logs` holds what counter printed on A.
    let answer = b.run_command("logs counter -n 100000")?;
    let logged = logged_counts(answer.iter().map(String::as_str));
    assert!(
        logged.first() == Some(&1) && logged.contains(&last_on_a) && is_consecutive(&logged),
        "B's log of counter: {answer:?}"
    );
    // So did its snapshot: B lists it and goes back to it.
    let table = b.run_command("snapshots counter")?;
    assert!(
        table.iter().any(|line| line.contains(" before-move ")),
        "{table:?}"
    );
    let mark = b.transcript().len();
    b.send_line("rollback counter before-move")?;
    b.expect(
        "counter: rolled back to snapshot 'before-move'",
        ANSWER_TIMEOUT,
    )?;
    b.expect(
        &format!("[counter] count {}", at_snapshot + 3),
        ANSWER_TIMEOUT,
    )?;
    let after = counts("counter", &b.transcript()[mark..]);
    let first_after = after
        .iter()
        .copied()
        .find(|&count| count <= at_snapshot + 2);
    assert!(
        first_after.is_some_and(|count| count > at_snapshot),
        "B counted {after:?} after the rollback to count {at_snapshot}"
    );

    // Both power off cleanly; A's old disk, booted alone, never runs it.
    a.send_line("shutdown")?;
    a.expect_exit(0, ANSWER_TIMEOUT)?;
    b.send_line("shutdown")?;
    b.expect_exit(0, ANSWER_TIMEOUT)?;
    let mut config = test_config()?;
    config.disks = vec![counter];
    let mut again = Machine::boot(&config)?;
    again.expect_prompt(BOOT_TIMEOUT)?;
    let table = again.run_command("ps")?;
    assert!(has_row(&table, "counter", "moved away"), "{table:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(counts("counter", &again.transcript()).is_empty());
    eprintln!("A: {moved}");
    Ok(())
}

#[test]
fn counter_goes_there_and_back_on_the_disk_of_its_tombstone() -> Result<()> {
    let directory = work_dir("live-migrate-back")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let cluster = Cluster::new()?;
    // A has no spare: only the disk counter leaves, which keeps its
    // tombstone until counter comes back.
    let mut a = cluster.machine(LinkEnd::Listen, 1, vec![counter])?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, vec![spare(&directory, "b-spare.img")?])?;
    a.expect("[counter] count 5", BOOT_TIMEOUT)?;
    a.send_line("migrate counter 169.254.0.2")?;
    a.expect("[migrate] counter: moved to 169.254.0.2", MIGRATION_TIMEOUT)?;
    b.expect(
        "[migrate] counter arrived from 169.254.0.1",
        MIGRATION_TIMEOUT,
    )?;
    let Some(&last_on_a) = counts("counter", &a.transcript()).last() else {
        bail!("A printed no count");
    };
    b.expect(
        &format!("[counter] count {}", last_on_a + 3),
        ANSWER_TIMEOUT,
    )?;

    b.send_line("migrate counter 169.254.0.1")?;
    b.expect("[migrate] counter: moved to 169.254.0.1", MIGRATION_TIMEOUT)?;
    a.expect(
        "[migrate] counter is coming back: its tombstone on disk 0 is blanked",
        MIGRATION_TIMEOUT,
    )?;
    a.expect(
        "[migrate] counter arrived from 169.254.0.2",
        MIGRATION_TIMEOUT,
    )?;
    let Some(&last_on_b) = counts("counter", &b.transcript()).last() else {
        bail!("B printed no count");
    };
    a.expect(
        &format!("[counter] count {}", last_on_b + 3),
        ANSWER_TIMEOUT,
    )?;
    let on_a = counts("counter", &a.transcript());
    let back_on_a: Vec<u64> = on_a
        .iter()
        .copied()
        .filter(|&count| count > last_on_a)
        .collect();
    assert_eq!(
        back_on_a.first(),
        Some(&(last_on_b + 1)),
        "A must go on at the value after B's last ({last_on_b}); A printed {on_a:?}"
    );
    let table = a.run_command("ps")?;
    let rows: Vec<&String> = table
        .iter()
        .filter(|line| line.starts_with("counter "))
        .collect();
    assert!(
        rows.len() == 1 && rows[0].contains("running"),
        "A runs counter, and its tombstone is gone: {table:?}"
    );
    let table = b.run_command("ps")?;
    assert!(has_row(&table, "counter", "moved away"), "{table:?}");
    Ok(())
}

#[test]
fn kv_moves_live_with_all_its_keys() -> Result<()> {
    let directory = work_dir("live-migrate-kv")?;
    let kv = domain_image(&directory, "kv", "kv")?;
    let kvclient = domain_image(&directory, "kvclient", "kvclient")?;
    let b_disk = spare(&directory, "b-spare.img")?;
    let cluster = Cluster::new()?;
    let mut a = cluster.machine(LinkEnd::Listen, 1, vec![kv, kvclient])?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, vec![b_disk.clone()])?;
    a.expect("runs before this one: 0", BOOT_TIMEOUT)?;
    a.expect("kvclient done", ANSWER_TIMEOUT)?;

    a.send_line("migrate kv 169.254.0.2")?;
    a.expect("[migrate] kv: moved to 169.254.0.2", MIGRATION_TIMEOUT)?;
    b.expect("[migrate] kv arrived from 169.254.0.1", MIGRATION_TIMEOUT)?;
    a.send_line("shutdown")?;
    a.expect_exit(0, ANSWER_TIMEOUT)?;
    b.send_line("shutdown")?;
    b.expect_exit(0, ANSWER_TIMEOUT)?;

    // B's disk now holds kv: a new client finds A's run counted, and the
    // key it wrote there.
    let second_client = domain_image(&directory, "kvclient", "kvclient")?;
    let mut config = test_config()?;
    config.disks = vec![b_disk, second_client];
    let mut again = Machine::boot(&config)?;
    again.expect("runs before this one: 1", BOOT_TIMEOUT)?;
    again.expect("kvclient done", ANSWER_TIMEOUT)?;
    Ok(())
}

#[test]
fn a_256_mib_domain_moves_live_with_its_memory_intact() -> Result<()> {
    let directory = work_dir("live-migrate-256")?;
    tests::build_apps()?;
    let image = xtask::image::new(&xtask::image::NewArgs {
        wasm: xtask::paths::apps_dir().join("bigmem.wasm"),
        name: "bigmem".into(),
        memory_max_mib: Some(320),
        size_mib: Some(768),
        // 256 MiB written and verified, then verified again every 2 s.
        args: vec!["256".into(), "2".into()],
        env: Vec::new(),
        output: Some(directory.join("bigmem.img")),
        listen: Vec::new(),
        durable_replies: false,
    })?;
    let b_disk = directory.join("b-spare.img");
    std::fs::File::create(&b_disk)
        .and_then(|file| file.set_len(768 << 20))
        .context("creating B's spare disk")?;
    let cluster = Cluster::new()?;
    let mut a = cluster.machine(LinkEnd::Listen, 1, vec![image])?;
    let mut b = cluster.machine(LinkEnd::Connect, 2, vec![b_disk])?;
    a.expect("[bigmem] verified 256 MiB", MIGRATION_TIMEOUT)?;

    a.send_line("migrate bigmem 169.254.0.2")?;
    let moved = a.expect(
        "[migrate] bigmem: moved to 169.254.0.2",
        BIG_MIGRATION_TIMEOUT,
    )?;
    b.expect(
        "[migrate] bigmem arrived from 169.254.0.1",
        BIG_MIGRATION_TIMEOUT,
    )?;
    // B reads all 256 MiB back: the memory came over intact.
    b.expect(": verified 256 MiB", MIGRATION_TIMEOUT)?;
    assert!(!b.transcript().contains("FAILED"), "{}", b.transcript());
    b.send_line("shutdown")?;
    b.expect_exit(0, ANSWER_TIMEOUT)?;
    a.send_line("shutdown")?;
    a.expect_exit(0, ANSWER_TIMEOUT)?;
    eprintln!("A: {moved}");
    Ok(())
}

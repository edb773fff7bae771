//! Offline migration: a stopped domain's image copied to a second instance.

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, count_of, domain_image, last_count, test_config,
    work_dir,
};

fn boot(disk: &std::path::Path) -> Result<Machine> {
    let mut config = test_config()?;
    config.disks = vec![disk.to_path_buf()];
    Machine::boot(&config)
}

fn shows_stopped(table: &[String], name: &str) -> bool {
    table
        .iter()
        .any(|line| line.split_whitespace().next() == Some(name) && line.contains("stopped"))
}

#[test]
fn a_stopped_counter_copied_to_another_instance_goes_on_from_the_next_value() -> Result<()> {
    let directory = work_dir("migrate-offline")?;
    let machine_a_dir = directory.join("a");
    let machine_b_dir = directory.join("b");
    std::fs::create_dir_all(&machine_a_dir)?;
    std::fs::create_dir_all(&machine_b_dir)?;
    let image_a = domain_image(&machine_a_dir, "counter", "counter")?;

    // Instance A: count a little, stop (final commit, status stopped), shut down.
    let mut machine_a = boot(&image_a)?;
    machine_a.expect("[counter] count 3", BOOT_TIMEOUT)?;
    machine_a.send_line("stop counter")?;
    machine_a.expect("counter: stopped", ANSWER_TIMEOUT)?;
    let last = last_count("counter", &machine_a.transcript()).context("no count on A")?;
    machine_a.expect_prompt(ANSWER_TIMEOUT)?;
    machine_a.send_line("shutdown")?;
    machine_a.expect_exit(0, ANSWER_TIMEOUT)?;
    if last_count("counter", &machine_a.transcript()) != Some(last) {
        bail!("A counted on after `stop counter` (stopped at {last})");
    }
    drop(machine_a);

    // The image moves as a file; A's copy is left as it is.
    let image_b = machine_b_dir.join("counter.img");
    std::fs::copy(&image_a, &image_b).context("copying the image to B")?;

    // Instance B: stopped until started, then the next value.
    let mut machine_b = boot(&image_b)?;
    machine_b.expect_prompt(BOOT_TIMEOUT)?;
    let table = machine_b.run_command("ps")?;
    assert!(shows_stopped(&table, "counter"), "ps on B: {table:?}");
    assert!(
        last_count("counter", &machine_b.transcript()).is_none(),
        "counter ran on B before `start`"
    );
    machine_b.send_line("start counter")?;
    let first_line = machine_b.expect("[counter] count ", ANSWER_TIMEOUT)?;
    let first = count_of("counter", &first_line).context("unreadable count on B")?;
    if first != last + 1 {
        bail!(
            "stopped at {last} on A, went on at {first} on B (wanted {})",
            last + 1
        );
    }
    machine_b.expect(&format!("[counter] count {}", last + 3), ANSWER_TIMEOUT)?;
    machine_b.send_line("shutdown")?;
    machine_b.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

#[test]
fn cargo_xtask_migrate_offline_runs_both_instances() -> Result<()> {
    // The harness builds the kernel and the apps once per test process;
    // building them here first keeps xtask's own (identical) build of
    // counter from racing the other test's in this process.
    test_config()?;
    domain_image(&work_dir("migrate-xtask")?, "counter", "counter")?;
    let report = xtask::migrate::offline(&xtask::migrate::OfflineArgs {
        domain: "counter".into(),
        lines: 3,
        accel: tests::Accel::Tcg,
    })?;
    let last = count_of("counter", &report.last_line_on_a).context("no count on A")?;
    let first = count_of("counter", &report.first_line_on_b).context("no count on B")?;
    assert_eq!(first, last + 1, "{report}");
    Ok(())
}

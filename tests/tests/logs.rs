//! Each domain's own log: `follow` chooses whose output the console shows
//! as it comes, `logs NAME` reads the log a domain keeps in its image, and
//! the log survives a reboot (`image logs` reads it on the host). That it
//! travels with a live migration is checked in `live_migrate.rs`.

use std::time::Duration;

use anyhow::{Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, counts, domain_image, is_consecutive, last_count,
    logged_counts, test_config, work_dir,
};

/// The counts in the answer to `logs counter -n N`, after checking its
/// header.
fn logs_of_counter(machine: &mut Machine, lines: usize) -> Result<Vec<u64>> {
    let answer = machine.run_command(&format!("logs counter -n {lines}"))?;
    let Some(header) = answer
        .iter()
        .find(|line| line.starts_with("counter: the last "))
    else {
        bail!("logs counter answered {answer:?}");
    };
    println!("{header}");
    let logged = logged_counts(answer.iter().map(String::as_str));
    if logged.is_empty() || logged.len() > lines || !is_consecutive(&logged) {
        bail!("logs counter -n {lines} showed counts {logged:?}");
    }
    Ok(logged)
}

#[test]
fn counter_keeps_its_log_across_a_reboot_while_the_console_follows_none() -> Result<()> {
    let directory = work_dir("logs-counter")?;
    let counter = domain_image(&directory, "counter", "counter")?;
    let mut config = test_config()?;
    config.disks = vec![counter.clone()];
    let mut machine = Machine::boot(&config)?;
    machine.expect("[counter] count 5", BOOT_TIMEOUT)?;

    let answer = machine.run_command("follow none")?;
    if !answer
        .iter()
        .any(|line| line.contains("shows no domain's output"))
    {
        bail!("follow none answered {answer:?}");
    }
    let quiet_from = machine.transcript().len();
    std::thread::sleep(Duration::from_secs(3));
    let shown = last_count("counter", &machine.transcript()).unwrap_or(0);
    let logged = logs_of_counter(&mut machine, 5)?;
    let quiet = &machine.transcript()[quiet_from..];
    if !counts("counter", quiet).is_empty() {
        bail!("counter printed on the console after follow none: {quiet}");
    }
    let last_logged = logged[logged.len() - 1];
    println!("the console showed up to count {shown}; the log holds {logged:?}");
    if logged.len() != 5 || last_logged < shown + 10 {
        bail!("after 3 s of follow none the log ends at {last_logged}, the console at {shown}");
    }
    machine.send_line("follow counter")?;
    machine.expect("shows the output of counter as it comes", ANSWER_TIMEOUT)?;
    machine.expect(
        &format!("[counter] count {}", last_logged + 3),
        ANSWER_TIMEOUT,
    )?;
    // Refusals name what was wrong.
    let answer = machine.run_command("logs nobody")?;
    if !answer.contains(&"error: no domain named 'nobody' (see ps)".to_string()) {
        bail!("logs nobody answered {answer:?}");
    }
    let answer = machine.run_command("logs counter -n many")?;
    if !answer.contains(&"error: 'many' is not a number of lines".to_string()) {
        bail!("logs counter -n many answered {answer:?}");
    }
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    let before_reboot = last_count("counter", &machine.transcript()).unwrap_or(0);

    // The host reads the same log from the image: every count from 1 on.
    let text = xtask::image::logs(&counter, None)?;
    let on_disk = logged_counts(text.lines());
    if on_disk.first() != Some(&1) || !is_consecutive(&on_disk) {
        bail!("image logs showed counts {on_disk:?}");
    }
    let last_on_disk = on_disk[on_disk.len() - 1];
    if last_on_disk < before_reboot {
        bail!("the log ends at {last_on_disk}; counter printed {before_reboot} before shutdown");
    }

    // After a reboot the log holds the counts of the first boot and goes on.
    let mut machine = Machine::boot(&config)?;
    machine.expect(
        &format!("[counter] count {}", last_on_disk + 5),
        BOOT_TIMEOUT,
    )?;
    let logged = logs_of_counter(&mut machine, 100_000)?;
    println!(
        "after the reboot the log holds counts {} to {}",
        logged[0],
        logged[logged.len() - 1]
    );
    if logged[0] != 1 || logged[logged.len() - 1] < last_on_disk + 5 {
        bail!("after the reboot logs counter showed {logged:?}");
    }
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    Ok(())
}

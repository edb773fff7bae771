//! Messages across power cuts: every number arrives exactly once, in order.
//!
//! `numbers` sends 1, 2, 3, ... to `tally`, which prints `out of order:
//! expected N, got M` on any gap (a lost message) or step back (a repeated
//! one). Every round boots the same two images, lets them run and kills QEMU
//! at a random moment (seeded; `AMBER_MESSAGE_CUT_SEED` replays it). The two
//! domains commit independently (numbers every 7th number, tally every
//! 11th, both every 200 ms), so a cut finds either one ahead: a numbers
//! rolled back behind what tally committed sends those numbers again, and
//! the vm must recognise each resend (`dropped a resend of message N`); a
//! tally rolled back behind what numbers committed as sent must get those
//! from numbers' outbox (`delivered again from its sender's outbox`).
//! After the last cut a clean boot must carry tally past every number it
//! had counted, still in order. `AMBER_MESSAGE_CUT_ROUNDS` sets the rounds
//! (default 6).

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::{
    ANSWER_TIMEOUT, BOOT_TIMEOUT, Machine, PROMPT, Xorshift, domain_image, environment_number,
    seed_from_environment, test_config, work_dir,
};

/// Rounds when `AMBER_MESSAGE_CUT_ROUNDS` is not set.
const DEFAULT_ROUNDS: u64 = 6;

/// Periodic checkpoints every 200 ms: numbers' commits lag tally's.
const KERNEL_ARGUMENTS: &str = "checkpoint-ms=200";

/// The cut comes this long after the prompt, at least ...
const MIN_CUT_DELAY_MS: u64 = 300;

/// ... and at most.
const MAX_CUT_DELAY_MS: u64 = 4000;

/// How long the last boot may take to count 200 numbers past the last cut.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(120);

/// N in `[tally] N in order`.
fn in_order_of(line: &str) -> Option<u64> {
    line.split("[tally] ")
        .nth(1)?
        .strip_suffix(" in order")?
        .trim()
        .parse()
        .ok()
}

/// The highest `[tally] N in order` in a transcript.
fn highest_in_order(transcript: &str) -> Option<u64> {
    transcript
        .lines()
        .filter_map(|line| in_order_of(line.trim_end()))
        .max()
}

/// How many times the vm recognised and dropped a resend, or delivered
/// again what a receiver lost, in a transcript.
fn recoveries(transcript: &str) -> (usize, usize) {
    (
        transcript.matches("dropped a resend of message").count(),
        transcript
            .matches("delivered again from its sender's outbox")
            .count(),
    )
}

/// Fails if tally saw a gap or a repeat.
fn check_order(what: &str, transcript: &str, seed: u64) -> Result<()> {
    if let Some(line) = transcript
        .lines()
        .find(|line| line.contains("out of order"))
    {
        bail!(
            "{what}: {}\nreplay with AMBER_MESSAGE_CUT_SEED={seed}\n----- transcript -----\n\
             {transcript}\n----- end -----",
            line.trim_end()
        );
    }
    Ok(())
}

fn boot(disks: &[PathBuf]) -> Result<Machine> {
    let mut config = test_config()?;
    config.append = KERNEL_ARGUMENTS.to_string();
    config.disks = disks.to_vec();
    let mut machine = Machine::boot(&config)?;
    machine.expect(PROMPT, BOOT_TIMEOUT)?;
    Ok(machine)
}

fn verify(disks: &[PathBuf]) -> Result<()> {
    for disk in disks {
        xtask::image::verify(disk).with_context(|| format!("verifying {}", disk.display()))?;
    }
    Ok(())
}

#[test]
fn every_message_arrives_exactly_once_across_power_cuts() -> Result<()> {
    let started = Instant::now();
    let rounds = environment_number("AMBER_MESSAGE_CUT_ROUNDS")?.unwrap_or(DEFAULT_ROUNDS);
    let seed = seed_from_environment("AMBER_MESSAGE_CUT_SEED")?;
    println!("message power cuts: {rounds} rounds, AMBER_MESSAGE_CUT_SEED={seed}");
    let mut random = Xorshift::new(seed);
    let directory = work_dir("message-power-cut")?;
    let disks = [
        domain_image(&directory, "numbers", "numbers")?,
        domain_image(&directory, "tally", "tally")?,
    ];
    let mut highest = 0;
    let mut total_resends = 0;
    let mut total_redeliveries = 0;
    for round in 0..rounds {
        let mut machine = boot(&disks).with_context(|| format!("round {round}"))?;
        let cut_delay_ms = random.between(MIN_CUT_DELAY_MS, MAX_CUT_DELAY_MS);
        thread::sleep(Duration::from_millis(cut_delay_ms));
        machine.power_cut();
        let transcript = machine.transcript();
        check_order(&format!("round {round}"), &transcript, seed)?;
        verify(&disks).with_context(|| format!("round {round}, seed {seed}"))?;
        let (round_resends, round_redeliveries) = recoveries(&transcript);
        total_resends += round_resends;
        total_redeliveries += round_redeliveries;
        highest = highest.max(highest_in_order(&transcript).unwrap_or(0));
        println!(
            "round {round}: cut {cut_delay_ms} ms after the prompt; tally in order up to at \
             least {highest}; {round_resends} resends dropped, {round_redeliveries} \
             deliveries again"
        );
    }

    // The last boot goes on past everything tally counted, in order.
    let mut machine = boot(&disks).context("the boot after the last cut")?;
    let target = (highest / 100 + 2) * 100;
    machine
        .expect(&format!("[tally] {target} in order"), PROGRESS_TIMEOUT)
        .with_context(|| format!("tally did not reach {target} (seed {seed})"))?;
    machine.send_line("shutdown")?;
    machine.expect_exit(0, ANSWER_TIMEOUT)?;
    let transcript = machine.transcript();
    check_order("the last boot", &transcript, seed)?;
    verify(&disks)?;
    let (last_resends, last_redeliveries) = recoveries(&transcript);
    total_resends += last_resends;
    total_redeliveries += last_redeliveries;

    // The two commit out of step: a boot after a cut finds one ahead of
    // the other, and the vm must have had to make up for it.
    if rounds >= 2 {
        assert!(
            total_resends + total_redeliveries > 0,
            "neither a resend nor a lost message in {rounds} cuts (seed {seed})"
        );
    }
    println!(
        "message power cuts: {rounds} cuts, tally reached {target} in order, {total_resends} \
         resends dropped, {total_redeliveries} deliveries again, in {:.1} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

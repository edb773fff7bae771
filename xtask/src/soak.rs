//! `cargo xtask soak`: long randomised robustness runs.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::paths;

/// Which soak test to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Soak {
    /// Random page writes, commits and power cuts against persist.
    Persist,
    /// SIGKILL of QEMU at random moments while counter and kv run in the
    /// kernel (the `power_cut` QEMU test with N rounds).
    PowerCut,
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// What to soak.
    pub soak: Soak,
    /// How many rounds (power cuts, reboots...).
    pub rounds: u64,
    /// The seed. persist: the first seed (rounds use SEED, SEED+1, ...;
    /// default 0). power-cut: the seed of the cut moments (default: from
    /// the clock). A failure names its seed so that it can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    match args.soak {
        Soak::Persist => soak_persist(args.seed.unwrap_or(0), args.rounds),
        Soak::PowerCut => soak_power_cut(args.seed, args.rounds),
    }
}

/// Runs the `power_cut` QEMU test (tests/tests/power_cut.rs) with `rounds`
/// cuts, in the profile `cargo test` uses so that nothing builds twice. The
/// test prints every round and the seed; its failures carry the transcripts.
fn soak_power_cut(seed: Option<u64>, rounds: u64) -> Result<()> {
    let started = Instant::now();
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(paths::workspace_root())
        .args([
            "test",
            "--package",
            "tests",
            "--test",
            "power_cut",
            "--",
            "--nocapture",
        ])
        .env("AMBER_POWER_CUT_ROUNDS", rounds.to_string());
    if let Some(seed) = seed {
        command.env("AMBER_POWER_CUT_SEED", seed.to_string());
    }
    let status = command.status().context("running cargo test")?;
    if !status.success() {
        bail!(
            "power-cut soak failed ({status}); the test's output above names the round and the seed"
        );
    }
    println!(
        "power-cut soak: {rounds} power cuts survived in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `rounds` seeded power-cut rounds (persist::soak), each a random
/// workload cut at a random write, reopened and checked.
fn soak_persist(first_seed: u64, rounds: u64) -> Result<()> {
    let started = Instant::now();
    let mut failed_writes = 0;
    let mut commits = 0;
    for seed in first_seed..first_seed.saturating_add(rounds) {
        match persist::soak::power_cut_round(seed) {
            Ok(report) => {
                commits += report.commits_ok;
                failed_writes += u64::from(report.had_failed_write);
            }
            Err(message) => bail!(
                "persist soak failed: {message}\nreplay: cargo xtask soak persist 1 --seed {seed}"
            ),
        }
        let done = seed - first_seed + 1;
        if done.is_multiple_of(1000) {
            eprintln!("{done} power cuts survived...");
        }
    }
    println!(
        "persist soak: {rounds} power cuts survived ({failed_writes} after an injected write error, {commits} commits before the cuts) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

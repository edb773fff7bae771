//! `cargo xtask soak`: long randomised robustness runs.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

/// Which soak test to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Soak {
    /// Random page writes, commits and power cuts against persist.
    Persist,
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// What to soak.
    pub soak: Soak,
    /// How many rounds (power cuts, reboots...).
    pub rounds: u64,
    /// The first seed (rounds use seeds SEED, SEED+1, ...; a failure names
    /// its seed so that it can be replayed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    match args.soak {
        Soak::Persist => soak_persist(args.seed, args.rounds),
    }
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

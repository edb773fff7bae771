//! `cargo xtask soak`: long randomised robustness runs.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

/// Which soak test to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Soak {
    /// Random page writes, commits and power cuts against persist (issue 3).
    Persist,
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// What to soak.
    pub soak: Soak,
    /// How many rounds (power cuts, reboots...).
    pub rounds: u64,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    match args.soak {
        Soak::Persist => bail!("the persist soak is not built yet (issue 3)"),
    }
}

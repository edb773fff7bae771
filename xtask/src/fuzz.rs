//! `cargo xtask fuzz`: cargo-fuzz targets, where cargo-fuzz is installed.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

/// Which fuzz target to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FuzzTarget {
    /// Image open and page reads on arbitrary bytes (issue 3).
    Persist,
}

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// The fuzz target.
    pub target: FuzzTarget,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    match args.target {
        FuzzTarget::Persist => bail!("the persist fuzz target is not built yet (issue 3)"),
    }
}

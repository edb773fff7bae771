//! `cargo xtask fuzz`: cargo-fuzz targets, where cargo-fuzz is installed.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{paths, tools};

/// Which fuzz target to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FuzzTarget {
    /// Image open and page reads on arbitrary bytes (persist/fuzz).
    Persist,
}

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// The fuzz target.
    pub target: FuzzTarget,
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    match args.target {
        FuzzTarget::Persist => fuzz_persist(args.seconds),
    }
}

/// Runs persist/fuzz's `open` target with cargo-fuzz on the pinned nightly
/// (libFuzzer's instrumentation needs `-Z` flags).
fn fuzz_persist(seconds: u64) -> Result<()> {
    if tools::find_program("cargo-fuzz").is_none() {
        bail!(
            "cargo-fuzz is not installed: run `cargo install cargo-fuzz` (it runs on the \
             kernel's pinned nightly, which xtask installs). Without it, the same \
             arbitrary-bytes checks run as proptests in `cargo test -p persist`."
        );
    }
    tools::ensure_kernel_toolchain()?;
    let status = Command::new("rustup")
        .args([
            "run",
            tools::KERNEL_TOOLCHAIN,
            "cargo",
            "fuzz",
            "run",
            "open",
            "--",
        ])
        .arg(format!("-max_total_time={seconds}"))
        .current_dir(paths::workspace_root().join("persist"))
        .status()
        .context("running `rustup run nightly cargo fuzz` (is rustup installed?)")?;
    if !status.success() {
        bail!("the persist fuzz target failed (crash inputs are in persist/fuzz/artifacts/open)");
    }
    Ok(())
}

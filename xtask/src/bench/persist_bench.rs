//! `cargo xtask bench persist`: runs persist's benchmark example in release.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths;

/// Builds and runs `persist/examples/bench.rs` with `--release` (the xtask
/// itself is a dev build, and persist is a workspace member at opt-level 1
/// there). Images go to target/amber/bench, on the real disk.
pub fn run() -> Result<()> {
    let directory = paths::bench_dir().join("persist");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "persist",
            "--example",
            "bench",
            "--",
        ])
        .arg(&directory)
        .current_dir(paths::workspace_root())
        .status()
        .context("running cargo for the persist benchmark")?;
    if !status.success() {
        bail!("the persist benchmark failed");
    }
    Ok(())
}

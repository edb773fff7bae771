//! `cargo xtask bench vm`: runs vm's benchmark example in release.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths;

/// Builds and runs `vm/examples/bench.rs` with `--release`: the vm against
/// plain wasmi in the same run, host-call round trips, and one-page
/// checkpoints of a 1 GiB-max domain (images in target/amber/bench/vm).
pub fn run() -> Result<()> {
    let directory = paths::bench_dir().join("vm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "vm",
            "--example",
            "bench",
            "--",
        ])
        .arg(&directory)
        .current_dir(paths::workspace_root())
        .status()
        .context("running cargo for the vm benchmark")?;
    if !status.success() {
        bail!("the vm benchmark failed");
    }
    Ok(())
}

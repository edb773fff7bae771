//! `cargo xtask bench`: performance figures against baselines from the same run.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::paths;

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Benchmark {
    /// Commit cost against dirty pages and image size; commit throughput (issue 3).
    Persist,
    /// The vm against plain wasmi; host calls; checkpoints (issue 4).
    Vm,
    /// Resume time of a 1 GiB-max domain against a small one, in QEMU (issue 5).
    Kernel,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The benchmark to run.
    pub benchmark: Benchmark,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match args.benchmark {
        Benchmark::Persist => run_bench_example("persist"),
        Benchmark::Vm => run_bench_example("vm"),
        Benchmark::Kernel => crate::bench_kernel::run(),
    }
}

/// Builds and runs `PACKAGE/examples/bench.rs` with `--release` (the xtask
/// itself is a dev build, where workspace members are at opt-level 1), with
/// target/amber/bench/PACKAGE as its working directory for images and files,
/// on the real disk.
fn run_bench_example(package: &str) -> Result<()> {
    let directory = paths::bench_dir().join(package);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            package,
            "--example",
            "bench",
            "--",
        ])
        .arg(&directory)
        .current_dir(paths::workspace_root())
        .status()
        .with_context(|| format!("running cargo for the {package} benchmark"))?;
    if !status.success() {
        bail!("the {package} benchmark failed");
    }
    Ok(())
}

//! `cargo xtask bench`: performance figures against baselines from the same run.

use anyhow::Result;
use clap::{Args, ValueEnum};

mod persist_bench;
mod vm_bench;

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Benchmark {
    /// Commit cost against dirty pages and image size; commit throughput (issue 3).
    Persist,
    /// The vm against plain wasmi; host calls; checkpoints (issue 4).
    Vm,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The benchmark to run.
    pub benchmark: Benchmark,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match args.benchmark {
        Benchmark::Persist => persist_bench::run(),
        Benchmark::Vm => vm_bench::run(),
    }
}

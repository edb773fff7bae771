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

/// Blocks of the seed image.
const SEED_BLOCKS: u64 = 24;

/// A corpus directory (under target/, so it is never committed) holding a
/// small valid image with a module, pages and two commits: random bytes almost
/// never pass the superblock checksum, so the fuzzer starts from real images
/// and mutates them.
fn seed_corpus() -> Result<std::path::PathBuf> {
    use persist::{Image, MemoryDevice, NewDomain, PAGE_SIZE};
    let directory = paths::amber_dir().join("fuzz").join("persist-open");
    std::fs::create_dir_all(&directory)?;
    let domain = NewDomain {
        id: persist::DomainId(0x0123_4567_89ab_cdef),
        name: "seed",
        module: b"\0asm\x01\0\0\0",
        memory_pages: 1,
        memory_max_pages: 2,
        args: vec!["seed".into()],
        env: vec!["KEY=value".into()],
    };
    let mut image = Image::create(MemoryDevice::new(SEED_BLOCKS), domain)
        .map_err(|error| anyhow::anyhow!("creating the seed image: {error}"))?;
    for (page_index, byte) in [(0, 1u8), (3, 2), (15, 3)] {
        image
            .stage_page(page_index, &[byte; PAGE_SIZE])
            .map_err(|error| anyhow::anyhow!("seed image: {error}"))?;
        image
            .commit()
            .map_err(|error| anyhow::anyhow!("seed image: {error}"))?;
    }
    std::fs::write(
        directory.join("seed-image"),
        image.into_device().into_bytes(),
    )?;
    Ok(directory)
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
    let corpus = seed_corpus()?;
    let status = Command::new("rustup")
        .args([
            "run",
            tools::KERNEL_TOOLCHAIN,
            "cargo",
            "fuzz",
            "run",
            "open",
        ])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // Seed images are SEED_BLOCKS blocks; mutations of them must fit.
        .arg(format!(
            "-max_len={}",
            SEED_BLOCKS * persist::BLOCK_SIZE as u64
        ))
        .current_dir(paths::workspace_root().join("persist"))
        .status()
        .context("running `cargo fuzz` through rustup (is rustup installed?)")?;
    if !status.success() {
        bail!("the persist fuzz target failed (crash inputs are in persist/fuzz/artifacts/open)");
    }
    Ok(())
}

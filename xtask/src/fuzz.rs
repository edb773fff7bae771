//! `cargo xtask fuzz`: cargo-fuzz targets, where cargo-fuzz is installed.
//!
//! The targets live in persist/fuzz and kernel/core/fuzz (workspaces of
//! their own: cargo-fuzz builds them with nightly and sanitizer flags).
//! Their bodies are plain functions in each fuzz/bodies directory, which
//! `cargo test -p persist` and `-p kernel-core` also run over random and
//! mutated inputs (tests/fuzz_bodies.rs in each), so CI exercises every
//! target without cargo-fuzz.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{paths, tools};

#[path = "../../persist/fuzz/bodies/mod.rs"]
#[allow(dead_code, reason = "xtask uses only the seeds, not the bodies")]
mod bodies;

/// Which fuzz target to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FuzzTarget {
    /// Image open and page reads on arbitrary bytes (persist/fuzz `open`).
    Persist,
    /// Structured image edits with every CRC signed again: shared nodes,
    /// fan-outs, entries past the memory, counters at their limits.
    Image,
    /// The metadata record decoder (`persist::migrate::decode_record`).
    Record,
    /// The apps archive, raw and with its CRCs signed again.
    Archive,
    /// The migration wire decoder and encode-decode round trips.
    Wire,
    /// Frames fed to a migration target over a memory spare disk.
    Target,
    /// Replies fed to a migration source of a small valid image.
    Source,
    /// Bytes from a peer to a machine's migration listener (kernel/core/fuzz).
    Incoming,
}

impl FuzzTarget {
    /// The cargo-fuzz target's name in persist/fuzz/Cargo.toml.
    fn binary(self) -> &'static str {
        match self {
            Self::Persist => "open",
            Self::Image => "image",
            Self::Record => "record",
            Self::Archive => "archive",
            Self::Wire => "wire",
            Self::Target => "target",
            Self::Source => "source",
            Self::Incoming => "incoming",
        }
    }

    /// The crate whose fuzz/ directory holds the target.
    fn crate_dir(self) -> &'static str {
        match self {
            Self::Incoming => "kernel/core",
            _ => "persist",
        }
    }

    /// The longest input worth trying: a mutation of a seed must fit.
    fn max_len_bytes(self) -> usize {
        match self {
            Self::Persist => SEED_BLOCKS as usize * persist::BLOCK_SIZE,
            // A shape and up to 64 edits of four bytes.
            Self::Image => 3 + 64 * 4,
            Self::Record | Self::Archive => 64 * 1024,
            Self::Wire => persist::migrate::wire::MAX_MESSAGE_LEN,
            // The seed migration and room to grow.
            Self::Target | Self::Source | Self::Incoming => 256 * 1024,
        }
    }
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
    if tools::find_program("cargo-fuzz").is_none() {
        bail!(
            "cargo-fuzz is not installed: run `cargo install cargo-fuzz` (it runs on the \
             kernel's pinned nightly, which xtask installs). Without it, the same target \
             bodies run over random and mutated inputs in `cargo test -p persist` and \
             `cargo test -p kernel-core` (tests/fuzz_bodies.rs in each)."
        );
    }
    tools::ensure_kernel_toolchain()?;
    let corpus = seed_corpus(args.target)?;
    let binary = args.target.binary();
    let status = Command::new("rustup")
        .args([
            "run",
            tools::KERNEL_TOOLCHAIN,
            "cargo",
            "fuzz",
            "run",
            binary,
        ])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-max_len={}", args.target.max_len_bytes()))
        // A target may hold a 64 MiB module and 16 MiB of metadata at
        // most; more than this is a bound that does not hold.
        .arg("-rss_limit_mb=1024")
        .current_dir(paths::workspace_root().join(args.target.crate_dir()))
        .status()
        .context("running `cargo fuzz` through rustup (is rustup installed?)")?;
    if !status.success() {
        bail!(
            "the {binary} fuzz target failed (crash inputs are in {}/fuzz/artifacts/{binary})",
            args.target.crate_dir()
        );
    }
    Ok(())
}

/// Blocks of the `open` target's seed image.
const SEED_BLOCKS: u64 = 24;

/// A corpus directory (under target/, so it is never committed) with seeds
/// for `target`: random bytes almost never pass a checksum, so the fuzzer
/// starts from real inputs and mutates them.
fn seed_corpus(target: FuzzTarget) -> Result<PathBuf> {
    let directory = paths::amber_dir().join("fuzz").join(format!(
        "{}-{}",
        target.crate_dir().replace('/', "-"),
        target.binary()
    ));
    std::fs::create_dir_all(&directory)?;
    let (to_target, to_source) = bodies::seeds::migration_inputs();
    match target {
        FuzzTarget::Persist => {
            std::fs::write(directory.join("seed-image"), seed_image()?)?;
        }
        FuzzTarget::Image => {
            for (index, seed) in bodies::seeds::structured_seeds().iter().enumerate() {
                std::fs::write(directory.join(format!("seed-edits-{index}")), seed)?;
            }
        }
        FuzzTarget::Record => {
            std::fs::write(directory.join("seed-record"), bodies::seeds::record_seed())?;
        }
        FuzzTarget::Archive => {
            std::fs::write(
                directory.join("seed-archive"),
                bodies::seeds::archive_seed(),
            )?;
        }
        FuzzTarget::Wire => {
            // Every frame of a real migration, both ways.
            let replies = bodies::frames::records(&to_source).map(|record| &record[1..]);
            for (index, record) in bodies::frames::records(&to_target)
                .chain(replies)
                .enumerate()
            {
                let frame = bodies::frames::repaired(record);
                std::fs::write(directory.join(format!("seed-frame-{index}")), frame)?;
            }
        }
        FuzzTarget::Target => std::fs::write(directory.join("seed-migration"), to_target)?,
        FuzzTarget::Source => std::fs::write(directory.join("seed-replies"), to_source)?,
        FuzzTarget::Incoming => std::fs::write(
            directory.join("seed-migration"),
            bodies::frames::prefixed(1, &to_target),
        )?,
    }
    Ok(directory)
}

/// A small valid image with a module, pages and two commits.
fn seed_image() -> Result<Vec<u8>> {
    use persist::{Image, MemoryDevice, NewDomain, PAGE_SIZE};
    let domain = NewDomain {
        id: persist::DomainId(0x0123_4567_89ab_cdef),
        name: "seed",
        module: b"\0asm\x01\0\0\0",
        memory_pages: 1,
        memory_max_pages: 2,
        args: vec!["seed".into()],
        env: vec!["KEY=value".into()],
        network: Default::default(),
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
    Ok(image.into_device().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_in_the_fuzz_crate() {
        for target in FuzzTarget::value_variants() {
            let manifest = std::fs::read_to_string(
                paths::workspace_root().join(format!("{}/fuzz/Cargo.toml", target.crate_dir())),
            )
            .unwrap();
            let line = format!("name = \"{}\"", target.binary());
            assert!(
                manifest.contains(&line),
                "no {line} in {}/fuzz",
                target.crate_dir()
            );
        }
    }
}

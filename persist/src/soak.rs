//! One seeded round of the power-cut model check, for long soak runs.
//!
//! `cargo test` runs the same check under proptest (`tests/power_cut.rs`);
//! `cargo xtask soak persist N` runs `N` rounds of this seeded version.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::faulty::SplitMix64;
use crate::{
    Error, FaultPlan, FaultyDevice, Image, MemoryDevice, NewDomain, PAGE_SIZE, reachable_blocks,
};

/// What a round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    /// Commits that returned `Ok` before the cut.
    pub commits_ok: u64,
    /// The commit the image reopened at (its commit counter).
    pub reopened_at_commit: u64,
    /// Whether a write failed with an injected error before the cut.
    pub had_failed_write: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    pages: BTreeMap<u64, u64>,
    clock_ns: u64,
    commits: u64,
}

fn page(seed: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    if seed != 0 {
        let mut random = SplitMix64(seed);
        for chunk in page.chunks_exact_mut(8) {
            chunk.copy_from_slice(&random.next().to_le_bytes());
        }
    }
    page
}

/// Runs a random workload of page writes, metadata changes and commits on a
/// faulty device, cuts the power at a random write (dropping, reordering and
/// tearing unflushed writes), reopens, and checks that the image holds
/// exactly the last commit that returned `Ok` (or a later one that failed
/// while writing its superblock), passes `verify`, and takes new commits.
pub fn power_cut_round(seed: u64) -> Result<RoundReport, String> {
    let mut random = SplitMix64(seed);
    let fail = |context: &str, error: Error| format!("seed {seed}: {context}: {error}");
    let domain = NewDomain {
        id: crate::DomainId(u128::from(seed)),
        name: "soak",
        module: b"\0asm\x01\0\0\0",
        memory_pages: 1,
        memory_max_pages: 4096,
        args: Vec::new(),
        env: Vec::new(),
        network: Default::default(),
    };
    let created =
        Image::create(MemoryDevice::new(256), domain).map_err(|error| fail("create", error))?;
    let cut_after_writes = random.below(160);
    let had_failed_write = random.below(3) == 0;
    let plan = FaultPlan {
        fail_write_number: had_failed_write.then(|| random.below(cut_after_writes + 1) + 1),
        power_off_after_writes: Some(cut_after_writes),
        fail_flush_number: None,
    };
    let mut image = Image::open(FaultyDevice::new(created.into_device(), plan))
        .map_err(|error| fail("open", error))?;
    let mut staged = State::default();
    let mut candidates = vec![State::default()];
    let mut commits_ok = 0;
    for _ in 0..random.below(80) + 1 {
        match random.below(10) {
            0..=5 => {
                let page_index = random.below(24) * 2731;
                let contents = random.below(8);
                if image.stage_page(page_index, &page(contents)).is_ok() {
                    if contents == 0 {
                        staged.pages.remove(&page_index);
                    } else {
                        staged.pages.insert(page_index, contents);
                    }
                }
            }
            6 => {
                staged.clock_ns += 1;
                image.metadata_mut().clock_ns = staged.clock_ns;
            }
            _ => {
                let mut attempt = staged.clone();
                attempt.commits += 1;
                match image.commit() {
                    Ok(_) => {
                        commits_ok += 1;
                        staged = attempt.clone();
                        candidates = vec![attempt];
                    }
                    Err(Error::NoSpace { .. }) => {}
                    Err(_) => candidates.push(attempt),
                }
            }
        }
    }
    let mut device = image
        .into_device()
        .power_cut(random.next())
        .map_err(|error| fail("power cut", error.into()))?;
    reachable_blocks(&mut device).map_err(|error| fail("walking both superblocks", error))?;
    let mut image = Image::open(device).map_err(|error| fail("reopen", error))?;
    let stored = image
        .stored_pages()
        .map_err(|error| fail("stored pages", error))?;
    let metadata = image.metadata().clone();
    let Some(state) = candidates.iter().find(|candidate| {
        candidate.clock_ns == metadata.clock_ns
            && candidate.commits == metadata.counters.commits
            && candidate.pages.keys().copied().collect::<Vec<_>>() == stored
    }) else {
        return Err(format!(
            "seed {seed}: reopened at commit {} (clock {}, pages {stored:?}), expected one of {candidates:?}",
            metadata.counters.commits, metadata.clock_ns
        ));
    };
    for (&page_index, &contents) in &state.pages {
        let mut buffer = [0u8; PAGE_SIZE];
        image
            .read_page(page_index, &mut buffer)
            .map_err(|error| fail("read", error))?;
        if buffer != page(contents) {
            return Err(format!("seed {seed}: page {page_index} reads back wrong"));
        }
    }
    image.verify().map_err(|error| fail("verify", error))?;
    image
        .stage_page(1, &page(99))
        .map_err(|error| fail("stage after reopen", error))?;
    image
        .commit()
        .map_err(|error| fail("commit after reopen", error))?;
    Ok(RoundReport {
        commits_ok,
        reopened_at_commit: state.commits,
        had_failed_write,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_seeded_rounds_pass() {
        for seed in 0..20 {
            power_cut_round(seed).unwrap();
        }
    }
}

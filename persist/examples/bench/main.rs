//! Commit cost and throughput figures for `cargo xtask bench --only persist`.
//!
//! Usage: `cargo run --release -p persist --example bench -- DIR [--quick]`.
//! Images are sparse files in DIR (on a real disk, so flushes cost what
//! they cost). Prints one JSON record per line (the format is in
//! xtask/src/bench/record.rs): raw samples of every repetition, each figure
//! against a baseline measured in the same run. `--quick` runs each
//! measurement once, on a smaller throughput workload.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod emit;

use persist::{BlockDevice, FileDevice, Image, NewDomain, PAGE_SIZE};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const FULL_REPETITIONS: usize = 7;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn page(seed: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in page.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    page
}

fn milliseconds(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}

/// A fresh image whose memory maximum is `memory_bytes`, sized for three
/// times that plus slack (the file is sparse): rewriting all of memory needs
/// the new copy, the last commit's and the one before it.
fn image(path: &Path, memory_bytes: u64) -> Result<Image<FileDevice>> {
    let memory_pages = memory_bytes / PAGE_SIZE as u64;
    let device = FileDevice::create(path, memory_pages * 3 + 1024)?;
    let domain = NewDomain {
        id: persist::DomainId(1),
        name: "bench",
        module: b"\0asm\x01\0\0\0",
        memory_pages: 1,
        memory_max_pages: memory_bytes / persist::WASM_PAGE_SIZE as u64,
        args: Vec::new(),
        env: Vec::new(),
        network: Default::default(),
    };
    Ok(Image::create(device, domain)?)
}

/// Samples of commits of `dirty` pages `stride` pages apart (stage +
/// commit): time in ms and blocks written.
#[derive(Default)]
struct CommitSamples {
    milliseconds: Vec<f64>,
    blocks: Vec<f64>,
}

/// The same commits on two fresh images, `small_bytes` and `big_bytes` of
/// maximum memory, alternating between them (after one warm-up commit
/// each) so that both see the same state of a shared, noisy machine.
fn commit_costs(
    directory: &Path,
    [small_bytes, big_bytes]: [u64; 2],
    dirty: u64,
    stride: u64,
    repetitions: usize,
) -> Result<[CommitSamples; 2]> {
    let paths = [directory.join("small.img"), directory.join("big.img")];
    let mut images = [image(&paths[0], small_bytes)?, image(&paths[1], big_bytes)?];
    let mut samples = [CommitSamples::default(), CommitSamples::default()];
    for repetition in 0..=repetitions as u64 {
        for (image, samples) in images.iter_mut().zip(&mut samples) {
            let started = Instant::now();
            for page_number in 0..dirty {
                image.stage_page(
                    page_number * stride,
                    &page(repetition * dirty + page_number),
                )?;
            }
            let stats = image.commit()?;
            if repetition > 0 {
                samples.milliseconds.push(milliseconds(started.elapsed()));
                samples.blocks.push(stats.blocks_written as f64);
            }
        }
    }
    drop(images);
    for path in paths {
        std::fs::remove_file(path)?;
    }
    Ok(samples)
}

/// Samples, in ms, of taking a snapshot and of rolling back to it.
#[derive(Default)]
struct SnapshotSamples {
    take: Vec<f64>,
    rollback: Vec<f64>,
}

/// Snapshots on two fresh images of `small_bytes` and `big_bytes` of
/// maximum memory holding the same `dirty` pages `stride` apart, in turns:
/// each round rewrites the pages, takes a snapshot (timed), rewrites them
/// again, rolls back to it (timed) and deletes it (untimed).
fn snapshot_costs(
    directory: &Path,
    [small_bytes, big_bytes]: [u64; 2],
    dirty: u64,
    stride: u64,
    repetitions: usize,
) -> Result<[SnapshotSamples; 2]> {
    let paths = [
        directory.join("snapshot-small.img"),
        directory.join("snapshot-big.img"),
    ];
    let mut images = [image(&paths[0], small_bytes)?, image(&paths[1], big_bytes)?];
    let mut samples = [SnapshotSamples::default(), SnapshotSamples::default()];
    for repetition in 0..=repetitions as u64 {
        for (image, samples) in images.iter_mut().zip(&mut samples) {
            let stage = |image: &mut Image<FileDevice>, round: u64| -> Result<()> {
                for page_number in 0..dirty {
                    image.stage_page(page_number * stride, &page(round * dirty + page_number))?;
                }
                image.commit()?;
                Ok(())
            };
            stage(image, repetition * 2)?;
            let started = Instant::now();
            image.snapshot_create("bench", repetition)?;
            let take = milliseconds(started.elapsed());
            stage(image, repetition * 2 + 1)?;
            let started = Instant::now();
            image.snapshot_apply("bench")?;
            let rollback = milliseconds(started.elapsed());
            image.snapshot_delete("bench")?;
            if repetition > 0 {
                samples.take.push(take);
                samples.rollback.push(rollback);
            }
        }
    }
    drop(images);
    for path in paths {
        std::fs::remove_file(path)?;
    }
    Ok(samples)
}

/// Samples, in ms, of forking a 1 GiB-max image holding `pages` stored
/// pages onto a fresh device, against copying the same number of blocks
/// raw (a read and a write each, through the same file devices) and one
/// flush: what a fork costs beyond moving its pages.
fn fork_costs(directory: &Path, pages: u64, repetitions: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let parent_path = directory.join("fork-parent.img");
    let mut parent = image(&parent_path, GIB)?;
    for page_index in 0..pages {
        parent.stage_page(page_index * 61, &page(page_index))?;
    }
    parent.commit()?;
    let blocks = parent.export_block_count(None)?;
    let mut forks = Vec::new();
    let mut copies = Vec::new();
    for repetition in 0..repetitions {
        let fork_path = directory.join("fork-child.img");
        let device = FileDevice::create(&fork_path, blocks)?;
        let started = Instant::now();
        let fork = parent.fork_to(
            None,
            device,
            persist::DomainId(2 + repetition as u128),
            "fork",
            None,
        )?;
        forks.push(milliseconds(started.elapsed()));
        drop(fork);
        std::fs::remove_file(&fork_path)?;

        let copy_path = directory.join("fork-copy.img");
        let mut copy = FileDevice::create(&copy_path, blocks)?;
        let locations = parent.page_locations()?;
        let started = Instant::now();
        let mut block = [0u8; PAGE_SIZE];
        for (index, (_, location)) in locations.iter().enumerate() {
            parent.device_mut().read_block(location.block, &mut block)?;
            copy.write_block(index as u64 + 2, &block)?;
        }
        copy.flush()?;
        copies.push(milliseconds(started.elapsed()));
        drop(copy);
        std::fs::remove_file(&copy_path)?;
    }
    drop(parent);
    std::fs::remove_file(parent_path)?;
    Ok((forks, copies))
}

/// `total_mib` of pages committed 4 MiB at a time, against raw writes of
/// the same blocks through the same file device with one flush per 4 MiB:
/// MiB/s samples of (persist, raw).
fn throughput(
    directory: &Path,
    total_mib: u64,
    repetitions: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let total_pages = total_mib * MIB / PAGE_SIZE as u64;
    let pages_per_commit = 4 * MIB / PAGE_SIZE as u64;
    let mib_per_second = |time: Duration| total_mib as f64 / time.as_secs_f64();
    let mut persist_rates = Vec::new();
    let mut raw_rates = Vec::new();
    for repetition in 0..repetitions as u64 {
        let raw_path = directory.join("raw.img");
        let mut raw = FileDevice::create(&raw_path, total_pages * 2 + 1024)?;
        let started = Instant::now();
        for page_index in 0..total_pages {
            raw.write_block(page_index + 2, &page(repetition + page_index))?;
            if (page_index + 1) % pages_per_commit == 0 {
                raw.flush()?;
            }
        }
        raw_rates.push(mib_per_second(started.elapsed()));
        drop(raw);
        std::fs::remove_file(&raw_path)?;

        let persist_path = directory.join("sequential.img");
        let mut image = image(&persist_path, total_mib * MIB)?;
        let started = Instant::now();
        for page_index in 0..total_pages {
            image.stage_page(page_index, &page(repetition + page_index))?;
            if (page_index + 1) % pages_per_commit == 0 {
                image.commit()?;
            }
        }
        persist_rates.push(mib_per_second(started.elapsed()));
        drop(image);
        std::fs::remove_file(&persist_path)?;
    }
    Ok((persist_rates, raw_rates))
}

fn main() -> Result<()> {
    let mut directory = PathBuf::from("target/amber/bench/persist");
    let mut is_quick = false;
    for argument in std::env::args().skip(1) {
        match argument.as_str() {
            "--quick" => is_quick = true,
            _ => directory = PathBuf::from(argument),
        }
    }
    let repetitions = if is_quick { 1 } else { FULL_REPETITIONS };
    std::fs::create_dir_all(&directory)?;

    // The same pages in both images, spread over the small memory: 1 MiB
    // holds 256 pages, so 1,024 and 4,096 dirty pages need a 16 MiB one.
    for dirty in [1u64, 4, 16, 64, 256, 1024, 4096] {
        let small_bytes = if dirty <= 256 { MIB } else { 16 * MIB };
        let small_label = format!("{} MiB maximum", small_bytes / MIB);
        let stride = small_bytes / PAGE_SIZE as u64 / dirty;
        let pages = if dirty == 1 { "page" } else { "pages" };
        emit::step(&format!(
            "commit of {dirty} dirty {pages}, {small_label} and 1 GiB maximum"
        ));
        // A small commit is two flushes and little else: its samples are
        // noisy, and cheap, so it takes three times as many.
        let samples = if dirty <= 256 {
            repetitions * 3
        } else {
            repetitions
        };
        let [small, big] = commit_costs(&directory, [small_bytes, GIB], dirty, stride, samples)?;
        emit::point(
            "commit-vs-dirty",
            &small_label,
            dirty as f64,
            &small.milliseconds,
        );
        emit::point(
            "commit-vs-dirty",
            "1 GiB maximum",
            dirty as f64,
            &big.milliseconds,
        );
        if [1, 64, 256, 4096].contains(&dirty) {
            let baseline_label = format!("{} MiB-max image, same pages", small_bytes / MIB);
            emit::figure(&emit::Figure {
                name: &format!("persist.commit_{dirty}_pages"),
                title: &format!("commit of {dirty} dirty {pages}, 1 GiB-max image"),
                unit: "ms",
                amber: &big.milliseconds,
                baseline: Some((&baseline_label, &small.milliseconds)),
                goal: Some(emit::Goal::RatioAtMost(1.1)),
            });
        }
        if dirty == 4096 {
            emit::figure(&emit::Figure {
                name: "persist.blocks_4096_pages",
                title: "blocks written by a commit of 4096 dirty pages, 1 GiB-max image",
                unit: "blocks",
                amber: &big.blocks,
                baseline: Some(("16 MiB-max image, same pages", &small.blocks)),
                goal: Some(emit::Goal::RatioAtMost(1.1)),
            });
        }
    }

    // The same commits against the memory maximum, 1 MiB to 4 GiB: a
    // commit costs what was dirtied, so each line stays flat.
    for dirty in [1u64, 64] {
        let pages = if dirty == 1 { "page" } else { "pages" };
        emit::step(&format!(
            "commit of {dirty} dirty {pages}, 1 MiB to 4 GiB maximum"
        ));
        let stride = MIB / PAGE_SIZE as u64 / dirty;
        for maximum in [MIB, 16 * MIB, 256 * MIB, GIB, 4 * GIB] {
            let [_, samples] =
                commit_costs(&directory, [MIB, maximum], dirty, stride, repetitions)?;
            emit::point(
                "commit-vs-image-size",
                &format!("{dirty} dirty {pages}"),
                (maximum / MIB) as f64,
                &samples.milliseconds,
            );
        }
    }

    // Snapshots cost what the pages touched cost, not the memory maximum.
    let dirty = 64;
    emit::step(&format!(
        "snapshot take and rollback, {dirty} pages, 1 MiB and 1 GiB maximum"
    ));
    let stride = MIB / PAGE_SIZE as u64 / dirty;
    let [small, big] = snapshot_costs(&directory, [MIB, GIB], dirty, stride, repetitions)?;
    for (name, title, big_samples, small_samples) in [
        ("take", "taking a snapshot", &big.take, &small.take),
        (
            "rollback",
            "rolling back to a snapshot",
            &big.rollback,
            &small.rollback,
        ),
    ] {
        emit::figure(&emit::Figure {
            name: &format!("persist.snapshot_{name}_{dirty}_pages"),
            title: &format!("{title} of {dirty} stored pages, 1 GiB-max image"),
            unit: "ms",
            amber: big_samples,
            baseline: Some(("1 MiB-max image, same pages", small_samples)),
            goal: Some(emit::Goal::RatioAtMost(1.2)),
        });
    }

    let fork_pages = 1024;
    emit::step(&format!(
        "fork of {fork_pages} stored pages against copying them"
    ));
    let (forks, copies) = fork_costs(&directory, fork_pages, repetitions.min(5))?;
    emit::figure(&emit::Figure {
        name: "persist.fork_1024_pages",
        title: &format!("fork of a 1 GiB-max domain with {fork_pages} stored pages"),
        unit: "ms",
        amber: &forks,
        baseline: Some(("reading and writing its pages raw", &copies)),
        goal: None,
    });

    let total_mib = if is_quick { 16 } else { 64 };
    emit::step(&format!(
        "{total_mib} MiB of sequential commits against raw writes"
    ));
    let (persist_rates, raw_rates) = throughput(&directory, total_mib, repetitions.min(5))?;
    emit::figure(&emit::Figure {
        name: "persist.sequential_commit_throughput",
        title: &format!("{total_mib} MiB committed 4 MiB at a time (throughput)"),
        unit: "MiB/s",
        amber: &persist_rates,
        baseline: Some((
            "raw writes of the same blocks, a flush per 4 MiB",
            &raw_rates,
        )),
        goal: Some(emit::Goal::RatioAtLeast(0.8)),
    });
    Ok(())
}

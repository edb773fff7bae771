//! Commit cost and throughput figures for `cargo xtask bench persist`.
//!
//! Usage: `cargo run --release -p persist --example bench -- DIR [REPS]`.
//! Images are sparse files in DIR (on a real disk, so flushes cost what
//! they cost). Each figure is the median of REPS repetitions (default 7);
//! ratios compare against a baseline measured in the same run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use persist::{BlockDevice, FileDevice, Image, NewDomain, PAGE_SIZE};

const MIB: u64 = 1024 * 1024;

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

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// A fresh image whose memory maximum is `memory_bytes`, sized for three
/// times that plus slack (the file is sparse): rewriting all of memory needs
/// the new copy, the last commit's and the one before it.
fn image(path: &Path, memory_bytes: u64) -> Result<Image<FileDevice>, Box<dyn std::error::Error>> {
    let memory_pages = memory_bytes / PAGE_SIZE as u64;
    let device = FileDevice::create(path, memory_pages * 3 + 1024)?;
    let domain = NewDomain {
        id: 1,
        name: "bench",
        module: b"\0asm\x01\0\0\0",
        memory_pages: 1,
        memory_max_pages: memory_bytes / persist::WASM_PAGE_SIZE as u64,
        args: Vec::new(),
        env: Vec::new(),
    };
    Ok(Image::create(device, domain)?)
}

/// Median time and blocks written of a commit of `dirty` pages `stride`
/// pages apart (stage + commit), after one warm-up commit.
fn commit_cost(
    path: &Path,
    memory_bytes: u64,
    dirty: u64,
    stride: u64,
    repetitions: usize,
) -> Result<(Duration, u64), Box<dyn std::error::Error>> {
    let mut image = image(path, memory_bytes)?;
    let mut times = Vec::new();
    let mut blocks = Vec::new();
    for repetition in 0..=repetitions as u64 {
        let started = Instant::now();
        for page_number in 0..dirty {
            image.stage_page(
                page_number * stride,
                &page(repetition * dirty + page_number),
            )?;
        }
        let stats = image.commit()?;
        if repetition > 0 {
            times.push(started.elapsed());
            blocks.push(stats.blocks_written);
        }
    }
    blocks.sort_unstable();
    Ok((median(times), blocks[blocks.len() / 2]))
}

/// 64 MiB of pages committed 4 MiB at a time, against raw writes of the
/// same blocks through the same file device with one flush per 4 MiB.
fn throughput(
    directory: &Path,
    repetitions: usize,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let total_pages = 64 * MIB / PAGE_SIZE as u64;
    let pages_per_commit = 4 * MIB / PAGE_SIZE as u64;
    let mut persist_times = Vec::new();
    let mut raw_times = Vec::new();
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
        raw_times.push(started.elapsed());
        drop(raw);
        std::fs::remove_file(&raw_path)?;

        let persist_path = directory.join("sequential.img");
        let mut image = image(&persist_path, 64 * MIB)?;
        let started = Instant::now();
        for page_index in 0..total_pages {
            image.stage_page(page_index, &page(repetition + page_index))?;
            if (page_index + 1) % pages_per_commit == 0 {
                image.commit()?;
            }
        }
        persist_times.push(started.elapsed());
        drop(image);
        std::fs::remove_file(&persist_path)?;
    }
    Ok((median(persist_times), median(raw_times)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut arguments = std::env::args().skip(1);
    let directory = PathBuf::from(
        arguments
            .next()
            .unwrap_or_else(|| "target/amber/bench".into()),
    );
    let repetitions: usize = match arguments.next() {
        Some(text) => text.parse()?,
        None => 7,
    };
    std::fs::create_dir_all(&directory)?;
    println!(
        "persist benchmark: median of {repetitions} repetitions, images in {}",
        directory.display()
    );
    println!();
    println!("commit of k dirty pages (the same pages): 1 GiB-max image against a small one");
    println!("(1 MiB max, or 16 MiB for 4,096 pages, which a 1 MiB memory cannot hold)");
    println!("goal: ratio <= 1.2, i.e. cost O(dirty) whatever the memory size");
    println!(
        "{:>6} | {:>13} {:>10} | {:>13} {:>10} | {:>12} {:>12}",
        "pages", "small max", "time", "1 GiB max", "time", "blocks ratio", "time ratio"
    );
    let big_path = directory.join("big.img");
    let small_path = directory.join("small.img");
    for dirty in [1u64, 64, 4096] {
        // 1 MiB holds 256 pages; 4,096 dirty pages need a 16 MiB memory.
        let small_bytes = (dirty * PAGE_SIZE as u64).max(MIB);
        // The same pages in both images, spread over the small memory.
        let stride = small_bytes / PAGE_SIZE as u64 / dirty;
        let (small_time, small_blocks) =
            commit_cost(&small_path, small_bytes, dirty, stride, repetitions)?;
        let (big_time, big_blocks) =
            commit_cost(&big_path, 1024 * MIB, dirty, stride, repetitions)?;
        println!(
            "{dirty:>6} | {:>6} MiB {small_blocks:>4}b {:>9.2}ms | {:>6} MiB {big_blocks:>4}b {:>9.2}ms | {:>12.2} {:>12.2}",
            small_bytes / MIB,
            small_time.as_secs_f64() * 1e3,
            1024,
            big_time.as_secs_f64() * 1e3,
            big_blocks as f64 / small_blocks as f64,
            big_time.as_secs_f64() / small_time.as_secs_f64(),
        );
    }
    std::fs::remove_file(&big_path)?;
    std::fs::remove_file(&small_path)?;

    println!();
    println!("64 MiB of sequential commits (4 MiB each) against raw device writes (goal: >= 0.8x)");
    let (persist_time, raw_time) = throughput(&directory, repetitions.min(5))?;
    let mib_per_second = |time: Duration| 64.0 / time.as_secs_f64();
    println!("{:>10} | {:>10} | {:>10}", "", "time", "MiB/s");
    println!(
        "{:>10} | {:>8.0}ms | {:>10.0}",
        "raw",
        raw_time.as_secs_f64() * 1e3,
        mib_per_second(raw_time)
    );
    println!(
        "{:>10} | {:>8.0}ms | {:>10.0}",
        "persist",
        persist_time.as_secs_f64() * 1e3,
        mib_per_second(persist_time)
    );
    println!(
        "throughput ratio persist / raw: {:.2}x",
        raw_time.as_secs_f64() / persist_time.as_secs_f64()
    );
    Ok(())
}

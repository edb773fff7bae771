//! `diskbench`: raw virtio-blk figures, the baselines of the kernel benchmarks.
//!
//! Two measurements on a spare (blank) disk, through the same driver calls
//! the pager and the image use:
//!
//! - sequential reads in 4 KiB requests, one at a time, without the driver's
//!   read-ahead (the page-fault path reads one block per fault, so this is
//!   the ceiling of page-in when faults come in no particular order);
//! - the least an atomic commit must do: write a block, flush, write a second
//!   block, flush (data then superblock), repeated and timed one by one.
//!
//! Only zero blocks are written, so a blank disk stays blank.

use alloc::vec::Vec;

use persist::{BLOCK_SIZE, BlockDevice};

use crate::arch::timer;
use crate::drivers::virtio_blk::VirtioDisk;

/// Timed write-flush-write-flush rounds; the median is reported.
const COMMIT_FLOOR_ROUNDS: usize = 64;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct DiskBench {
    pub read_bytes: u64,
    pub read_ns: u64,
    /// Median of the rounds of two writes with a flush after each.
    pub commit_floor_ns: u64,
}

impl DiskBench {
    /// Read throughput in MiB/s (0 when nothing was timed).
    pub fn read_mib_per_s(&self) -> u64 {
        if self.read_ns == 0 {
            return 0;
        }
        (u128::from(self.read_bytes) * 1_000_000_000 / u128::from(self.read_ns) / (1 << 20)) as u64
    }
}

/// Runs both measurements on `disk`, reading at most `read_mib` MiB.
pub fn run(disk: &mut VirtioDisk, read_mib: u64) -> Result<DiskBench, persist::DeviceError> {
    let blocks = (read_mib * (1 << 20) / BLOCK_SIZE as u64).min(disk.block_count());
    let pager_disk = disk.pager_disk();
    let mut buffer = [0u8; BLOCK_SIZE];
    let started = timer::uptime_ns();
    for index in 0..blocks {
        pager_disk
            .read_uncached(index, &mut buffer)
            .map_err(|error| persist::DeviceError::Io {
                operation: "read",
                message: alloc::format!("block {index}: {error}"),
            })?;
    }
    let read_ns = timer::uptime_ns() - started;

    let zero = [0u8; BLOCK_SIZE];
    // Blocks 2 and 3: away from the superblocks, and zero like the rest of
    // a blank disk.
    let mut rounds = Vec::with_capacity(COMMIT_FLOOR_ROUNDS);
    for _ in 0..COMMIT_FLOOR_ROUNDS {
        let started = timer::uptime_ns();
        disk.write_block(2, &zero)?;
        disk.flush()?;
        disk.write_block(3, &zero)?;
        disk.flush()?;
        rounds.push(timer::uptime_ns() - started);
    }
    rounds.sort_unstable();
    Ok(DiskBench {
        read_bytes: blocks * BLOCK_SIZE as u64,
        read_ns,
        commit_floor_ns: rounds[rounds.len() / 2],
    })
}

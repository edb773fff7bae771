//! A fault-injecting device: lost unflushed writes, torn blocks, failed writes.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::DeviceError;

/// What a [`FaultyDevice`] does wrong, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Fail this write (1-based count of writes) with
    /// [`DeviceError::InjectedFault`], without applying it; later writes work.
    pub fail_write_number: Option<u64>,
    /// Lose power after this many writes: the next write and every operation
    /// after it fail with [`DeviceError::PoweredOff`]. Resolve the cut with
    /// [`FaultyDevice::power_cut`].
    pub power_off_after_writes: Option<u64>,
    /// Fail this flush (1-based count of flushes) with
    /// [`DeviceError::InjectedFlushFault`], losing every write not yet
    /// flushed, as Linux does when writeback fails: the error is reported
    /// once, and a later flush succeeds over the lost writes (fsyncgate).
    pub fail_flush_number: Option<u64>,
}

/// Wraps a device and simulates a disk with a volatile write cache.
///
/// Writes go to a cache until [`BlockDevice::flush`]; the wrapped device holds
/// only what is durable. [`FaultyDevice::power_cut`] then decides the fate of
/// every unflushed write: any subset survives, applied in any order, and one
/// of them may be torn (only a prefix of the new bytes lands).
#[derive(Debug)]
pub struct FaultyDevice<D> {
    inner: D,
    /// Unflushed writes in the order they were made.
    pending: Vec<(u64, Box<[u8; BLOCK_SIZE]>)>,
    /// The newest unflushed contents of each block, for reads.
    newest: BTreeMap<u64, usize>,
    writes: u64,
    flushes: u64,
    plan: FaultPlan,
    is_powered_off: bool,
}

/// SplitMix64: a tiny deterministic generator, so a seed replays a cut.
#[derive(Debug)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }
}

impl<D: BlockDevice> FaultyDevice<D> {
    /// Wraps `inner`, whose contents are taken as durable.
    pub fn new(inner: D, plan: FaultPlan) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            newest: BTreeMap::new(),
            writes: 0,
            flushes: 0,
            plan,
            is_powered_off: false,
        }
    }

    /// How many writes were attempted so far (failed ones included).
    pub fn write_count(&self) -> u64 {
        self.writes
    }

    /// How many flushes were attempted so far (failed ones included).
    pub fn flush_count(&self) -> u64 {
        self.flushes
    }

    /// How many writes are waiting for a flush.
    pub fn unflushed_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether the planned power loss has happened.
    pub fn is_powered_off(&self) -> bool {
        self.is_powered_off
    }

    /// Changes the plan from now on (write numbers keep counting).
    pub fn set_plan(&mut self, plan: FaultPlan) {
        self.plan = plan;
    }

    /// A clean shutdown: every unflushed write lands, in order.
    pub fn into_inner(mut self) -> Result<D, DeviceError> {
        for (index, block) in core::mem::take(&mut self.pending) {
            self.inner.write_block(index, &block)?;
        }
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// A power cut: a random subset of the unflushed writes (chosen by
    /// `seed`) lands in a random order, one of them possibly torn; the rest
    /// are lost. Returns the device as it is after the reboot.
    pub fn power_cut(mut self, seed: u64) -> Result<D, DeviceError> {
        let mut random = SplitMix64(seed);
        let mut pending = core::mem::take(&mut self.pending);
        // Fisher-Yates shuffle: the disk may reorder its cache freely.
        for last in (1..pending.len()).rev() {
            let other = random.below(last as u64 + 1) as usize;
            pending.swap(last, other);
        }
        let torn = if random.below(4) == 0 && !pending.is_empty() {
            Some(random.below(pending.len() as u64) as usize)
        } else {
            None
        };
        for (position, (index, block)) in pending.iter().enumerate() {
            if torn == Some(position) {
                let mut mixed = [0u8; BLOCK_SIZE];
                self.inner.read_block(*index, &mut mixed)?;
                let prefix_len = random.below(BLOCK_SIZE as u64) as usize;
                mixed[..prefix_len].copy_from_slice(&block[..prefix_len]);
                self.inner.write_block(*index, &mixed)?;
            } else if random.below(2) == 0 {
                self.inner.write_block(*index, block)?;
            }
        }
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<D: BlockDevice> BlockDevice for FaultyDevice<D> {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if self.is_powered_off {
            return Err(DeviceError::PoweredOff);
        }
        match self
            .newest
            .get(&index)
            .and_then(|&position| self.pending.get(position))
        {
            Some((_, block)) => {
                buffer.copy_from_slice(&block[..]);
                Ok(())
            }
            None => self.inner.read_block(index, buffer),
        }
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        if self.is_powered_off {
            return Err(DeviceError::PoweredOff);
        }
        if self.plan.power_off_after_writes == Some(self.writes) {
            self.is_powered_off = true;
            return Err(DeviceError::PoweredOff);
        }
        self.writes += 1;
        if self.plan.fail_write_number == Some(self.writes) {
            return Err(DeviceError::InjectedFault {
                write_number: self.writes,
            });
        }
        if index >= self.inner.block_count() {
            return Err(DeviceError::OutOfRange {
                index,
                block_count: self.inner.block_count(),
            });
        }
        self.newest.insert(index, self.pending.len());
        self.pending.push((index, Box::new(*buffer)));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        if self.is_powered_off {
            return Err(DeviceError::PoweredOff);
        }
        self.flushes += 1;
        if self.plan.fail_flush_number == Some(self.flushes) {
            self.pending.clear();
            self.newest.clear();
            return Err(DeviceError::InjectedFlushFault {
                flush_number: self.flushes,
            });
        }
        for (index, block) in core::mem::take(&mut self.pending) {
            self.inner.write_block(index, &block)?;
        }
        self.newest.clear();
        self.inner.flush()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    fn block(value: u8) -> [u8; BLOCK_SIZE] {
        [value; BLOCK_SIZE]
    }

    #[test]
    fn unflushed_writes_are_readable_and_flushed_ones_survive_a_cut() {
        let mut device = FaultyDevice::new(MemoryDevice::new(4), FaultPlan::default());
        device.write_block(1, &block(1)).unwrap();
        device.flush().unwrap();
        device.write_block(2, &block(2)).unwrap();
        let mut read = [0u8; BLOCK_SIZE];
        device.read_block(2, &mut read).unwrap();
        assert_eq!(read, block(2));
        let mut after = device.power_cut(7).unwrap();
        after.read_block(1, &mut read).unwrap();
        assert_eq!(read, block(1));
    }

    #[test]
    fn power_cut_keeps_some_and_drops_some_unflushed_writes() {
        let mut kept = [false; 2];
        for seed in 0..64 {
            let mut device = FaultyDevice::new(MemoryDevice::new(2), FaultPlan::default());
            device.write_block(1, &block(9)).unwrap();
            let mut after = device.power_cut(seed).unwrap();
            let mut read = [0u8; BLOCK_SIZE];
            after.read_block(1, &mut read).unwrap();
            kept[usize::from(read == block(9))] = true;
        }
        assert_eq!(kept, [true, true]);
    }

    #[test]
    fn the_planned_write_fails_and_power_off_stops_everything() {
        let plan = FaultPlan {
            fail_write_number: Some(2),
            power_off_after_writes: Some(3),
            fail_flush_number: None,
        };
        let mut device = FaultyDevice::new(MemoryDevice::new(4), plan);
        assert!(device.write_block(0, &block(1)).is_ok());
        assert_eq!(
            device.write_block(1, &block(1)),
            Err(DeviceError::InjectedFault { write_number: 2 })
        );
        assert!(device.write_block(1, &block(1)).is_ok());
        assert_eq!(
            device.write_block(2, &block(1)),
            Err(DeviceError::PoweredOff)
        );
        assert_eq!(device.flush(), Err(DeviceError::PoweredOff));
        assert!(device.is_powered_off());
    }

    #[test]
    fn a_failed_flush_loses_the_unflushed_writes_and_the_next_one_succeeds() {
        let plan = FaultPlan {
            fail_flush_number: Some(2),
            ..FaultPlan::default()
        };
        let mut device = FaultyDevice::new(MemoryDevice::new(4), plan);
        device.write_block(1, &block(1)).unwrap();
        device.flush().unwrap();
        device.write_block(1, &block(2)).unwrap();
        assert_eq!(
            device.flush(),
            Err(DeviceError::InjectedFlushFault { flush_number: 2 })
        );
        assert_eq!(device.flush(), Ok(()));
        let mut read = [0u8; BLOCK_SIZE];
        device.read_block(1, &mut read).unwrap();
        assert_eq!(read, block(1), "the write before the failed flush is lost");
    }
}

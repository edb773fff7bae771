//! The block device trait and the in-memory device.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::DeviceError;

/// Size of one device block in bytes.
pub const BLOCK_SIZE: usize = 4096;

/// A disk of fixed-size blocks: all persist ever asks of the hardware.
///
/// A write is durable only after a later [`BlockDevice::flush`] returns `Ok`;
/// until then a power cut may drop it, keep it, or tear it. Implemented by
/// [`MemoryDevice`], [`crate::FileDevice`] (with `std`), [`crate::FaultyDevice`],
/// [`crate::gather::Gathering`], and in the kernel by virtio-blk (a
/// gathering layer over the device).
pub trait BlockDevice {
    /// Reads block `index` into `buffer`.
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError>;
    /// Writes `buffer` to block `index` (durable after the next flush).
    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError>;
    /// Makes every earlier write durable.
    fn flush(&mut self) -> Result<(), DeviceError>;
    /// How many blocks the device holds.
    fn block_count(&self) -> u64;
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        (**self).read_block(index, buffer)
    }
    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        (**self).write_block(index, buffer)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        (**self).flush()
    }
    fn block_count(&self) -> u64 {
        (**self).block_count()
    }
}

/// A device held in RAM: tests, benchmarks, and images built in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct MemoryDevice {
    bytes: Vec<u8>,
}

impl core::fmt::Debug for MemoryDevice {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("MemoryDevice")
            .field("block_count", &self.block_count())
            .finish()
    }
}

impl MemoryDevice {
    /// A zero-filled device of `block_count` blocks.
    pub fn new(block_count: u64) -> Self {
        let len_bytes = usize::try_from(block_count)
            .unwrap_or(usize::MAX)
            .saturating_mul(BLOCK_SIZE);
        Self {
            bytes: vec![0; len_bytes],
        }
    }

    /// A device over existing bytes; a trailing partial block is ignored.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        let whole_blocks_len = bytes.len() - bytes.len() % BLOCK_SIZE;
        bytes.truncate(whole_blocks_len);
        Self { bytes }
    }

    /// The device's bytes (block 0 first).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The device's bytes, for tests that corrupt them on purpose.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// The device's bytes, consuming it.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn range(&self, index: u64) -> Result<core::ops::Range<usize>, DeviceError> {
        let out_of_range = DeviceError::OutOfRange {
            index,
            block_count: self.block_count(),
        };
        if index >= self.block_count() {
            return Err(out_of_range);
        }
        let start = usize::try_from(index)
            .map_err(|_| out_of_range)?
            .saturating_mul(BLOCK_SIZE);
        Ok(start..start + BLOCK_SIZE)
    }
}

impl BlockDevice for MemoryDevice {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let range = self.range(index)?;
        buffer.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let range = self.range(index)?;
        self.bytes[range].copy_from_slice(buffer);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }

    fn block_count(&self) -> u64 {
        (self.bytes.len() / BLOCK_SIZE) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_device_round_trips_and_rejects_out_of_range() {
        let mut device = MemoryDevice::new(4);
        let block = [7u8; BLOCK_SIZE];
        device.write_block(3, &block).unwrap();
        let mut read = [0u8; BLOCK_SIZE];
        device.read_block(3, &mut read).unwrap();
        assert_eq!(read, block);
        assert_eq!(
            device.read_block(4, &mut read),
            Err(DeviceError::OutOfRange {
                index: 4,
                block_count: 4
            })
        );
    }

    #[test]
    fn from_bytes_drops_a_partial_block() {
        let device = MemoryDevice::from_bytes(vec![0; BLOCK_SIZE * 2 + 100]);
        assert_eq!(device.block_count(), 2);
    }
}

//! A block device over a host file (with the `std` feature).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::string::ToString;

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::DeviceError;

/// A block device stored in a file; flush is `fdatasync`.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    block_count: u64,
}

fn io_error(operation: &'static str, error: &std::io::Error) -> DeviceError {
    DeviceError::Io {
        operation,
        message: error.to_string(),
    }
}

impl FileDevice {
    /// Creates (or truncates) `path` as a zero-filled device of `block_count`
    /// blocks. The file is sparse: unwritten blocks take no disk space.
    pub fn create(path: &Path, block_count: u64) -> Result<Self, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|error| io_error("create", &error))?;
        file.set_len(block_count.saturating_mul(BLOCK_SIZE as u64))
            .map_err(|error| io_error("set length", &error))?;
        Ok(Self { file, block_count })
    }

    /// Opens an existing file for reading and writing; a trailing partial
    /// block is ignored (the image's own checks report the truncation).
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| io_error("open", &error))?;
        let len_bytes = file
            .metadata()
            .map_err(|error| io_error("stat", &error))?
            .len();
        Ok(Self {
            file,
            block_count: len_bytes / BLOCK_SIZE as u64,
        })
    }

    fn offset(&self, index: u64) -> Result<u64, DeviceError> {
        if index >= self.block_count {
            return Err(DeviceError::OutOfRange {
                index,
                block_count: self.block_count,
            });
        }
        Ok(index * BLOCK_SIZE as u64)
    }
}

impl BlockDevice for FileDevice {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let offset = self.offset(index)?;
        self.file
            .read_exact_at(buffer, offset)
            .map_err(|error| io_error("read", &error))
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let offset = self.offset(index)?;
        self.file
            .write_all_at(buffer, offset)
            .map_err(|error| io_error("write", &error))
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.file
            .sync_data()
            .map_err(|error| io_error("flush", &error))
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }
}

//! A block device over a host file (with the `std` feature).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::string::ToString;
use std::vec::Vec;

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::DeviceError;

/// The most bytes of consecutive blocks a [`FileDevice`] gathers before
/// handing them to the file.
const MAX_RUN_BYTES: usize = 1024 * 1024;

/// A block device stored in a file; flush is `fdatasync`.
///
/// Writes to consecutive blocks are gathered into one run and handed to
/// the file in one `pwrite` (a commit writes its blocks mostly in order:
/// thirteen system calls become one or two). A run goes to the file at the
/// next flush, at a write that does not continue it, or when it reaches
/// [`MAX_RUN_BYTES`]; reads of its blocks come from it. So a write's error
/// may surface at a later call, but always at or before the next flush,
/// which is what a commit waits for.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    block_count: u64,
    /// Where the gathered run starts.
    run_start: u64,
    /// The gathered blocks, whole.
    run: Vec<u8>,
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
        Ok(Self::over(file, block_count))
    }

    fn over(file: File, block_count: u64) -> Self {
        Self {
            file,
            block_count,
            run_start: 0,
            run: Vec::new(),
        }
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
        Ok(Self::over(file, len_bytes / BLOCK_SIZE as u64))
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

    fn run_blocks(&self) -> u64 {
        (self.run.len() / BLOCK_SIZE) as u64
    }

    /// Hands the gathered run to the file. The run is dropped either way:
    /// on an error its blocks are lost, and the caller hears so.
    fn write_run(&mut self) -> Result<(), DeviceError> {
        if self.run.is_empty() {
            return Ok(());
        }
        let offset = self.run_start * BLOCK_SIZE as u64;
        let written = self.file.write_all_at(&self.run, offset);
        self.run.clear();
        written.map_err(|error| io_error("write", &error))
    }
}

impl Drop for FileDevice {
    /// What was written reaches the file (not the disk: that is flush's
    /// work), as each write did before runs were gathered.
    fn drop(&mut self) {
        let _ = self.write_run();
    }
}

impl BlockDevice for FileDevice {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let offset = self.offset(index)?;
        if let Some(position) = index.checked_sub(self.run_start)
            && position < self.run_blocks()
        {
            let start = position as usize * BLOCK_SIZE;
            buffer.copy_from_slice(&self.run[start..start + BLOCK_SIZE]);
            return Ok(());
        }
        self.file
            .read_exact_at(buffer, offset)
            .map_err(|error| io_error("read", &error))
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.offset(index)?;
        if let Some(position) = index.checked_sub(self.run_start)
            && position < self.run_blocks()
        {
            // A block of the run written again.
            let start = position as usize * BLOCK_SIZE;
            self.run[start..start + BLOCK_SIZE].copy_from_slice(buffer);
            return Ok(());
        }
        let continues = !self.run.is_empty()
            && index == self.run_start + self.run_blocks()
            && self.run.len() < MAX_RUN_BYTES;
        if !continues {
            self.write_run()?;
            self.run_start = index;
        }
        self.run.extend_from_slice(buffer);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.write_run()?;
        self.file
            .sync_data()
            .map_err(|error| io_error("flush", &error))
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }
}

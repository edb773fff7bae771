//! A disk held sparsely in memory, and a crash state's view of it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use persist::{BLOCK_SIZE, BlockDevice, DeviceError};

/// The unit a drive writes atomically (and the guest's sector size).
pub const SECTOR_SIZE: usize = 512;

/// Sectors in one of persist's blocks.
pub const SECTORS_PER_BLOCK: usize = BLOCK_SIZE / SECTOR_SIZE;

/// One 4 KiB block.
pub type Block = [u8; BLOCK_SIZE];

/// A zero block, for blocks never written.
const ZERO_BLOCK: Block = [0; BLOCK_SIZE];

/// A disk's bytes, block by block: a 640 MiB image whose domain touched
/// 40 MiB costs 40 MiB. Blocks never written read as zeros.
#[derive(Debug, Clone, Default)]
pub struct SparseDisk {
    blocks: HashMap<u64, Box<Block>>,
    len_bytes: u64,
}

impl SparseDisk {
    /// A zero disk of `len_bytes` bytes.
    pub fn new(len_bytes: u64) -> SparseDisk {
        SparseDisk {
            blocks: HashMap::new(),
            len_bytes,
        }
    }

    /// The contents of the raw image file at `path`; its size must be a
    /// whole number of blocks.
    pub fn from_file(path: &Path) -> Result<SparseDisk> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len_bytes = file.metadata()?.len();
        if len_bytes % BLOCK_SIZE as u64 != 0 {
            bail!("{} is not a whole number of 4 KiB blocks", path.display());
        }
        let mut disk = SparseDisk::new(len_bytes);
        let mut block = [0u8; BLOCK_SIZE];
        for index in 0..len_bytes / BLOCK_SIZE as u64 {
            file.read_exact(&mut block)
                .with_context(|| format!("reading {}", path.display()))?;
            if block != ZERO_BLOCK {
                disk.set_block(index, &block);
            }
        }
        Ok(disk)
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    pub fn block_count(&self) -> u64 {
        self.len_bytes / BLOCK_SIZE as u64
    }

    /// Block `index` (zeros when never written).
    pub fn block(&self, index: u64) -> &Block {
        self.blocks.get(&index).map_or(&ZERO_BLOCK, |block| block)
    }

    pub fn set_block(&mut self, index: u64, data: &Block) {
        match self.blocks.get_mut(&index) {
            Some(block) => block.copy_from_slice(data),
            None => {
                self.blocks.insert(index, Box::new(*data));
            }
        }
    }

    /// The blocks ever written, in no particular order.
    pub fn written_blocks(&self) -> impl Iterator<Item = (u64, &Block)> {
        self.blocks.iter().map(|(index, block)| (*index, &**block))
    }

    /// Writes the disk to a (sparse) raw image file at `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        file.set_len(self.len_bytes)?;
        for (index, block) in self.written_blocks() {
            file.seek(SeekFrom::Start(index * BLOCK_SIZE as u64))?;
            file.write_all(block)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Whether `len_bytes` bytes at `offset_bytes` lie inside the disk.
    pub fn contains(&self, offset_bytes: u64, len_bytes: u64) -> bool {
        offset_bytes
            .checked_add(len_bytes)
            .is_some_and(|end| end <= self.len_bytes)
    }

    /// Reads `buffer.len()` bytes at `offset_bytes`; the range must be
    /// inside the disk ([`SparseDisk::contains`]).
    pub fn read(&self, offset_bytes: u64, buffer: &mut [u8]) {
        let mut done = 0;
        while done < buffer.len() {
            let at = offset_bytes + done as u64;
            let (index, within) = split(at);
            let length = (BLOCK_SIZE - within).min(buffer.len() - done);
            buffer[done..done + length]
                .copy_from_slice(&self.block(index)[within..within + length]);
            done += length;
        }
    }

    /// Writes `data` at `offset_bytes`; the range must be inside the disk.
    pub fn write(&mut self, offset_bytes: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let at = offset_bytes + done as u64;
            let (index, within) = split(at);
            let length = (BLOCK_SIZE - within).min(data.len() - done);
            let mut block = *self.block(index);
            block[within..within + length].copy_from_slice(&data[done..done + length]);
            self.set_block(index, &block);
            done += length;
        }
    }
}

/// Two disks are equal when they hold the same bytes, whichever zero
/// blocks each stores.
impl PartialEq for SparseDisk {
    fn eq(&self, other: &SparseDisk) -> bool {
        self.len_bytes == other.len_bytes
            && self
                .written_blocks()
                .chain(other.written_blocks())
                .all(|(index, _)| self.block(index) == other.block(index))
    }
}

impl Eq for SparseDisk {}

/// The block holding byte `offset_bytes` and the offset within it.
fn split(offset_bytes: u64) -> (u64, usize) {
    (
        offset_bytes / BLOCK_SIZE as u64,
        (offset_bytes % BLOCK_SIZE as u64) as usize,
    )
}

/// A crash state as persist sees it: the disk as of the last flush before
/// the cut, with the blocks the state changed after it on top. Persist's
/// opening and checking do not write; should they, the writes stay here.
#[derive(Debug)]
pub struct CrashDevice<'a> {
    base: &'a SparseDisk,
    overlay: &'a BTreeMap<u64, Box<Block>>,
    written: HashMap<u64, Box<Block>>,
}

impl<'a> CrashDevice<'a> {
    pub fn new(base: &'a SparseDisk, overlay: &'a BTreeMap<u64, Box<Block>>) -> CrashDevice<'a> {
        CrashDevice {
            base,
            overlay,
            written: HashMap::new(),
        }
    }

    fn check(&self, index: u64) -> Result<(), DeviceError> {
        let block_count = self.base.block_count();
        if index >= block_count {
            return Err(DeviceError::OutOfRange { index, block_count });
        }
        Ok(())
    }
}

impl BlockDevice for CrashDevice<'_> {
    fn read_block(&mut self, index: u64, buffer: &mut Block) -> Result<(), DeviceError> {
        self.check(index)?;
        let block = self
            .written
            .get(&index)
            .or_else(|| self.overlay.get(&index))
            .map_or_else(|| self.base.block(index), |block| &**block);
        buffer.copy_from_slice(block);
        Ok(())
    }

    fn write_block(&mut self, index: u64, buffer: &Block) -> Result<(), DeviceError> {
        self.check(index)?;
        self.written.insert(index, Box::new(*buffer));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }

    fn block_count(&self) -> u64 {
        self.base.block_count()
    }
}

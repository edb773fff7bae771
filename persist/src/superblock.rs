//! Reading the two superblocks and choosing the newest valid one.

use alloc::boxed::Box;

use zerocopy::FromBytes;

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{DeviceError, Error};
use crate::layout::{
    FORMAT_VERSION, LOG_BLOCKS, LOG_FORMAT_VERSION, MAGIC, MAX_IMAGE_BLOCKS,
    SNAPSHOTS_FORMAT_VERSION, SUPERBLOCK_CHECKSUM_OFFSET, Superblock, crc32c,
};

/// The smallest image: two superblocks, a free-space root and bitmap,
/// metadata, module, and room for a commit beside the last one.
pub const MIN_IMAGE_BLOCKS: u64 = 16;

/// What one superblock slot holds.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// A superblock of this format with a valid checksum.
    Valid(Box<Superblock>),
    /// The magic is there, the checksum is right, the version is not ours.
    NewerVersion(u32),
    /// The magic is there, the checksum is wrong (torn or corrupt).
    BadChecksum,
    /// No magic.
    Blank,
}

/// Reads and classifies the superblock in `slot` (0 or 1).
pub(crate) fn read_slot<D: BlockDevice>(device: &mut D, slot: u64) -> Result<Slot, DeviceError> {
    let mut buffer = [0u8; BLOCK_SIZE];
    device.read_block(slot, &mut buffer)?;
    let Ok(superblock) = Superblock::read_from_bytes(&buffer[..]) else {
        return Ok(Slot::Blank);
    };
    if superblock.magic != MAGIC {
        return Ok(Slot::Blank);
    }
    if crc32c(&buffer[..SUPERBLOCK_CHECKSUM_OFFSET]) != superblock.checksum.get() {
        return Ok(Slot::BadChecksum);
    }
    let version = superblock.format_version.get();
    if ![FORMAT_VERSION, SNAPSHOTS_FORMAT_VERSION, LOG_FORMAT_VERSION].contains(&version) {
        return Ok(Slot::NewerVersion(version));
    }
    // Each version is written for exactly the contents that need it
    // (version 1: no snapshot table and no log; 2: a table and no log; 3:
    // a log of at most LOG_BLOCKS blocks): a superblock that says
    // otherwise was not written by this code.
    let log_blocks = superblock.log.block_count.get();
    if superblock.format_version_for_contents() != version || log_blocks as usize > LOG_BLOCKS {
        return Ok(Slot::BadChecksum);
    }
    // Commit n lives in slot n % 2; anything else is not ours to trust.
    if superblock.sequence.get() % 2 != slot {
        return Ok(Slot::BadChecksum);
    }
    Ok(Slot::Valid(Box::new(superblock)))
}

/// The superblock to open and, when valid too, the older one.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    pub(crate) newest: Superblock,
    pub(crate) older: Option<Superblock>,
}

/// Picks the valid superblock with the higher sequence number.
pub(crate) fn choose<D: BlockDevice>(device: &mut D) -> Result<Chosen, Error> {
    let device_blocks = device.block_count();
    if device_blocks < MIN_IMAGE_BLOCKS {
        return Err(Error::DeviceTooSmall {
            needed_blocks: MIN_IMAGE_BLOCKS,
            device_blocks,
        });
    }
    let slots = [read_slot(device, 0)?, read_slot(device, 1)?];
    // A newer tool's commit must not be silently rolled back to ours.
    for slot in &slots {
        if let Slot::NewerVersion(found) = slot {
            return Err(Error::UnsupportedVersion {
                found: *found,
                supported: LOG_FORMAT_VERSION,
            });
        }
    }
    let mut valid: [Option<Superblock>; 2] = [None, None];
    for (position, slot) in slots.iter().enumerate() {
        if let Slot::Valid(superblock) = slot {
            valid[position] = Some((**superblock).clone());
        }
    }
    let (newest, older) = match valid {
        [Some(first), Some(second)] => {
            if first.sequence.get() > second.sequence.get() {
                (first, Some(second))
            } else {
                (second, Some(first))
            }
        }
        [Some(only), None] | [None, Some(only)] => (only, None),
        [None, None] => {
            return Err(
                if slots.iter().any(|slot| matches!(slot, Slot::BadChecksum)) {
                    Error::NoValidSuperblock
                } else {
                    Error::NotAnImage
                },
            );
        }
    };
    check_geometry(&newest, device_blocks)?;
    let older = older.filter(|older| {
        older.block_count == newest.block_count && older.sequence.get() < newest.sequence.get()
    });
    Ok(Chosen { newest, older })
}

fn check_geometry(superblock: &Superblock, device_blocks: u64) -> Result<(), Error> {
    let block_size = superblock.block_size.get();
    if block_size as usize != BLOCK_SIZE {
        return Err(Error::UnsupportedBlockSize { found: block_size });
    }
    let image_blocks = superblock.block_count.get();
    if image_blocks > MAX_IMAGE_BLOCKS {
        return Err(Error::DeviceTooLarge {
            device_blocks: image_blocks,
            max_blocks: MAX_IMAGE_BLOCKS,
        });
    }
    if image_blocks > device_blocks || image_blocks < MIN_IMAGE_BLOCKS {
        return Err(Error::DeviceTooSmall {
            needed_blocks: image_blocks.max(MIN_IMAGE_BLOCKS),
            device_blocks,
        });
    }
    Ok(())
}

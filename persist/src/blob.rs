//! Chains of blocks for variable-length records (metadata, module bytes).
//!
//! A chain is written last block first, so each block's pointer onward can
//! carry the checksum of the block it names: one checked pointer protects the
//! whole chain.

use alloc::vec::Vec;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{Error, Structure};
use crate::layout::{CHAIN_PAYLOAD_LEN, ChainBlock, ChainPointer, Pointer, crc32c};
use crate::space::SpaceMap;

/// Reads a block the pointer names, checking range and checksum.
pub(crate) fn read_checked<D: BlockDevice>(
    device: &mut D,
    pointer: &Pointer,
    image_blocks: u64,
    structure: Structure,
) -> Result<[u8; BLOCK_SIZE], Error> {
    let block = pointer.block.get();
    if block < 2 || block >= image_blocks {
        return Err(Error::BadPointer { block, structure });
    }
    let mut buffer = [0u8; BLOCK_SIZE];
    device.read_block(block, &mut buffer)?;
    if crc32c(&buffer) != pointer.crc.get() {
        return Err(Error::checksum(block, structure));
    }
    Ok(buffer)
}

/// Writes `bytes` as a new chain in free blocks; returns the pointer to it
/// and the blocks it took.
pub(crate) fn write_chain<D: BlockDevice>(
    device: &mut D,
    space: &mut SpaceMap,
    bytes: &[u8],
    blocks_written: &mut u64,
) -> Result<(ChainPointer, Vec<u64>), Error> {
    let block_total = bytes.len().div_ceil(CHAIN_PAYLOAD_LEN).max(1);
    let mut blocks = Vec::with_capacity(block_total);
    for _ in 0..block_total {
        blocks.push(space.allocate()?);
    }
    let mut next = Pointer::NONE;
    for (position, &block) in blocks.iter().enumerate().rev() {
        let start = position * CHAIN_PAYLOAD_LEN;
        let chunk = bytes.get(start..).unwrap_or(&[]);
        let chunk = &chunk[..chunk.len().min(CHAIN_PAYLOAD_LEN)];
        let mut chain_block = ChainBlock::new_zeroed();
        chain_block.next = next;
        chain_block.payload_len = U32::new(chunk.len() as u32);
        chain_block.payload[..chunk.len()].copy_from_slice(chunk);
        let mut buffer = [0u8; BLOCK_SIZE];
        buffer.copy_from_slice(chain_block.as_bytes());
        device.write_block(block, &buffer)?;
        *blocks_written += 1;
        next = Pointer::new(block, crc32c(&buffer));
    }
    let pointer = ChainPointer {
        first: next,
        len_bytes: U64::new(bytes.len() as u64),
        reserved: U64::ZERO,
    };
    Ok((pointer, blocks))
}

/// Reads a whole chain, checking every block; returns its bytes and blocks.
pub(crate) fn read_chain<D: BlockDevice>(
    device: &mut D,
    pointer: &ChainPointer,
    image_blocks: u64,
    structure: Structure,
) -> Result<(Vec<u8>, Vec<u64>), Error> {
    let len_bytes = pointer.len_bytes.get();
    let first_block = pointer.first.block.get();
    let block_total = len_bytes.div_ceil(CHAIN_PAYLOAD_LEN as u64).max(1);
    // A chain cannot be longer than the image: refuse before allocating.
    if block_total >= image_blocks {
        return Err(Error::malformed(
            first_block,
            structure,
            "chain longer than the image",
        ));
    }
    // Grow as blocks check out rather than trusting the length up front.
    let mut bytes = Vec::with_capacity(len_bytes.min(1 << 20) as usize);
    let mut blocks = Vec::new();
    let mut next = pointer.first;
    for position in 0..block_total {
        let buffer = read_checked(device, &next, image_blocks, structure)?;
        let block = next.block.get();
        let chain_block = ChainBlock::read_from_bytes(&buffer[..])
            .map_err(|_| Error::malformed(block, structure, "unreadable chain block"))?;
        let expected_len = (len_bytes - bytes.len() as u64).min(CHAIN_PAYLOAD_LEN as u64);
        if u64::from(chain_block.payload_len.get()) != expected_len {
            return Err(Error::malformed(
                block,
                structure,
                "chain block length disagrees with the chain length",
            ));
        }
        let is_last = position + 1 == block_total;
        if is_last != chain_block.next.is_none() {
            return Err(Error::malformed(
                block,
                structure,
                "chain has the wrong number of blocks",
            ));
        }
        bytes.extend_from_slice(&chain_block.payload[..expected_len as usize]);
        blocks.push(block);
        next = chain_block.next;
    }
    Ok((bytes, blocks))
}

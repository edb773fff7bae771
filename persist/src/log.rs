//! A domain's own log: the last lines it printed, kept in its image.
//!
//! The log is a ring of at most [`LOG_BLOCKS`] blocks whose pointers live
//! in the superblock ([`LogRing`]), oldest first. Each block is a
//! [`ChainBlock`] with no next block, its payload the log's bytes in order.
//! A commit that adds lines rewrites the last block copy-on-write (the old
//! one is freed with the commit) and adds blocks as it fills them; when the
//! ring holds more than [`LOG_BLOCKS`] the oldest go. So a commit costs one
//! block per 4,072 bytes logged since the last one, plus the partly filled
//! last block, whatever the log holds; a domain that printed nothing costs
//! nothing.
//!
//! The log belongs to the domain, not to a state of it: a snapshot does not
//! hold it and a rollback keeps it, so what the domain printed before a
//! rollback stays readable after it. A migration carries it (see
//! `migrate::source`), and so do an export and an offline copy of the image.

use alloc::vec::Vec;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::blob::read_checked;
use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{Error, Structure};
use crate::layout::{CHAIN_PAYLOAD_LEN, ChainBlock, LOG_BLOCKS, LogRing, Pointer, crc32c};
use crate::space::SpaceMap;

/// The most bytes a log keeps: its newest [`LOG_BLOCKS`] x 4,072 (65,152).
pub const LOG_CAPACITY_BYTES: usize = LOG_BLOCKS * CHAIN_PAYLOAD_LEN;

impl Default for LogRing {
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl LogRing {
    /// The blocks in use, oldest first.
    pub(crate) fn used(&self) -> &[Pointer] {
        let count = (self.block_count.get() as usize).min(LOG_BLOCKS);
        &self.blocks[..count]
    }
}

/// The last `count` lines of `log` (all when it has fewer) and how many
/// lines it has: what `logs NAME -n COUNT` and `image logs -n COUNT` show.
/// A last line without its line break counts as a line.
pub fn last_lines(log: &[u8], count: usize) -> (&[u8], usize) {
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    if body.is_empty() {
        return (&log[..0], 0);
    }
    let total = body.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let skip = total.saturating_sub(count);
    let start = if skip == 0 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .nth(skip - 1)
            .map_or(log.len(), |(index, _)| index + 1)
    };
    (&log[start..], total)
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_counts_and_cuts_at_line_breaks() {
        assert_eq!(last_lines(b"", 5), (&b""[..], 0));
        assert_eq!(last_lines(b"a\nb\nc\n", 2), (&b"b\nc\n"[..], 3));
        assert_eq!(last_lines(b"a\nb\nc\n", 9), (&b"a\nb\nc\n"[..], 3));
        assert_eq!(last_lines(b"a\nb\nc", 1), (&b"c"[..], 3));
        assert_eq!(last_lines(b"a\nb\n", 0), (&b""[..], 2));
    }
}

/// What the next commit does to the log: add `bytes` to its end or, when
/// `replace` is set, make them the whole log (an incoming migration's copy
/// takes the source's log this way, round after round).
#[derive(Debug, Clone, Default)]
pub(crate) struct StagedLog {
    pub(crate) replace: bool,
    pub(crate) bytes: Vec<u8>,
    /// Bytes staged and then dropped to keep `bytes` within the capacity.
    pub(crate) dropped: u64,
}

impl StagedLog {
    /// Whether the next commit leaves the log as it is.
    pub(crate) fn is_empty(&self) -> bool {
        !self.replace && self.bytes.is_empty()
    }

    /// Adds `bytes`, keeping only the newest [`LOG_CAPACITY_BYTES`].
    pub(crate) fn append(&mut self, bytes: &[u8]) {
        let bytes = keep_newest(bytes, &mut self.dropped);
        let excess = (self.bytes.len() + bytes.len()).saturating_sub(LOG_CAPACITY_BYTES);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.dropped = self.dropped.saturating_add(excess as u64);
        }
        self.bytes.extend_from_slice(bytes);
    }
}

/// The newest [`LOG_CAPACITY_BYTES`] of `bytes`, counting the rest into
/// `dropped`.
fn keep_newest<'a>(bytes: &'a [u8], dropped: &mut u64) -> &'a [u8] {
    let excess = bytes.len().saturating_sub(LOG_CAPACITY_BYTES);
    *dropped = dropped.saturating_add(excess as u64);
    &bytes[excess..]
}

/// Reads one log block, checking its pointer, checksum and shape; returns
/// its payload.
fn read_block<D: BlockDevice>(
    device: &mut D,
    pointer: &Pointer,
    image_blocks: u64,
) -> Result<Vec<u8>, Error> {
    let block = pointer.block.get();
    let buffer = read_checked(device, pointer, image_blocks, Structure::Log)?;
    let chain_block = ChainBlock::ref_from_bytes(&buffer[..])
        .map_err(|_| Error::malformed(block, Structure::Log, "a log block is not a block long"))?;
    let len = chain_block.payload_len.get() as usize;
    if len == 0 || len > CHAIN_PAYLOAD_LEN || !chain_block.next.is_none() {
        return Err(Error::malformed(
            block,
            Structure::Log,
            "a log block's length or next pointer is out of bounds",
        ));
    }
    Ok(chain_block.payload[..len].to_vec())
}

/// Checks the log a superblock names (each block in range, checksummed,
/// marked used by `is_used`, listed once) and returns the payload of its
/// last block, which the next commit that logs rewrites.
pub(crate) fn load<D: BlockDevice>(
    device: &mut D,
    ring: &LogRing,
    image_blocks: u64,
    is_used: &dyn Fn(u64) -> bool,
) -> Result<Vec<u8>, Error> {
    if ring.block_count.get() as usize > LOG_BLOCKS {
        return Err(Error::malformed(
            0,
            Structure::Superblock,
            "the log has more blocks than a log keeps",
        ));
    }
    if ring.blocks[ring.used().len()..]
        .iter()
        .any(|pointer| !pointer.is_none())
    {
        return Err(Error::malformed(
            0,
            Structure::Superblock,
            "the log lists blocks past its count",
        ));
    }
    let mut tail = Vec::new();
    for (position, pointer) in ring.used().iter().enumerate() {
        let block = pointer.block.get();
        if ring.used()[..position]
            .iter()
            .any(|earlier| earlier.block == pointer.block)
        {
            return Err(Error::malformed(
                block,
                Structure::Log,
                "the log lists a block twice",
            ));
        }
        tail = read_block(device, pointer, image_blocks)?;
        if !is_used(block) {
            return Err(Error::malformed(
                block,
                Structure::Log,
                "a reachable block is marked free",
            ));
        }
    }
    Ok(tail)
}

/// The log's bytes as `ring` holds them, then `staged`, kept to the newest
/// [`LOG_CAPACITY_BYTES`] and starting at a whole line: a line whose start
/// the ring dropped is left out.
pub(crate) fn read<D: BlockDevice>(
    device: &mut D,
    ring: &LogRing,
    image_blocks: u64,
    staged: &StagedLog,
) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    // A replaced log keeps nothing of the ring, its dropped bytes included
    // (as `prepare` writes it).
    let mut dropped = 0;
    if !staged.replace {
        dropped = ring.bytes_dropped.get();
        for pointer in ring.used() {
            bytes.extend_from_slice(&read_block(device, pointer, image_blocks)?);
        }
    }
    dropped = dropped.saturating_add(staged.dropped);
    bytes.extend_from_slice(&staged.bytes);
    let excess = bytes.len().saturating_sub(LOG_CAPACITY_BYTES);
    if excess > 0 {
        bytes.drain(..excess);
        dropped = dropped.saturating_add(excess as u64);
    }
    if dropped > 0 {
        let first_line = bytes
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(bytes.len(), |end| end + 1);
        bytes.drain(..first_line);
    }
    Ok(bytes)
}

/// A log as a commit will leave it, written but not yet durable.
#[derive(Debug, Clone)]
pub(crate) struct PreparedLog {
    pub(crate) ring: LogRing,
    /// The payload of its last block.
    pub(crate) tail: Vec<u8>,
}

/// Writes what `staged` (not empty) does to the log of `ring` (whose last block holds
/// `tail`) into free blocks and frees the blocks the new ring no longer
/// uses (kept from reuse until the commit that drops them is superseded,
/// as [`SpaceMap::free`] does). The superblock that takes the returned
/// ring makes it the log.
pub(crate) fn prepare<D: BlockDevice>(
    device: &mut D,
    space: &mut SpaceMap,
    ring: &LogRing,
    tail: &[u8],
    staged: &StagedLog,
    blocks_written: &mut u64,
) -> Result<PreparedLog, Error> {
    let mut blocks: Vec<Pointer> = ring.used().to_vec();
    let mut dropped = ring.bytes_dropped.get().saturating_add(staged.dropped);
    let mut pending = Vec::with_capacity(tail.len() + staged.bytes.len());
    if staged.replace {
        dropped = staged.dropped;
        for pointer in blocks.drain(..) {
            space.free(pointer.block.get());
        }
    } else if !tail.is_empty() && tail.len() < CHAIN_PAYLOAD_LEN {
        // The partly filled last block is written again with more in it.
        if let Some(last) = blocks.pop() {
            space.free(last.block.get());
            pending.extend_from_slice(tail);
        }
    }
    pending.extend_from_slice(&staged.bytes);
    // Only what the ring can keep is written at all, in whole blocks.
    let excess = pending.len().saturating_sub(LOG_CAPACITY_BYTES);
    let keep_from = excess
        .next_multiple_of(CHAIN_PAYLOAD_LEN)
        .min(pending.len());
    dropped = dropped.saturating_add(keep_from as u64);
    let mut new_tail = Vec::new();
    for chunk in pending[keep_from..].chunks(CHAIN_PAYLOAD_LEN) {
        let block = space.allocate()?;
        let mut chain_block = ChainBlock::new_zeroed();
        chain_block.payload_len = U32::new(chunk.len() as u32);
        chain_block.payload[..chunk.len()].copy_from_slice(chunk);
        let mut buffer = [0u8; BLOCK_SIZE];
        buffer.copy_from_slice(chain_block.as_bytes());
        device.write_block(block, &buffer)?;
        *blocks_written += 1;
        blocks.push(Pointer::new(block, crc32c(&buffer)));
        new_tail = chunk.to_vec();
    }
    if new_tail.is_empty() && !blocks.is_empty() {
        // Nothing was written after a full last block: it stays the tail.
        new_tail = tail.to_vec();
    }
    while blocks.len() > LOG_BLOCKS {
        let oldest = blocks.remove(0);
        space.free(oldest.block.get());
        dropped = dropped.saturating_add(CHAIN_PAYLOAD_LEN as u64);
    }
    let mut new_ring = LogRing::default();
    new_ring.blocks[..blocks.len()].copy_from_slice(&blocks);
    new_ring.block_count = U32::new(blocks.len() as u32);
    new_ring.bytes_dropped = U64::new(dropped);
    Ok(PreparedLog {
        ring: new_ring,
        tail: new_tail,
    })
}

//! What the recording server saw, and which commits each cut must keep.

use std::path::Path;

use anyhow::{Context, Result, bail};
use persist::{BLOCK_SIZE, crc32c};

use super::disk::{Block, SparseDisk};

/// One thing that happened to the recorded disk, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// NBD_CMD_WRITE: `data` at `offset_bytes` (volatile until a flush).
    Write { offset_bytes: u64, data: Vec<u8> },
    /// NBD_CMD_FLUSH: every earlier write is durable.
    Flush,
    /// The harness is about to ask for a checkpoint on the console.
    CheckpointAsked,
    /// The harness read the console line saying that checkpoint (or a
    /// migration's copy) is committed: the kernel claims it durable.
    CheckpointConfirmed,
}

/// A disk's contents when the guest started, and everything done to it.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub initial: SparseDisk,
    pub events: Vec<Event>,
}

/// Sizes of a trace, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceCounts {
    pub writes: usize,
    pub written_bytes: u64,
    pub flushes: usize,
    pub superblock_writes: usize,
    pub confirmations: usize,
}

impl Recording {
    pub fn counts(&self) -> TraceCounts {
        let mut counts = TraceCounts::default();
        for event in &self.events {
            match event {
                Event::Write { offset_bytes, data } => {
                    counts.writes += 1;
                    counts.written_bytes += data.len() as u64;
                    counts.superblock_writes += superblocks_in(*offset_bytes, data).len();
                }
                Event::Flush => counts.flushes += 1,
                Event::CheckpointAsked => {}
                Event::CheckpointConfirmed => counts.confirmations += 1,
            }
        }
        counts
    }
}

/// The file of [`Recording::save`] holding the disk before the guest ran.
const INITIAL_FILE: &str = "initial.img";

/// ... and the one holding the events.
const EVENTS_FILE: &str = "events.bin";

/// The longest write a saved trace may hold (the NBD server's limit).
const MAX_SAVED_WRITE_BYTES: usize = 32 << 20;

impl Recording {
    /// Saves the recording in `directory` (created if need be), so that a
    /// failure can be checked again with the same seed: the initial disk as
    /// a raw image and the events as tagged records (0: a write, its offset
    /// as u64 and length as u32, little-endian, then its bytes; 1: a flush;
    /// 2: a checkpoint asked; 3: confirmed).
    pub fn save(&self, directory: &Path) -> Result<()> {
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        self.initial.save(&directory.join(INITIAL_FILE))?;
        let mut bytes = Vec::new();
        for event in &self.events {
            match event {
                Event::Write { offset_bytes, data } => {
                    bytes.push(0);
                    bytes.extend_from_slice(&offset_bytes.to_le_bytes());
                    bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
                    bytes.extend_from_slice(data);
                }
                Event::Flush => bytes.push(1),
                Event::CheckpointAsked => bytes.push(2),
                Event::CheckpointConfirmed => bytes.push(3),
            }
        }
        let path = directory.join(EVENTS_FILE);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// A recording [`Recording::save`] wrote to `directory`.
    pub fn load(directory: &Path) -> Result<Recording> {
        let initial = SparseDisk::from_file(&directory.join(INITIAL_FILE))?;
        let path = directory.join(EVENTS_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut events = Vec::new();
        let mut rest = &bytes[..];
        while let Some((&tag, after)) = rest.split_first() {
            rest = after;
            events.push(match tag {
                0 => {
                    let (header, after) = rest
                        .split_at_checked(12)
                        .context("a saved write is cut short")?;
                    let offset_bytes = u64::from_le_bytes(header[..8].try_into()?);
                    let len_bytes = u32::from_le_bytes(header[8..].try_into()?) as usize;
                    if len_bytes > MAX_SAVED_WRITE_BYTES {
                        bail!("a saved write of {len_bytes} bytes");
                    }
                    let (data, after) = after
                        .split_at_checked(len_bytes)
                        .context("a saved write's data is cut short")?;
                    rest = after;
                    Event::Write {
                        offset_bytes,
                        data: data.to_vec(),
                    }
                }
                1 => Event::Flush,
                2 => Event::CheckpointAsked,
                3 => Event::CheckpointConfirmed,
                _ => bail!("{}: unknown event tag {tag}", path.display()),
            });
        }
        Ok(Recording { initial, events })
    }
}

/// Bytes 0..8 of a superblock (persist's `layout::MAGIC`).
const SUPERBLOCK_MAGIC: &[u8; 8] = b"AMBERIMG";

/// Where the little-endian sequence number sits (after the magic, the
/// format version and the block size: persist's `layout::Superblock`).
const SEQUENCE_OFFSET: usize = 16;

/// Where the CRC-32C of the bytes before it sits.
const CHECKSUM_OFFSET: usize = BLOCK_SIZE - 4;

/// The commit sequence number of `block` if it is a whole superblock
/// (right magic and checksum). Read here from the bytes rather than through
/// persist's opening, so the check does not lean on the code it checks;
/// `a_superblock_is_read_where_persist_writes_it` pins the offsets.
pub fn superblock_sequence(block: &Block) -> Option<u64> {
    if &block[..8] != SUPERBLOCK_MAGIC {
        return None;
    }
    let stored = u32::from_le_bytes(block[CHECKSUM_OFFSET..].try_into().ok()?);
    if crc32c(&block[..CHECKSUM_OFFSET]) != stored {
        return None;
    }
    let sequence = block[SEQUENCE_OFFSET..SEQUENCE_OFFSET + 8]
        .try_into()
        .ok()?;
    Some(u64::from_le_bytes(sequence))
}

/// The sequences of the whole superblocks (blocks 0 and 1) a write carries.
fn superblocks_in(offset_bytes: u64, data: &[u8]) -> Vec<u64> {
    let mut found = Vec::new();
    for slot in 0..2u64 {
        let start = slot * BLOCK_SIZE as u64;
        let Some(skip) = start.checked_sub(offset_bytes) else {
            continue;
        };
        let Ok(skip) = usize::try_from(skip) else {
            continue;
        };
        let Some(bytes) = data.get(skip..skip + BLOCK_SIZE) else {
            continue;
        };
        if let Some(sequence) = bytes.try_into().ok().and_then(superblock_sequence) {
            found.push(sequence);
        }
    }
    found
}

/// The newest sequence among the initial disk's superblocks: durable
/// before the guest started (the image file was written by then).
fn initial_sequence(disk: &SparseDisk) -> Option<u64> {
    (0..2)
        .filter(|&slot| slot < disk.block_count())
        .filter_map(|slot| superblock_sequence(disk.block(slot)))
        .max()
}

/// What a crash at each point of a trace must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `required[cut]`: the oldest commit a crash after events `..cut` may
    /// open at (none: the disk may hold no image yet).
    pub required: Vec<Option<u64>>,
    /// Confirmations with no superblock written since the matching ask: the
    /// kernel said committed, but no commit reached the disk.
    pub unbacked_confirmations: Vec<usize>,
}

impl Durability {
    /// Walks the trace. A commit is durable once its superblock was written
    /// and a flush followed (that flush completed before the cut), or once
    /// the console confirmed it: then the oldest superblock written between
    /// the ask and the confirmation is required, a lower bound on the one
    /// the confirmation meant (a periodic commit may have come first).
    pub fn of(recording: &Recording) -> Durability {
        let mut required = Vec::with_capacity(recording.events.len() + 1);
        let mut unbacked_confirmations = Vec::new();
        let mut flushed = initial_sequence(&recording.initial);
        let mut confirmed: Option<u64> = None;
        let mut unflushed: Vec<u64> = Vec::new();
        // Some(oldest superblock since the ask) while an ask is open.
        let mut asked: Option<Option<u64>> = None;
        for (position, event) in recording.events.iter().enumerate() {
            required.push(flushed.max(confirmed));
            match event {
                Event::Write { offset_bytes, data } => {
                    for sequence in superblocks_in(*offset_bytes, data) {
                        unflushed.push(sequence);
                        if let Some(oldest) = &mut asked {
                            *oldest = Some(oldest.map_or(sequence, |old| old.min(sequence)));
                        }
                    }
                }
                Event::Flush => {
                    flushed = flushed.max(unflushed.drain(..).max());
                }
                Event::CheckpointAsked => asked = Some(None),
                Event::CheckpointConfirmed => match asked.take() {
                    Some(Some(sequence)) => confirmed = confirmed.max(Some(sequence)),
                    _ => unbacked_confirmations.push(position),
                },
            }
        }
        required.push(flushed.max(confirmed));
        Durability {
            required,
            unbacked_confirmations,
        }
    }
}

//! The disks a power cut can leave, built from a trace.
//!
//! Between two flushes a drive with a volatile cache may persist any of the
//! writes it took, in any order, and a 4 KiB block only sector by sector.
//! So a crash at a cut leaves: everything up to the last flush before it,
//! and for each block written after that flush (by the writes issued before
//! the cut), each sector as it was at the flush or as any of those writes
//! left it. [`for_each_state`] visits, per window between two flushes:
//! the state at its opening flush, the state with all its writes in order,
//! every tear of a window holding a single block write (a superblock), and
//! random samples of the rest, from a seed that replays them.

use std::collections::BTreeMap;

use anyhow::Result;
use persist::BLOCK_SIZE;

use super::disk::{Block, SECTOR_SIZE, SECTORS_PER_BLOCK, SparseDisk};
use super::trace::{Event, Recording};
use crate::Xorshift;

/// How many states to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Seeds the samples: the same trace and seed give the same states.
    pub seed: u64,
    /// Random states per window between flushes, at most.
    pub samples_per_window: usize,
}

/// How a state was made, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKind {
    /// Exactly the disk at a flush.
    AtFlush,
    /// Every write of a window, in order, without the flush that ends it.
    AllInOrder,
    /// The window's single block write torn at a sector boundary.
    TornSingle,
    /// A random subset and order, some blocks torn.
    Sampled,
}

/// One crash state: the disk as of the last flush before `cut`, with
/// `overlay` on top.
#[derive(Debug, Clone)]
pub struct CrashState {
    /// The crash came after trace events `..cut`.
    pub cut: usize,
    pub kind: StateKind,
    /// Blocks that differ from the last flush's disk.
    pub overlay: BTreeMap<u64, Box<Block>>,
    /// What was chosen, enough to rebuild the state by hand.
    pub description: String,
}

/// One block's part of one write in a window.
#[derive(Debug, Clone)]
struct Piece {
    /// The trace event of the write.
    event: usize,
    block: u64,
    /// Bit n set: the write covers sector n of the block.
    sectors: u8,
    data: Box<Block>,
}

/// Splits a write into the block pieces it covers.
fn pieces_of(event: usize, offset_bytes: u64, data: &[u8]) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    for (chunk_index, chunk) in data.chunks(SECTOR_SIZE).enumerate() {
        let at = offset_bytes + (chunk_index * SECTOR_SIZE) as u64;
        let block = at / BLOCK_SIZE as u64;
        let within = (at % BLOCK_SIZE as u64) as usize;
        let sector = within / SECTOR_SIZE;
        if pieces.last().is_none_or(|piece| piece.block != block) {
            pieces.push(Piece {
                event,
                block,
                sectors: 0,
                data: Box::new([0; BLOCK_SIZE]),
            });
        }
        if let Some(piece) = pieces.last_mut() {
            piece.sectors |= 1 << sector;
            piece.data[within..within + chunk.len()].copy_from_slice(chunk);
        }
    }
    pieces
}

/// Visits every state `plan` draws from `recording`, with the disk as of
/// the last flush before its cut; stops at the first error `visit` returns.
/// Returns how many states were visited.
pub fn for_each_state(
    recording: &Recording,
    plan: &Plan,
    mut visit: impl FnMut(&SparseDisk, &CrashState) -> Result<()>,
) -> Result<usize> {
    let mut random = Xorshift::new(plan.seed);
    let mut base = recording.initial.clone();
    let mut window: Vec<Piece> = Vec::new();
    let mut window_start = 0;
    let mut visited = 0;
    for (position, event) in recording.events.iter().enumerate() {
        match event {
            Event::Write { offset_bytes, data } => {
                // Writes the server refused never reached the disk.
                if recording.initial.contains(*offset_bytes, data.len() as u64) {
                    window.extend(pieces_of(position, *offset_bytes, data));
                }
            }
            Event::Flush => {
                visited += window_states(
                    &base,
                    &window,
                    window_start,
                    position,
                    plan,
                    &mut random,
                    &mut visit,
                )?;
                for piece in window.drain(..) {
                    apply(&mut base, &piece);
                }
                window_start = position + 1;
            }
            Event::CheckpointAsked | Event::CheckpointConfirmed => {}
        }
    }
    let end = recording.events.len();
    visited += window_states(
        &base,
        &window,
        window_start,
        end,
        plan,
        &mut random,
        &mut visit,
    )?;
    Ok(visited)
}

fn apply(disk: &mut SparseDisk, piece: &Piece) {
    let mut block = *disk.block(piece.block);
    merge(&mut block, piece);
    disk.set_block(piece.block, &block);
}

/// Copies the sectors `piece` covers into `block`.
fn merge(block: &mut Block, piece: &Piece) {
    for sector in 0..SECTORS_PER_BLOCK {
        if piece.sectors & (1 << sector) != 0 {
            let range = sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE;
            block[range.clone()].copy_from_slice(&piece.data[range]);
        }
    }
}

/// The states of one window: the writes `window` (events `start..end`),
/// between the flush before `start` (or the trace's start) and the flush
/// at `end` (or the trace's end).
fn window_states(
    base: &SparseDisk,
    window: &[Piece],
    start: usize,
    end: usize,
    plan: &Plan,
    random: &mut Xorshift,
    visit: &mut impl FnMut(&SparseDisk, &CrashState) -> Result<()>,
) -> Result<usize> {
    let mut visited = 0;
    let mut emit = |state: CrashState| -> Result<()> {
        visited += 1;
        visit(base, &state)
    };
    emit(CrashState {
        cut: start,
        kind: StateKind::AtFlush,
        overlay: BTreeMap::new(),
        description: format!("the disk at the flush before event {start}"),
    })?;
    if window.is_empty() {
        return Ok(visited);
    }
    let mut all = BTreeMap::new();
    for piece in window {
        let block = all
            .entry(piece.block)
            .or_insert_with(|| Box::new(*base.block(piece.block)));
        merge(block, piece);
    }
    emit(CrashState {
        cut: end,
        kind: StateKind::AllInOrder,
        overlay: all,
        description: format!(
            "all {} block writes of events {start}..{end} in order",
            window.len()
        ),
    })?;
    if let [piece] = window {
        for new_sectors in 1..SECTORS_PER_BLOCK {
            for is_new_first in [true, false] {
                let mut block = *base.block(piece.block);
                let mut torn = piece.clone();
                let first_new = if is_new_first {
                    0
                } else {
                    SECTORS_PER_BLOCK - new_sectors
                };
                torn.sectors &= (((1u16 << new_sectors) - 1) << first_new) as u8;
                merge(&mut block, &torn);
                emit(CrashState {
                    cut: end,
                    kind: StateKind::TornSingle,
                    overlay: BTreeMap::from([(piece.block, Box::new(block))]),
                    description: format!(
                        "block {} of event {} torn: sectors {first_new}..{} new",
                        piece.block,
                        piece.event,
                        first_new + new_sectors
                    ),
                })?;
            }
        }
        return Ok(visited);
    }
    // A small window has few distinct states: draw fewer from it.
    let samples = plan.samples_per_window.min(8 + 8 * window.len());
    for _ in 0..samples {
        emit(sample(base, window, start, random))?;
    }
    Ok(visited)
}

/// In percent: how likely a sampled block is torn.
const TEAR_PERCENT: u64 = 10;

/// A random state of a window: a random cut among its writes, then for
/// each block those writes touched a version (as at the flush, or as one of
/// the writes left it), or a tear of two versions sector by sector.
fn sample(base: &SparseDisk, window: &[Piece], start: usize, random: &mut Xorshift) -> CrashState {
    let issued = random.between(1, window.len() as u64) as usize;
    let cut = window[issued - 1].event + 1;
    // The block writes issued before the cut, block by block, in order.
    let mut by_block: BTreeMap<u64, Vec<&Piece>> = BTreeMap::new();
    for piece in &window[..issued] {
        by_block.entry(piece.block).or_default().push(piece);
    }
    let keep_percent = [10, 50, 90, 100][random.between(0, 3) as usize];
    let mut overlay = BTreeMap::new();
    let (mut kept, mut torn, mut lost) = (0, Vec::new(), 0);
    for (block, pieces) in by_block {
        // Version n: the block as at the flush with its first n writes.
        let version = |count: usize| {
            let mut contents = *base.block(block);
            for piece in &pieces[..count] {
                merge(&mut contents, piece);
            }
            contents
        };
        let newest = pieces.len();
        let chosen = if random.between(1, 100) <= TEAR_PERCENT {
            let versions: Vec<Block> = (0..=newest).map(version).collect();
            let mut mixed = [0u8; BLOCK_SIZE];
            let mut mask = 0u8;
            for sector in 0..SECTORS_PER_BLOCK {
                let chosen = random.between(0, newest as u64) as usize;
                if chosen != 0 {
                    mask |= 1 << sector;
                }
                let range = sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE;
                mixed[range.clone()].copy_from_slice(&versions[chosen][range]);
            }
            torn.push(format!("{block}:{mask:08b}"));
            mixed
        } else if random.between(1, 100) <= keep_percent {
            kept += 1;
            // Mostly the newest; sometimes an older write survived alone.
            if random.between(0, 1) == 0 {
                version(newest)
            } else {
                version(random.between(1, newest as u64) as usize)
            }
        } else {
            lost += 1;
            continue;
        };
        if &chosen != base.block(block) {
            overlay.insert(block, Box::new(chosen));
        }
    }
    CrashState {
        cut,
        kind: StateKind::Sampled,
        overlay,
        description: format!(
            "events {start}..{cut} ({issued} of {} block writes issued): {kept} blocks kept, \
             {lost} lost, torn (block:sectors not as at the flush) [{}]",
            window.len(),
            torn.join(" ")
        ),
    }
}

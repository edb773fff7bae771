//! Opening an image: every check before use, and the explicit rollback.
//!
//! Opening reads the newest valid superblock's commit and checks it whole
//! before anything is allocated per entry: the free space loads, the
//! metadata record decodes and passes [`crate::validate`], the page map is a
//! tree within the domain's page range whose every block the bitmap marks
//! used, and the superblock's counters agree with it and can count one
//! commit further. The work is one read per block the commit reaches and the
//! memory one bitmap of the image's size, so a hostile image costs no more
//! than its size justifies.
//!
//! A torn newest superblock (a commit cut off by a power cut before it was
//! durable) is not a commit: opening takes the older one, as the commit
//! protocol intends. A valid newest superblock whose commit fails a check is
//! different: that commit was durable and is now damaged, so opening
//! refuses with [`Error::NewestCommitDamaged`], naming it and the older
//! commit that is intact, and never falls back silently.
//! [`Image::open_rolling_back`] is the operator's explicit way back (as
//! `zpool import -F` is): it opens the older commit and commits it again
//! with a record of the rollback in the superblock.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;

use zerocopy::little_endian::U64;

use super::{Image, read_record};
use crate::device::BlockDevice;
use crate::error::{Counter, Error, Structure};
use crate::layout::Superblock;
use crate::metadata::MetadataRecord;
use crate::migrate::Migration;
use crate::page_map;
use crate::space::{self, LoadedSpace, SpaceMap};
use crate::superblock::choose;

/// An image that did not open, with its device handed back (the kernel
/// keeps a damaged disk for the operator's rollback).
#[derive(Debug)]
pub struct Unopened<D> {
    /// Why it did not open.
    pub error: Error,
    /// The device, untouched.
    pub device: D,
}

/// What the last rollback of an image did, as its superblock records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackRecord {
    /// How many times this image was rolled back.
    pub rollbacks: u64,
    /// The damaged commit that the last rollback discarded.
    pub damaged_sequence: u64,
    /// The intact commit it went back to.
    pub restored_sequence: u64,
}

impl fmt::Display for RollbackRecord {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "commit {} was damaged; rolled back to commit {} on purpose",
            self.damaged_sequence, self.restored_sequence
        )?;
        if self.rollbacks > 1 {
            write!(formatter, " ({} rollbacks in all)", self.rollbacks)?;
        }
        Ok(())
    }
}

/// One commit, read and checked whole.
struct LoadedCommit {
    space: LoadedSpace,
    record: MetadataRecord,
    metadata_blocks: Vec<u64>,
    snapshots: Option<super::snapshots::LoadedSnapshots>,
    /// The payload of the log's last block.
    log_tail: Vec<u8>,
}

/// Reads and checks the commit `superblock` names (see the module docs).
fn load_commit<D: BlockDevice>(
    device: &mut D,
    superblock: &Superblock,
) -> Result<LoadedCommit, Error> {
    let sequence = superblock.sequence.get();
    if sequence == u64::MAX {
        return Err(Error::CounterOverflow {
            counter: Counter::Sequence,
            value: sequence,
        });
    }
    let image_blocks = superblock.block_count.get();
    let space = space::load(device, &superblock.free_space_root, image_blocks)?;
    let (record, metadata_blocks) = read_record(device, &superblock.metadata, image_blocks)?;
    let mut pages = 0u64;
    let used = &space.used;
    let check_used = |block: u64, structure| {
        if used.contains(block) {
            Ok(())
        } else {
            Err(Error::malformed(
                block,
                structure,
                "a reachable block is marked free",
            ))
        }
    };
    page_map::walk(
        device,
        &superblock.page_map_root,
        page_map::Bounds {
            image_blocks,
            page_limit: record.metadata.page_limit(),
        },
        &mut |node| check_used(node.block.get(), Structure::PageMapNode),
        &mut |_, page| {
            check_used(page.block.get(), Structure::Page)?;
            pages += 1;
            Ok(())
        },
    )?;
    if pages != superblock.pages_stored.get() {
        return Err(Error::malformed(
            sequence % 2,
            Structure::Superblock,
            "page count disagrees with the page map",
        ));
    }
    let snapshots = super::snapshots::load(device, superblock, &space.used)?;
    let log_tail = crate::log::load(device, &superblock.log, image_blocks, &|block| {
        space.used.contains(block)
    })?;
    Ok(LoadedCommit {
        space,
        record,
        metadata_blocks,
        snapshots,
        log_tail,
    })
}

impl<D: BlockDevice> Image<D> {
    /// Opens the image on `device` at its newest commit, checked whole (see
    /// the module docs). A damaged newest commit is
    /// [`Error::NewestCommitDamaged`] when the older one is intact.
    pub fn open(device: D) -> Result<Self, Error> {
        Self::try_open(device).map_err(|unopened| unopened.error)
    }

    /// [`Image::open`], handing the device back when the image does not
    /// open.
    pub fn try_open(mut device: D) -> Result<Self, Unopened<D>> {
        let chosen = match choose(&mut device) {
            Ok(chosen) => chosen,
            Err(error) => return Err(Unopened { error, device }),
        };
        let newest = match load_commit(&mut device, &chosen.newest) {
            Ok(newest) => newest,
            Err(error) => {
                let error = match &chosen.older {
                    Some(older) => damaged_over(&mut device, &chosen.newest, older, error),
                    None => error,
                };
                return Err(Unopened { error, device });
            }
        };
        // The older commit's blocks stay untouched while it is valid. If its
        // free space cannot be read it cannot be opened either, so nothing
        // is lost by not protecting it.
        let image_blocks = chosen.newest.block_count.get();
        let older_space = chosen
            .older
            .and_then(|older| space::load(&mut device, &older.free_space_root, image_blocks).ok());
        Ok(Self::from_commit(
            device,
            chosen.newest,
            newest,
            older_space,
        ))
    }

    /// Opens the older commit of an image whose newest commit is damaged,
    /// on an operator's word, and commits it again at once with a record of
    /// the rollback in the superblock ([`Image::rollback_record`]). The
    /// damaged commit's state is discarded for good.
    ///
    /// The new commit goes into the damaged commit's slot, with the
    /// sequence number two past it, so the intact commit's superblock is
    /// never overwritten (a power cut during the rollback leaves the image
    /// as it was) and no sequence number ever names two states. Refused
    /// with [`Error::NothingToRollBack`] when the newest commit opens
    /// cleanly, and with [`Error::RollbackRefused`] when the damaged
    /// commit's metadata still reads and hands the domain over to another
    /// machine: going back would run the domain there and here.
    pub fn open_rolling_back(mut device: D) -> Result<Self, Unopened<D>> {
        let chosen = match choose(&mut device) {
            Ok(chosen) => chosen,
            Err(error) => return Err(Unopened { error, device }),
        };
        let damaged = chosen.newest;
        let damaged_sequence = damaged.sequence.get();
        let cause = match load_commit(&mut device, &damaged) {
            Ok(_) => {
                let error = Error::NothingToRollBack {
                    sequence: damaged_sequence,
                };
                return Err(Unopened { error, device });
            }
            Err(error @ Error::Device(_)) => return Err(Unopened { error, device }),
            Err(error) => error,
        };
        let Some(older) = chosen.older else {
            return Err(Unopened {
                error: cause,
                device,
            });
        };
        let intact = match load_commit(&mut device, &older) {
            Ok(intact) => intact,
            Err(_) => {
                return Err(Unopened {
                    error: cause,
                    device,
                });
            }
        };
        let image_blocks = damaged.block_count.get();
        if let Ok((record, _)) = read_record(&mut device, &damaged.metadata, image_blocks)
            && matches!(record.metadata.migration, Some(Migration::Outgoing { .. }))
        {
            let error = Error::RollbackRefused {
                damaged_sequence,
                reason: "it handed the domain over to another machine, which may run it",
            };
            return Err(Unopened { error, device });
        }
        let next_sequence = match damaged_sequence.checked_add(2) {
            Some(next) => next,
            None => {
                let error = Error::CounterOverflow {
                    counter: Counter::Sequence,
                    value: damaged_sequence,
                };
                return Err(Unopened { error, device });
            }
        };
        let restored_sequence = older.sequence.get();
        // The damaged commit's blocks are not protected: its state is the
        // one being discarded.
        let mut image = Self::from_commit(device, older, intact, None);
        let rollbacks = image.superblock.rollbacks.get().saturating_add(1);
        image.superblock.rollbacks = U64::new(rollbacks);
        image.superblock.rolled_back_from = U64::new(damaged_sequence);
        image.superblock.rolled_back_to = U64::new(restored_sequence);
        image.next_sequence_at_least = next_sequence;
        if let Err(error) = image.commit() {
            return Err(Unopened {
                error,
                device: image.into_device(),
            });
        }
        Ok(image)
    }

    fn from_commit(
        device: D,
        superblock: Superblock,
        commit: LoadedCommit,
        older_space: Option<LoadedSpace>,
    ) -> Self {
        let image_blocks = superblock.block_count.get();
        let mut space = SpaceMap::opened(image_blocks, commit.space, older_space);
        let committed_page_limit = commit.record.metadata.page_limit();
        let (snapshots, snapshot_table_blocks) = match commit.snapshots {
            Some(loaded) => {
                space.set_held(loaded.held);
                (loaded.table, loaded.table_blocks)
            }
            None => (Default::default(), Vec::new()),
        };
        Self {
            device,
            superblock,
            space,
            metadata: commit.record.metadata,
            module: commit.record.module,
            metadata_blocks: commit.metadata_blocks,
            staged_pages: BTreeMap::new(),
            pager_blocks: BTreeSet::new(),
            blocks_written_since_commit: 0,
            pages_staged_since_commit: 0,
            committed_page_limit,
            next_sequence_at_least: 0,
            poisoned: None,
            snapshots,
            snapshot_table_blocks,
            pending_snapshot: None,
            log_tail: commit.log_tail,
            staged_log: Default::default(),
            node_cache: Default::default(),
        }
    }

    /// What the last rollback did, if the image was ever rolled back.
    pub fn rollback_record(&self) -> Option<RollbackRecord> {
        let rollbacks = self.superblock.rollbacks.get();
        (rollbacks > 0).then(|| RollbackRecord {
            rollbacks,
            damaged_sequence: self.superblock.rolled_back_from.get(),
            restored_sequence: self.superblock.rolled_back_to.get(),
        })
    }
}

/// The error for a newest commit that failed with `error`: a
/// [`Error::NewestCommitDamaged`] when the older commit is intact. A device
/// error is no verdict on the commit and stays as it is.
fn damaged_over<D: BlockDevice>(
    device: &mut D,
    newest: &Superblock,
    older: &Superblock,
    error: Error,
) -> Error {
    if matches!(error, Error::Device(_)) || load_commit(device, older).is_err() {
        return error;
    }
    Error::NewestCommitDamaged {
        damaged_sequence: newest.sequence.get(),
        intact_sequence: older.sequence.get(),
        cause: Box::new(error),
    }
}

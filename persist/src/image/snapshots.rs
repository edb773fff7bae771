//! Named snapshots of an image: take, list, apply, delete, and their checks.
//!
//! A snapshot keeps a commit's page-map root and metadata chain, so it
//! shares every block with the live state and with other snapshots until
//! one of them changes it (copy on write). The free-space map knows which
//! blocks a snapshot reaches through the allocator's *held* set: the union
//! of every snapshot's tree and metadata chain, a subset of the blocks in
//! use. Freeing a held block from the live state keeps it in use, so an
//! ordinary commit costs what it did (one bit test per freed block). Taking
//! a snapshot walks only the part of the live tree no snapshot holds yet;
//! applying one walks its tree (to check it and count its pages) and the
//! part of the old live tree no snapshot holds (to free it); deleting one
//! recomputes the held set from the snapshots left and gives back the
//! blocks only the deleted one reached. Each is a commit, so a power cut
//! leaves the old table or the new one.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use super::{Image, read_record};
use crate::blob::{read_chain, write_chain};
use crate::device::BlockDevice;
use crate::error::{Error, Structure};
use crate::layout::{ChainPointer, Pointer, Superblock};
use crate::metadata::Metadata;
use crate::page_map::{self, Bounds, MAX_PAGES, Repeat};
use crate::snapshot::{
    MAX_SNAPSHOTS, MAX_TABLE_BYTES, SnapshotId, SnapshotInfo, SnapshotTable, StoredSnapshot,
    check_tag,
};
use crate::space::Bitmap;

/// A change to the snapshot table that the next commit makes.
#[derive(Debug)]
pub(crate) enum SnapshotChange {
    /// Keep the state this commit makes as a snapshot.
    Create { tag: String, created: u64 },
    /// Make snapshot `id`'s state live; `metadata` is its record's, read
    /// and checked.
    Apply {
        id: u64,
        metadata: alloc::boxed::Box<Metadata>,
    },
    /// Forget snapshot `id`.
    Delete { id: u64 },
    /// Keep a snapshot that came with a migration: its metadata (checked)
    /// and its pages, each in a block this image wrote for it or shares
    /// with the live state, ascending.
    Import {
        tag: String,
        created: u64,
        metadata: alloc::boxed::Box<Metadata>,
        pages: Vec<(u64, Pointer)>,
    },
}

/// A snapshot about to enter the table: its state's page map and record.
struct NewEntry {
    tag: String,
    created: u64,
    clock_ns: u64,
    pages_stored: u64,
    root: Pointer,
    metadata: ChainPointer,
}

/// What a prepared commit does to the snapshots once it is durable.
#[derive(Debug, Default)]
pub(crate) struct SnapshotEffect {
    /// The new table and the blocks of its chain.
    table: Option<(SnapshotTable, Vec<u64>)>,
    /// Blocks that become held.
    hold: Vec<u64>,
    /// A new held set, replacing the old one.
    held: Option<Bitmap>,
    /// The live metadata from now on.
    pub(crate) metadata: Option<Metadata>,
}

/// The snapshots an image has, as opened: the table, its chain's blocks
/// and every block a snapshot reaches.
#[derive(Debug)]
pub(crate) struct LoadedSnapshots {
    pub(crate) table: SnapshotTable,
    pub(crate) table_blocks: Vec<u64>,
    pub(crate) held: Bitmap,
}

/// Bounds for walking a snapshot whose record is not at hand: the image's
/// size and the largest page map (each snapshot's record was checked
/// against its own limit when the image opened).
fn any_bounds(image_blocks: u64) -> Bounds {
    Bounds {
        image_blocks,
        page_limit: MAX_PAGES,
    }
}

/// Reads and checks the snapshot table `superblock` names, every
/// snapshot's metadata record, and every block their page maps reach,
/// each of which `used` must mark in use. The work is bounded by the
/// image's size: a block shared between snapshots is read once (a tree
/// already walked is skipped), and no two snapshots share a metadata
/// block (an honest image writes one chain per snapshot).
pub(crate) fn load<D: BlockDevice>(
    device: &mut D,
    superblock: &Superblock,
    used: &Bitmap,
) -> Result<Option<LoadedSnapshots>, Error> {
    let pointer = superblock.snapshot_table;
    if pointer.first.is_none() {
        return Ok(None);
    }
    let image_blocks = superblock.block_count.get();
    let first_block = pointer.first.block.get();
    if pointer.len_bytes.get() > MAX_TABLE_BYTES {
        return Err(Error::malformed(
            first_block,
            Structure::SnapshotTable,
            "snapshot table longer than any table of snapshots",
        ));
    }
    let (bytes, table_blocks) =
        read_chain(device, &pointer, image_blocks, Structure::SnapshotTable)?;
    let table = SnapshotTable::decode(&bytes)
        .map_err(|reason| Error::malformed(first_block, Structure::SnapshotTable, reason))?;
    let check_used = |block: u64, structure| {
        if used.contains(block) {
            Ok(())
        } else {
            Err(Error::malformed(
                block,
                structure,
                "a block a snapshot reaches is marked free",
            ))
        }
    };
    for &block in &table_blocks {
        check_used(block, Structure::SnapshotTable)?;
    }
    let mut held = Bitmap::new(image_blocks);
    for entry in &table.entries {
        let (record, metadata_blocks) =
            read_record(device, &entry.metadata_pointer(), image_blocks)?;
        for block in metadata_blocks {
            check_used(block, Structure::Metadata)?;
            if held.contains(block) {
                return Err(Error::malformed(
                    block,
                    Structure::Metadata,
                    "two snapshots share a metadata block",
                ));
            }
            held.insert(block);
        }
        let bounds = Bounds {
            image_blocks,
            page_limit: record.metadata.page_limit(),
        };
        let mut reached = Vec::new();
        let mut seen = BTreeSet::new();
        page_map::walk_shared(
            device,
            &entry.page_map_root(),
            bounds,
            &mut |block| !held.contains(block) && seen.insert(block),
            Repeat::Skip,
            &mut |structure, pointer| {
                check_used(pointer.block.get(), structure)?;
                reached.push(pointer.block.get());
                Ok(())
            },
        )?;
        for block in reached {
            held.insert(block);
        }
    }
    Ok(Some(LoadedSnapshots {
        table,
        table_blocks,
        held,
    }))
}

impl StoredSnapshot {
    fn info(&self, exclusive_blocks: u64) -> SnapshotInfo {
        SnapshotInfo {
            id: SnapshotId(self.id),
            tag: self.tag.clone(),
            created: self.created,
            clock_ns: self.clock_ns,
            sequence: self.sequence,
            pages_stored: self.pages_stored,
            exclusive_blocks,
        }
    }
}

impl<D: BlockDevice> Image<D> {
    /// Takes a snapshot tagged `tag` of the state the next commit makes
    /// (the last commit plus what is staged), and makes that commit: when
    /// it returns `Ok` the snapshot is durable; on an error the table is as
    /// it was. `created` is the caller's clock (the kernel's wall clock in
    /// seconds; persist only stores it). The snapshot shares every block
    /// with the live state, so it costs the commit plus a walk of the part
    /// of the page map that no snapshot holds yet.
    pub fn snapshot_create(&mut self, tag: &str, created: u64) -> Result<SnapshotId, Error> {
        check_tag(tag).map_err(Error::InvalidTag)?;
        if self.snapshots.find(tag).is_some() {
            return Err(Error::DuplicateSnapshotTag { tag: tag.into() });
        }
        if self.snapshots.entries.len() >= MAX_SNAPSHOTS {
            return Err(Error::SnapshotTableFull { max: MAX_SNAPSHOTS });
        }
        let id = SnapshotId(self.snapshots.next_id);
        self.commit_with(SnapshotChange::Create {
            tag: tag.into(),
            created,
        })?;
        Ok(id)
    }

    /// The snapshots, oldest first, each with the blocks only it holds.
    /// Finding those walks the live state's and every snapshot's page map
    /// (nodes only, never pages).
    pub fn snapshots(&mut self) -> Result<Vec<SnapshotInfo>, Error> {
        if self.snapshots.entries.is_empty() {
            return Ok(Vec::new());
        }
        let image_blocks = self.image_blocks();
        // Per block: the one tree that reaches it, or `None` when several
        // do. Tree 0 is the live state, tree `n + 1` snapshot `n`.
        let mut owner: BTreeMap<u64, Option<usize>> = BTreeMap::new();
        let reach = |owner: &mut BTreeMap<u64, Option<usize>>, block: u64, tree: usize| {
            owner
                .entry(block)
                .and_modify(|current| {
                    if *current != Some(tree) {
                        *current = None;
                    }
                })
                .or_insert(Some(tree));
        };
        let mut trees = Vec::with_capacity(self.snapshots.entries.len() + 1);
        trees.push((self.superblock.page_map_root, None));
        for entry in &self.snapshots.entries {
            trees.push((entry.page_map_root(), Some(entry.metadata_pointer())));
        }
        for &block in &self.metadata_blocks {
            reach(&mut owner, block, 0);
        }
        for (tree, (root, metadata)) in trees.iter().enumerate() {
            if let Some(metadata) = metadata {
                let (_, blocks) = read_chain(
                    &mut self.device,
                    metadata,
                    image_blocks,
                    Structure::Metadata,
                )?;
                for block in blocks {
                    reach(&mut owner, block, tree);
                }
            }
            let mut seen = BTreeSet::new();
            let mut blocks = Vec::new();
            page_map::walk_shared(
                &mut self.device,
                root,
                any_bounds(image_blocks),
                &mut |block| seen.insert(block),
                Repeat::Refuse,
                &mut |_, pointer| {
                    blocks.push(pointer.block.get());
                    Ok(())
                },
            )?;
            for block in blocks {
                reach(&mut owner, block, tree);
            }
        }
        let mut exclusive = alloc::vec![0u64; trees.len()];
        for tree in owner.values().flatten() {
            exclusive[*tree] += 1;
        }
        Ok(self
            .snapshots
            .entries
            .iter()
            .enumerate()
            .map(|(position, entry)| entry.info(exclusive[position + 1]))
            .collect())
    }

    /// The snapshots' tags, oldest first: from the table in memory, with
    /// no walk (for a name check, where [`Image::snapshots`] would walk
    /// every tree to count blocks).
    pub fn snapshot_tags(&self) -> impl Iterator<Item = &str> {
        self.snapshots
            .entries
            .iter()
            .map(|entry| entry.tag.as_str())
    }

    /// Every snapshot's tag and creation time, oldest first (what a
    /// migration sends of each besides its state).
    pub(crate) fn snapshot_entries(&self) -> Vec<(String, u64)> {
        self.snapshots
            .entries
            .iter()
            .map(|entry| (entry.tag.clone(), entry.created))
            .collect()
    }

    /// How many snapshots the image keeps.
    pub fn snapshot_count(&self) -> usize {
        self.snapshots.entries.len()
    }

    /// Makes the snapshot tagged `tag` the live state, as one commit; the
    /// snapshot stays. The domain's own state comes from the snapshot (its
    /// pages, memory size, globals, suspension, status, clock, network); what
    /// other parties rely on stays the live one (see
    /// [`Metadata::rolled_back_to`]: identity, messaging, counters).
    /// What is staged is dropped. The blocks only the old live state reached
    /// are given back. A snapshot whose page map fails its checks is refused
    /// and nothing changes.
    pub fn snapshot_apply(&mut self, tag: &str) -> Result<super::CommitStats, Error> {
        let entry = self
            .snapshots
            .find(tag)
            .ok_or_else(|| Error::UnknownSnapshot { tag: tag.into() })?;
        let id = entry.id;
        let pointer = entry.metadata_pointer();
        let image_blocks = self.image_blocks();
        let (record, _) = read_record(&mut self.device, &pointer, image_blocks)?;
        let metadata = self.metadata.rolled_back_to(record.metadata);
        self.commit_with(SnapshotChange::Apply {
            id,
            metadata: alloc::boxed::Box::new(metadata),
        })
    }

    /// Keeps a snapshot that arrived with a migration, tagged `tag`, as one
    /// commit (which also commits what is staged): `metadata` is the
    /// snapshot's record, `pages` its stored pages, ascending, each at a
    /// block [`Image::write_free_page`] wrote or one the live state holds
    /// ([`Image::live_page_pointer`]). Its page map is built here. Refused
    /// like [`Image::snapshot_create`] (tag, duplicate, full table), for a
    /// record that does not validate, and for pages out of order or past
    /// the record's memory.
    pub(crate) fn snapshot_import(
        &mut self,
        tag: &str,
        created: u64,
        metadata: Metadata,
        pages: Vec<(u64, Pointer)>,
    ) -> Result<SnapshotId, Error> {
        check_tag(tag).map_err(Error::InvalidTag)?;
        if self.snapshots.find(tag).is_some() {
            return Err(Error::DuplicateSnapshotTag { tag: tag.into() });
        }
        if self.snapshots.entries.len() >= MAX_SNAPSHOTS {
            return Err(Error::SnapshotTableFull { max: MAX_SNAPSHOTS });
        }
        crate::validate(&metadata).map_err(Error::MetadataRefused)?;
        let limit = metadata.page_limit();
        let is_ascending = pages.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !is_ascending || pages.last().is_some_and(|&(index, _)| index >= limit) {
            return Err(Error::InvalidMetadata {
                reason: "an imported snapshot's pages are out of order or past its memory",
            });
        }
        let id = SnapshotId(self.snapshots.next_id);
        self.commit_with(SnapshotChange::Import {
            tag: tag.into(),
            created,
            metadata: alloc::boxed::Box::new(metadata),
            pages,
        })?;
        Ok(id)
    }

    /// Forgets the snapshot tagged `tag`, as one commit, and gives back the
    /// blocks only it held. This walks every remaining snapshot's page map
    /// and the part of the live one they do not hold.
    pub fn snapshot_delete(&mut self, tag: &str) -> Result<super::CommitStats, Error> {
        let id = self
            .snapshots
            .find(tag)
            .ok_or_else(|| Error::UnknownSnapshot { tag: tag.into() })?
            .id;
        self.commit_with(SnapshotChange::Delete { id })
    }

    /// The page indices a snapshot stores and where, ascending (its tree
    /// checked as a tree within its own page range); with its metadata.
    pub(crate) fn snapshot_state(
        &mut self,
        tag: &str,
    ) -> Result<(Metadata, Vec<(u64, Pointer)>), Error> {
        let entry = self
            .snapshots
            .find(tag)
            .ok_or_else(|| Error::UnknownSnapshot { tag: tag.into() })?;
        let root = entry.page_map_root();
        let pointer = entry.metadata_pointer();
        let image_blocks = self.image_blocks();
        let (record, _) = read_record(&mut self.device, &pointer, image_blocks)?;
        let bounds = Bounds {
            image_blocks,
            page_limit: record.metadata.page_limit(),
        };
        let mut pages = Vec::new();
        page_map::walk(
            &mut self.device,
            &root,
            bounds,
            &mut |_| Ok(()),
            &mut |page_index, pointer| {
                pages.push((page_index, *pointer));
                Ok(())
            },
        )?;
        Ok((record.metadata, pages))
    }

    /// Commits with a change to the snapshot table.
    fn commit_with(&mut self, change: SnapshotChange) -> Result<super::CommitStats, Error> {
        self.pending_snapshot = Some(change);
        let result = self.commit();
        self.pending_snapshot = None;
        result
    }

    /// The page-map root and page count a commit with `change` starts
    /// from: for an apply, the snapshot's (checked as a tree), after
    /// dropping the staged pages and the old live blocks no snapshot holds.
    pub(crate) fn prepare_snapshot_pages(
        &mut self,
        change: &SnapshotChange,
    ) -> Result<Option<(Pointer, u64)>, Error> {
        let SnapshotChange::Apply { id, metadata } = change else {
            return Ok(None);
        };
        let image_blocks = self.image_blocks();
        let entry = self
            .snapshots
            .entries
            .iter()
            .find(|entry| entry.id == *id)
            .ok_or(Error::InvalidMetadata {
                reason: "the snapshot to apply left the table",
            })?;
        let root = entry.page_map_root();
        let expected_pages = entry.pages_stored;
        let mut pages = 0u64;
        let mut seen = BTreeSet::new();
        page_map::walk_shared(
            &mut self.device,
            &root,
            Bounds {
                image_blocks,
                page_limit: metadata.page_limit(),
            },
            &mut |block| seen.insert(block),
            Repeat::Refuse,
            &mut |structure, _| {
                pages += u64::from(structure == Structure::Page);
                Ok(())
            },
        )?;
        if pages != expected_pages {
            return Err(Error::malformed(
                root.block.get(),
                Structure::SnapshotTable,
                "a snapshot's page count disagrees with its page map",
            ));
        }
        // The old live state: what no snapshot holds goes back.
        let mut freed = Vec::new();
        let mut seen = BTreeSet::new();
        let bounds = self.committed_bounds();
        let space = &self.space;
        page_map::walk_shared(
            &mut self.device,
            &self.superblock.page_map_root,
            bounds,
            &mut |block| !space.is_held(block) && seen.insert(block),
            Repeat::Skip,
            &mut |_, pointer| {
                freed.push(pointer.block.get());
                Ok(())
            },
        )?;
        for pointer in self.staged_pages.values() {
            if !pointer.is_none() {
                freed.push(pointer.block.get());
            }
        }
        for block in freed {
            self.space.free(block);
        }
        // The live tree is replaced wholesale: its cached nodes go.
        self.node_cache.clear();
        Ok(Some((root, pages)))
    }

    /// Writes the new snapshot table for `change`, once the commit's page
    /// map (`root`, `pages_stored`) and metadata chain (`metadata_pointer`,
    /// `metadata_blocks`) are written; sets the superblock's table and
    /// version. Returns what to do once the commit is durable.
    pub(crate) fn prepare_snapshot_table(
        &mut self,
        change: SnapshotChange,
        superblock: &mut Superblock,
        metadata_pointer: &ChainPointer,
        metadata_blocks: &[u64],
    ) -> Result<SnapshotEffect, Error> {
        let image_blocks = self.image_blocks();
        let mut effect = SnapshotEffect::default();
        let mut table = self.snapshots.clone();
        match change {
            SnapshotChange::Create { tag, created } => {
                let entry = NewEntry {
                    tag,
                    created,
                    clock_ns: self.metadata.clock_ns,
                    pages_stored: superblock.pages_stored.get(),
                    root: superblock.page_map_root,
                    metadata: *metadata_pointer,
                };
                let sequence = superblock.sequence.get();
                effect.hold =
                    self.add_entry(&mut table, entry, sequence, metadata_blocks.to_vec())?;
            }
            SnapshotChange::Import {
                tag,
                created,
                metadata,
                pages,
            } => {
                let root = page_map::Updater {
                    device: &mut self.device,
                    space: &mut self.space,
                    image_blocks,
                    blocks_written: &mut self.blocks_written_since_commit,
                    counts: page_map::UpdateCounts::default(),
                    // Not the live tree's nodes: kept apart.
                    cache: &mut page_map::NodeCache::default(),
                }
                .update(&Pointer::NONE, 0, &pages)?;
                let record = crate::metadata::MetadataRecord {
                    metadata: *metadata,
                    module: self.module,
                };
                let bytes = crate::migrate::encode_record(&record)?;
                let (pointer, blocks) = write_chain(
                    &mut self.device,
                    &mut self.space,
                    &bytes,
                    &mut self.blocks_written_since_commit,
                )?;
                let entry = NewEntry {
                    tag,
                    created,
                    clock_ns: record.metadata.clock_ns,
                    pages_stored: pages.len() as u64,
                    root,
                    metadata: pointer,
                };
                let sequence = superblock.sequence.get();
                effect.hold = self.add_entry(&mut table, entry, sequence, blocks)?;
            }
            SnapshotChange::Apply { mut metadata, .. } => {
                metadata.counters.commits = self.metadata.counters.commits;
                effect.metadata = Some(*metadata);
                // The table is unchanged: no new chain.
                return Ok(effect);
            }
            SnapshotChange::Delete { id } => {
                let Some(position) = table.entries.iter().position(|entry| entry.id == id) else {
                    return Err(Error::InvalidMetadata {
                        reason: "the snapshot to delete left the table",
                    });
                };
                let deleted = table.entries.remove(position);
                let held = self.held_by(&table, image_blocks)?;
                // What the deleted snapshot reached that no other holds ...
                let mut candidates = Vec::new();
                let (_, blocks) = read_chain(
                    &mut self.device,
                    &deleted.metadata_pointer(),
                    image_blocks,
                    Structure::Metadata,
                )?;
                candidates.extend(blocks.into_iter().filter(|&block| !held.contains(block)));
                let mut seen = BTreeSet::new();
                page_map::walk_shared(
                    &mut self.device,
                    &deleted.page_map_root(),
                    any_bounds(image_blocks),
                    &mut |block| !held.contains(block) && seen.insert(block),
                    Repeat::Skip,
                    &mut |_, pointer| {
                        candidates.push(pointer.block.get());
                        Ok(())
                    },
                )?;
                // ... and the live state does not reach goes back.
                let mut live: BTreeSet<u64> = metadata_blocks.iter().copied().collect();
                let mut seen = BTreeSet::new();
                page_map::walk_shared(
                    &mut self.device,
                    &superblock.page_map_root,
                    any_bounds(image_blocks),
                    &mut |block| !held.contains(block) && seen.insert(block),
                    Repeat::Skip,
                    &mut |_, pointer| {
                        live.insert(pointer.block.get());
                        Ok(())
                    },
                )?;
                for block in candidates {
                    if !live.contains(&block) {
                        self.space.release(block);
                    }
                }
                effect.held = Some(held);
            }
        }
        for &block in &self.snapshot_table_blocks {
            self.space.free(block);
        }
        if table.entries.is_empty() {
            superblock.snapshot_table = ChainPointer::default();
            effect.table = Some((table, Vec::new()));
        } else {
            let bytes = table.encode();
            let (pointer, blocks) = write_chain(
                &mut self.device,
                &mut self.space,
                &bytes,
                &mut self.blocks_written_since_commit,
            )?;
            superblock.snapshot_table = pointer;
            effect.table = Some((table, blocks));
        }
        Ok(effect)
    }

    /// Adds `entry` to `table` under the next snapshot number, for the
    /// commit numbered `sequence`; returns the blocks it makes held: `hold`
    /// (its metadata chain) and every block of its tree that no snapshot
    /// holds yet.
    fn add_entry(
        &mut self,
        table: &mut SnapshotTable,
        entry: NewEntry,
        sequence: u64,
        mut hold: Vec<u64>,
    ) -> Result<Vec<u64>, Error> {
        let image_blocks = self.image_blocks();
        let mut seen = BTreeSet::new();
        let space = &self.space;
        page_map::walk_shared(
            &mut self.device,
            &entry.root,
            any_bounds(image_blocks),
            &mut |block| !space.is_held(block) && seen.insert(block),
            Repeat::Skip,
            &mut |_, pointer| {
                hold.push(pointer.block.get());
                Ok(())
            },
        )?;
        table.entries.push(StoredSnapshot {
            id: table.next_id,
            tag: entry.tag,
            created: entry.created,
            clock_ns: entry.clock_ns,
            sequence,
            pages_stored: entry.pages_stored,
            page_map_block: entry.root.block.get(),
            page_map_crc: entry.root.crc.get(),
            metadata_block: entry.metadata.first.block.get(),
            metadata_crc: entry.metadata.first.crc.get(),
            metadata_len_bytes: entry.metadata.len_bytes.get(),
        });
        table.next_id = table.next_id.checked_add(1).ok_or(Error::InvalidMetadata {
            reason: "snapshot numbers exhausted",
        })?;
        Ok(hold)
    }

    /// Every block the snapshots of `table` reach: their page maps and
    /// metadata chains.
    fn held_by(&mut self, table: &SnapshotTable, image_blocks: u64) -> Result<Bitmap, Error> {
        let mut held = self.space.empty_set();
        for entry in &table.entries {
            let (_, blocks) = read_chain(
                &mut self.device,
                &entry.metadata_pointer(),
                image_blocks,
                Structure::Metadata,
            )?;
            for block in blocks {
                held.insert(block);
            }
            let mut reached = Vec::new();
            let mut seen = BTreeSet::new();
            page_map::walk_shared(
                &mut self.device,
                &entry.page_map_root(),
                any_bounds(image_blocks),
                &mut |block| !held.contains(block) && seen.insert(block),
                Repeat::Skip,
                &mut |_, pointer| {
                    reached.push(pointer.block.get());
                    Ok(())
                },
            )?;
            for block in reached {
                held.insert(block);
            }
        }
        Ok(held)
    }

    /// Applies what a durable commit did to the snapshots.
    pub(crate) fn install_snapshot_effect(&mut self, effect: SnapshotEffect) {
        if let Some((table, blocks)) = effect.table {
            self.snapshots = table;
            self.snapshot_table_blocks = blocks;
        }
        self.space.hold(&effect.hold);
        if let Some(held) = effect.held {
            self.space.set_held(held);
        }
    }
}

//! Full checksum walks: `Image::verify` and the blocks a commit reaches.

use alloc::collections::{BTreeMap, BTreeSet};

use crate::blob::{read_chain, read_checked};
use crate::device::BlockDevice;
use crate::error::{Error, Structure};
use crate::image::{Image, read_record};
use crate::layout::Superblock;
use crate::metadata::module_sha256;
use crate::page_map;
use crate::space;
use crate::superblock::{Slot, read_slot};

/// What a successful [`Image::verify`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// The verified commit's sequence number.
    pub sequence: u64,
    /// Blocks read and checked (superblock excluded).
    pub blocks_checked: u64,
    /// Pages among them.
    pub pages_checked: u64,
}

/// Walks every block `superblock` reaches, checking each checksum, and calls
/// `visit` on each block of the live state and the snapshot table in the
/// order met, and `visit_shared` on each block a snapshot reaches (which
/// the live state or another snapshot may reach too; it answers whether the
/// block is new, and only new pages are read). Returns the pages seen.
fn walk_commit<D: BlockDevice>(
    device: &mut D,
    superblock: &Superblock,
    visit: &mut dyn FnMut(u64, Structure) -> Result<(), Error>,
    visit_shared: &mut dyn FnMut(u64, Structure) -> Result<bool, Error>,
) -> Result<(u64, space::LoadedSpace), Error> {
    let image_blocks = superblock.block_count.get();
    let loaded = space::load(device, &superblock.free_space_root, image_blocks)?;
    visit(loaded.root_block, Structure::FreeSpaceRoot)?;
    for location in &loaded.bitmap_locations {
        visit(location.block.get(), Structure::FreeSpaceBitmap)?;
    }
    // The record first: its memory maximum bounds the page map's walk.
    let (record, metadata_blocks) = read_record(device, &superblock.metadata, image_blocks)?;
    for block in metadata_blocks {
        visit(block, Structure::Metadata)?;
    }
    let mut pages = 0u64;
    let mut page_blocks = alloc::vec::Vec::new();
    page_map::walk(
        device,
        &superblock.page_map_root,
        page_map::Bounds {
            image_blocks,
            page_limit: record.metadata.page_limit(),
        },
        &mut |node| visit(node.block.get(), Structure::PageMapNode),
        &mut |_, page| {
            page_blocks.push(*page);
            Ok(())
        },
    )?;
    for page in &page_blocks {
        visit(page.block.get(), Structure::Page)?;
        read_checked(device, page, image_blocks, Structure::Page)?;
        pages += 1;
    }
    let module_pointer = record.module.chain_pointer();
    let (module, module_blocks) =
        read_chain(device, &module_pointer, image_blocks, Structure::Module)?;
    for block in module_blocks {
        visit(block, Structure::Module)?;
    }
    if module_sha256(&module) != record.module.sha256 {
        return Err(Error::ModuleSha256Mismatch);
    }
    crate::log::load(device, &superblock.log, image_blocks, &|_| true)?;
    for pointer in superblock.log.used() {
        visit(pointer.block.get(), Structure::Log)?;
    }
    if pages != superblock.pages_stored.get() {
        return Err(Error::malformed(
            superblock.sequence.get() % 2,
            Structure::Superblock,
            "page count disagrees with the page map",
        ));
    }
    walk_snapshots(device, superblock, visit, visit_shared)?;
    Ok((pages, loaded))
}

/// The snapshot table's blocks, and every block each snapshot reaches,
/// each tree checked as a tree and each page's checksum read once.
fn walk_snapshots<D: BlockDevice>(
    device: &mut D,
    superblock: &Superblock,
    visit: &mut dyn FnMut(u64, Structure) -> Result<(), Error>,
    visit_shared: &mut dyn FnMut(u64, Structure) -> Result<bool, Error>,
) -> Result<(), Error> {
    let pointer = superblock.snapshot_table;
    if pointer.first.is_none() {
        return Ok(());
    }
    let image_blocks = superblock.block_count.get();
    let first_block = pointer.first.block.get();
    if pointer.len_bytes.get() > crate::snapshot::MAX_TABLE_BYTES {
        return Err(Error::malformed(
            first_block,
            Structure::SnapshotTable,
            "snapshot table longer than any table of snapshots",
        ));
    }
    let (bytes, table_blocks) =
        read_chain(device, &pointer, image_blocks, Structure::SnapshotTable)?;
    for block in table_blocks {
        visit(block, Structure::SnapshotTable)?;
    }
    let table = crate::snapshot::SnapshotTable::decode(&bytes)
        .map_err(|reason| Error::malformed(first_block, Structure::SnapshotTable, reason))?;
    for entry in &table.entries {
        let (record, metadata_blocks) =
            read_record(device, &entry.metadata_pointer(), image_blocks)?;
        for block in metadata_blocks {
            visit_shared(block, Structure::Metadata)?;
        }
        let mut nodes = alloc::vec::Vec::new();
        let mut pages = alloc::vec::Vec::new();
        page_map::walk(
            device,
            &entry.page_map_root(),
            page_map::Bounds {
                image_blocks,
                page_limit: record.metadata.page_limit(),
            },
            &mut |node| {
                nodes.push(node.block.get());
                Ok(())
            },
            &mut |_, page| {
                pages.push(*page);
                Ok(())
            },
        )?;
        for block in nodes {
            visit_shared(block, Structure::PageMapNode)?;
        }
        if pages.len() as u64 != entry.pages_stored {
            return Err(Error::malformed(
                first_block,
                Structure::SnapshotTable,
                "a snapshot's page count disagrees with its page map",
            ));
        }
        for page in &pages {
            if visit_shared(page.block.get(), Structure::Page)? {
                read_checked(device, page, image_blocks, Structure::Page)?;
            }
        }
    }
    Ok(())
}

impl<D: BlockDevice> Image<D> {
    /// Reads every block of the last commit and checks its checksum, that no
    /// block is used twice and that the free-space bitmap matches what is
    /// reachable. The error names the first bad block.
    pub fn verify(&mut self) -> Result<VerifyReport, Error> {
        let superblock = self.superblock().clone();
        let mut seen = BTreeMap::new();
        let mut shared = BTreeMap::new();
        let (pages, loaded) = walk_commit(
            self.device_mut(),
            &superblock,
            &mut |block, structure| match seen.insert(block, structure) {
                None => Ok(()),
                Some(_) => Err(Error::malformed(block, structure, "block reached twice")),
            },
            &mut |block, structure| match shared.get(&block) {
                None => {
                    shared.insert(block, structure);
                    Ok(true)
                }
                Some(&other) if other == structure => Ok(false),
                Some(_) => Err(Error::malformed(
                    block,
                    structure,
                    "two snapshots use a block as different structures",
                )),
            },
        )?;
        // A snapshot's block may be the live state's or another snapshot's,
        // as the same structure; never a block used as something else.
        for (&block, &structure) in &shared {
            match seen.get(&block) {
                None => {
                    seen.insert(block, structure);
                }
                Some(&other) if other == structure => {}
                Some(_) => {
                    return Err(Error::malformed(
                        block,
                        structure,
                        "a snapshot's block is used as another structure",
                    ));
                }
            }
        }
        let seen: BTreeSet<u64> = seen.into_keys().collect();
        for &block in &seen {
            let is_free_space_block = block == loaded.root_block
                || loaded
                    .bitmap_locations
                    .iter()
                    .any(|location| location.block.get() == block);
            if !is_free_space_block && !loaded.used.contains(block) {
                return Err(Error::malformed(
                    block,
                    Structure::FreeSpaceBitmap,
                    "a reachable block is marked free",
                ));
            }
        }
        let free_space_blocks = 1 + loaded.bitmap_locations.len() as u64;
        if loaded.used.count() + free_space_blocks != seen.len() as u64 {
            return Err(Error::malformed(
                loaded.root_block,
                Structure::FreeSpaceBitmap,
                "the bitmap marks blocks in use that nothing reaches",
            ));
        }
        Ok(VerifyReport {
            sequence: superblock.sequence.get(),
            blocks_checked: seen.len() as u64,
            pages_checked: pages,
        })
    }
}

/// Every block reachable from either valid superblock of `device` (the
/// superblocks themselves included): the blocks no commit may overwrite.
/// A valid superblock whose commit cannot be walked is an error.
pub fn reachable_blocks<D: BlockDevice>(device: &mut D) -> Result<BTreeSet<u64>, Error> {
    let mut reachable = BTreeSet::from([0, 1]);
    for slot in 0..2 {
        if let Slot::Valid(superblock) = read_slot(device, slot)? {
            let mut shared = BTreeSet::new();
            walk_commit(
                device,
                &superblock,
                &mut |block, _| {
                    reachable.insert(block);
                    Ok(())
                },
                &mut |block, _| Ok(shared.insert(block)),
            )?;
            reachable.extend(shared);
        }
    }
    Ok(reachable)
}

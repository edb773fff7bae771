//! Full checksum walks: `Image::verify` and the blocks a commit reaches.

use alloc::collections::BTreeSet;

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
/// `visit` on each block in the order met. Returns the pages seen.
fn walk_commit<D: BlockDevice>(
    device: &mut D,
    superblock: &Superblock,
    visit: &mut dyn FnMut(u64, Structure) -> Result<(), Error>,
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
    if pages != superblock.pages_stored.get() {
        return Err(Error::malformed(
            superblock.sequence.get() % 2,
            Structure::Superblock,
            "page count disagrees with the page map",
        ));
    }
    Ok((pages, loaded))
}

impl<D: BlockDevice> Image<D> {
    /// Reads every block of the last commit and checks its checksum, that no
    /// block is used twice and that the free-space bitmap matches what is
    /// reachable. The error names the first bad block.
    pub fn verify(&mut self) -> Result<VerifyReport, Error> {
        let superblock = self.superblock().clone();
        let mut seen = BTreeSet::new();
        let (pages, loaded) =
            walk_commit(self.device_mut(), &superblock, &mut |block, structure| {
                if seen.insert(block) {
                    Ok(())
                } else {
                    Err(Error::malformed(block, structure, "block reached twice"))
                }
            })?;
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
            walk_commit(device, &superblock, &mut |block, _| {
                reachable.insert(block);
                Ok(())
            })?;
        }
    }
    Ok(reachable)
}

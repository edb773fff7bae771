//! Committed page locations: what a round compares, reads and checks.
//!
//! With copy-on-write every commit that changes a page puts it in a new
//! block, so the committed map from page index to `(block, CRC)` tells which
//! pages changed between two snapshots without reading a single page.

use alloc::vec::Vec;

use crate::PAGE_SIZE;
use crate::blob::read_checked;
use crate::device::BlockDevice;
use crate::error::{Error, Structure};
use crate::image::{Image, PageLocation};
use crate::layout::Pointer;
use crate::page_map;

use super::wire::CRC;

/// Every page the last commit stores and where, ascending by page index.
/// Staged, uncommitted pages are ignored: a migration moves committed state.
pub(crate) fn committed_locations<D: BlockDevice>(
    image: &mut Image<D>,
) -> Result<Vec<(u64, PageLocation)>, Error> {
    let root = image.superblock().page_map_root;
    let bounds = image.committed_bounds();
    let mut locations = Vec::new();
    page_map::walk(
        image.device_mut(),
        &root,
        bounds,
        &mut |_| Ok(()),
        &mut |page_index, pointer| {
            locations.push((
                page_index,
                PageLocation {
                    block: pointer.block.get(),
                    crc: pointer.crc.get(),
                },
            ));
            Ok(())
        },
    )?;
    Ok(locations)
}

/// Reads the page at `location`, checking its CRC.
pub(crate) fn read_location<D: BlockDevice>(
    image: &mut Image<D>,
    location: PageLocation,
) -> Result<[u8; PAGE_SIZE], Error> {
    let image_blocks = image.superblock().block_count.get();
    read_checked(
        image.device_mut(),
        &Pointer::new(location.block, location.crc),
        image_blocks,
        Structure::Page,
    )
}

/// A CRC-32C over every stored page's index and CRC, in page order: source
/// and target compute it over their own maps, so it checks the whole
/// image's pages end to end without reading them.
pub fn pages_digest(pages: impl IntoIterator<Item = (u64, u32)>) -> u32 {
    let mut digest = CRC.digest();
    for (page_index, crc) in pages {
        digest.update(&page_index.to_le_bytes());
        digest.update(&crc.to_le_bytes());
    }
    digest.finalize()
}

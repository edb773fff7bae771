//! The copy-on-write radix page map: page index to block and page checksum.
//!
//! Three levels of 256-entry nodes cover 2^24 pages (64 GiB, beyond wasm32's
//! 4 GiB). Every pointer carries the CRC-32C of the block it names, so a node
//! or page is checked by its parent. The height is fixed, so a commit of `k`
//! dirty pages writes at most `k` pages plus `3k` nodes (far fewer when the
//! pages are close together), whatever the memory size.

use alloc::boxed::Box;

use zerocopy::IntoBytes;

use crate::blob::read_checked;
use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{Error, Structure};
use crate::layout::{NODE_FANOUT, Node, Pointer, crc32c};
use crate::space::SpaceMap;

/// Levels of nodes from the root to the pointers to pages.
pub const PAGE_MAP_HEIGHT: u32 = 3;

/// Pages the page map can address.
pub const MAX_PAGES: u64 = (NODE_FANOUT as u64).pow(PAGE_MAP_HEIGHT);

const DIGIT_BITS: u32 = NODE_FANOUT.trailing_zeros();

/// The slot of `page_index` in a node at `level` (0 = root).
fn digit(page_index: u64, level: u32) -> usize {
    let shift = DIGIT_BITS * (PAGE_MAP_HEIGHT - 1 - level);
    ((page_index >> shift) as usize) & (NODE_FANOUT - 1)
}

/// Reads and checks the node a pointer names.
pub(crate) fn read_node<D: BlockDevice>(
    device: &mut D,
    pointer: &Pointer,
    image_blocks: u64,
) -> Result<Box<Node>, Error> {
    let buffer = read_checked(device, pointer, image_blocks, Structure::PageMapNode)?;
    let mut node: Box<Node> = Box::new([Pointer::NONE; NODE_FANOUT]);
    node.as_mut_bytes().copy_from_slice(&buffer);
    Ok(node)
}

/// The pointer to page `page_index`'s block (none when the page is absent).
pub(crate) fn lookup<D: BlockDevice>(
    device: &mut D,
    root: &Pointer,
    page_index: u64,
    image_blocks: u64,
) -> Result<Pointer, Error> {
    let mut pointer = *root;
    for level in 0..PAGE_MAP_HEIGHT {
        if pointer.is_none() {
            return Ok(Pointer::NONE);
        }
        let node = read_node(device, &pointer, image_blocks)?;
        pointer = node[digit(page_index, level)];
    }
    Ok(pointer)
}

/// What a commit's page-map update did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UpdateCounts {
    pub(crate) pages_added: u64,
    pub(crate) pages_removed: u64,
}

/// Everything an update needs besides the changes.
pub(crate) struct Updater<'a, D> {
    pub(crate) device: &'a mut D,
    pub(crate) space: &'a mut SpaceMap,
    pub(crate) image_blocks: u64,
    pub(crate) blocks_written: &'a mut u64,
    pub(crate) counts: UpdateCounts,
}

impl<D: BlockDevice> Updater<'_, D> {
    /// Applies `changes` (sorted by page index; a none pointer removes the
    /// page) below the node `old` at `level`, copy-on-write. Returns the new
    /// node's pointer (none when it became empty).
    pub(crate) fn update(
        &mut self,
        old: &Pointer,
        level: u32,
        changes: &[(u64, Pointer)],
    ) -> Result<Pointer, Error> {
        let mut node = if old.is_none() {
            Box::new([Pointer::NONE; NODE_FANOUT])
        } else {
            read_node(self.device, old, self.image_blocks)?
        };
        if level + 1 == PAGE_MAP_HEIGHT {
            for (page_index, new) in changes {
                let slot = &mut node[digit(*page_index, level)];
                if slot.is_none() {
                    self.counts.pages_added += u64::from(!new.is_none());
                } else {
                    self.space.free(slot.block.get());
                    self.counts.pages_removed += u64::from(new.is_none());
                }
                *slot = *new;
            }
        } else {
            let mut rest = changes;
            while let Some((first_page, _)) = rest.first() {
                let slot_index = digit(*first_page, level);
                let group_len = rest
                    .iter()
                    .take_while(|(page_index, _)| digit(*page_index, level) == slot_index)
                    .count();
                let (group, after) = rest.split_at(group_len);
                let child = node[slot_index];
                node[slot_index] = self.update(&child, level + 1, group)?;
                rest = after;
            }
        }
        if !old.is_none() {
            self.space.free(old.block.get());
        }
        if node.iter().all(Pointer::is_none) {
            return Ok(Pointer::NONE);
        }
        let block = self.space.allocate()?;
        let mut buffer = [0u8; BLOCK_SIZE];
        buffer.copy_from_slice(node.as_bytes());
        self.device.write_block(block, &buffer)?;
        *self.blocks_written += 1;
        Ok(Pointer::new(block, crc32c(&buffer)))
    }
}

/// Calls `visit(page_index, pointer)` for every stored page, in order, and
/// `visit_node(pointer)` for every node; stops at the first error.
pub(crate) fn walk<D: BlockDevice>(
    device: &mut D,
    root: &Pointer,
    image_blocks: u64,
    visit_node: &mut dyn FnMut(&Pointer) -> Result<(), Error>,
    visit_page: &mut dyn FnMut(u64, &Pointer) -> Result<(), Error>,
) -> Result<(), Error> {
    fn walk_level<D: BlockDevice>(
        device: &mut D,
        pointer: &Pointer,
        level: u32,
        prefix: u64,
        image_blocks: u64,
        visit_node: &mut dyn FnMut(&Pointer) -> Result<(), Error>,
        visit_page: &mut dyn FnMut(u64, &Pointer) -> Result<(), Error>,
    ) -> Result<(), Error> {
        visit_node(pointer)?;
        let node = read_node(device, pointer, image_blocks)?;
        for (slot_index, child) in node.iter().enumerate() {
            if child.is_none() {
                continue;
            }
            let index = (prefix << DIGIT_BITS) | slot_index as u64;
            if level + 1 == PAGE_MAP_HEIGHT {
                visit_page(index, child)?;
            } else {
                walk_level(
                    device,
                    child,
                    level + 1,
                    index,
                    image_blocks,
                    visit_node,
                    visit_page,
                )?;
            }
        }
        Ok(())
    }
    if root.is_none() {
        return Ok(());
    }
    walk_level(device, root, 0, 0, image_blocks, visit_node, visit_page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_split_a_page_index_from_the_root_down() {
        let page_index = 0x12_34_56;
        assert_eq!(digit(page_index, 0), 0x12);
        assert_eq!(digit(page_index, 1), 0x34);
        assert_eq!(digit(page_index, 2), 0x56);
        assert_eq!(MAX_PAGES, 1 << 24);
    }
}

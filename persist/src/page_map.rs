//! The copy-on-write radix page map: page index to block and page checksum.
//!
//! Three levels of 256-entry nodes cover 2^24 pages (64 GiB, beyond wasm32's
//! 4 GiB). Every pointer carries the CRC-32C of the block it names, so a node
//! or page is checked by its parent. The height is fixed, so a commit of `k`
//! dirty pages writes at most `k` pages plus `3k` nodes (far fewer when the
//! pages are close together), whatever the memory size.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

use zerocopy::IntoBytes;

use crate::blob::read_checked;
use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{Error, Structure};
use crate::layout::{NODE_FANOUT, Node, Pointer, crc32c};
use crate::space::{Bitmap, SpaceMap};

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

/// The page-map nodes the last commits wrote, by block, so that the next
/// commit's update of the same paths does not read them back: a kernel
/// commit of one page read its three path nodes from the disk, one request
/// each, between its writes. An entry is the node the [`Updater`] last
/// wrote to its block, with its CRC; the updater drops a node when its
/// tree does (copy on write frees it), and a read must match the CRC its
/// pointer carries. At most [`NodeCache::CAPACITY`] nodes, the oldest
/// written going first (an update writes leaves first, the root last).
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    nodes: BTreeMap<u64, (u32, Box<Node>)>,
    /// Blocks in the order their nodes were written.
    order: alloc::collections::VecDeque<u64>,
}

impl NodeCache {
    /// Nodes kept: the root, the middle nodes and the leaves of the pages
    /// a small commit touches (64 KiB).
    const CAPACITY: usize = 16;

    /// The node `pointer` names, if kept.
    fn get(&self, pointer: &Pointer) -> Option<Box<Node>> {
        let (crc, node) = self.nodes.get(&pointer.block.get())?;
        (*crc == pointer.crc.get()).then(|| node.clone())
    }

    fn insert(&mut self, block: u64, crc: u32, node: Box<Node>) {
        if self.nodes.insert(block, (crc, node)).is_none() {
            self.order.push_back(block);
        }
        while self.nodes.len() > Self::CAPACITY {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.nodes.remove(&oldest);
        }
    }

    fn remove(&mut self, block: u64) {
        if self.nodes.remove(&block).is_some() {
            self.order.retain(|&kept| kept != block);
        }
    }

    /// Forgets every node (the live tree was replaced wholesale).
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.order.clear();
    }
}

/// Everything an update needs besides the changes.
pub(crate) struct Updater<'a, D> {
    pub(crate) device: &'a mut D,
    pub(crate) space: &'a mut SpaceMap,
    pub(crate) image_blocks: u64,
    pub(crate) blocks_written: &'a mut u64,
    pub(crate) counts: UpdateCounts,
    pub(crate) cache: &'a mut NodeCache,
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
        } else if let Some(node) = self.cache.get(old) {
            node
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
            self.cache.remove(old.block.get());
        }
        if node.iter().all(Pointer::is_none) {
            return Ok(Pointer::NONE);
        }
        let block = self.space.allocate()?;
        // A block the cache held an older node for is written anew.
        self.cache.remove(block);
        let mut buffer = [0u8; BLOCK_SIZE];
        buffer.copy_from_slice(node.as_bytes());
        self.device.write_block(block, &buffer)?;
        *self.blocks_written += 1;
        let crc = crc32c(&buffer);
        self.cache.insert(block, crc, node);
        Ok(Pointer::new(block, crc))
    }
}

/// What a walk of the page map may meet: the image's size and the domain's
/// page range. A page map that breaks them is refused before anything is
/// allocated per entry, so a hostile image costs at most one bitmap of its
/// own size and one read per block it has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Blocks in the image: every pointer must name one of them.
    pub(crate) image_blocks: u64,
    /// The first page index past the domain's memory maximum.
    pub(crate) page_limit: u64,
}

/// Pages below one entry of a node at `level` (0 = root).
fn pages_per_entry(level: u32) -> u64 {
    1 << (DIGIT_BITS * (PAGE_MAP_HEIGHT - 1 - level))
}

/// Calls `visit(page_index, pointer)` for every stored page, in order, and
/// `visit_node(pointer)` for every node; stops at the first error.
///
/// The walk checks that the map is a tree within `bounds`: every node and
/// page block is reached once (nodes that share children, or a page block
/// named twice, are refused, which bounds the work by the image's block
/// count), the depth is [`PAGE_MAP_HEIGHT`] by construction, and no entry
/// lies at or past the page limit (checked at every level, before descending).
/// Its memory is one bit per image block.
pub(crate) fn walk<D: BlockDevice>(
    device: &mut D,
    root: &Pointer,
    bounds: Bounds,
    visit_node: &mut dyn FnMut(&Pointer) -> Result<(), Error>,
    visit_page: &mut dyn FnMut(u64, &Pointer) -> Result<(), Error>,
) -> Result<(), Error> {
    struct Walk<'a, D> {
        device: &'a mut D,
        bounds: Bounds,
        reached: Bitmap,
        visit_node: &'a mut dyn FnMut(&Pointer) -> Result<(), Error>,
        visit_page: &'a mut dyn FnMut(u64, &Pointer) -> Result<(), Error>,
    }

    impl<D: BlockDevice> Walk<'_, D> {
        /// Marks `pointer`'s block reached, refusing a second visit.
        fn reach(&mut self, pointer: &Pointer, structure: Structure) -> Result<(), Error> {
            let block = pointer.block.get();
            if block < 2 || block >= self.bounds.image_blocks {
                return Err(Error::BadPointer { block, structure });
            }
            if self.reached.contains(block) {
                return Err(Error::malformed(
                    block,
                    structure,
                    "block reached twice: the page map is not a tree",
                ));
            }
            self.reached.insert(block);
            Ok(())
        }

        fn level(&mut self, pointer: &Pointer, level: u32, prefix: u64) -> Result<(), Error> {
            self.reach(pointer, Structure::PageMapNode)?;
            (self.visit_node)(pointer)?;
            let node = read_node(self.device, pointer, self.bounds.image_blocks)?;
            for (slot_index, child) in node.iter().enumerate() {
                if child.is_none() {
                    continue;
                }
                let index = (prefix << DIGIT_BITS) | slot_index as u64;
                // The first page below this entry must be a page the domain
                // can have: refused here, before a single child is read.
                if index.saturating_mul(pages_per_entry(level)) >= self.bounds.page_limit {
                    return Err(Error::malformed(
                        pointer.block.get(),
                        Structure::PageMapNode,
                        "an entry lies past the domain's memory maximum",
                    ));
                }
                if level + 1 == PAGE_MAP_HEIGHT {
                    self.reach(child, Structure::Page)?;
                    (self.visit_page)(index, child)?;
                } else {
                    self.level(child, level + 1, index)?;
                }
            }
            Ok(())
        }
    }

    if root.is_none() {
        return Ok(());
    }
    let mut walk = Walk {
        device,
        bounds,
        reached: Bitmap::new(bounds.image_blocks),
        visit_node,
        visit_page,
    };
    walk.level(root, 0, 0)
}

/// What [`walk_shared`] does on meeting a block `is_new` calls not new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Skip it and everything below it: a block seen already (a subtree
    /// shared between snapshots, or one a snapshot holds) is not walked
    /// again.
    Skip,
    /// Refuse the map: within one tree a block is reached once.
    Refuse,
}

/// A walk of the page map under `root` that visits each node and page for
/// which `is_new(block)` holds, and treats the others as `repeat` says.
/// Every pointer lies within the image and every entry below the page
/// limit (checked before descending), so the work is one read per new
/// node; the caller's `is_new` bounds it over several trees.
pub(crate) fn walk_shared<D: BlockDevice>(
    device: &mut D,
    root: &Pointer,
    bounds: Bounds,
    is_new: &mut dyn FnMut(u64) -> bool,
    repeat: Repeat,
    visit: &mut dyn FnMut(Structure, &Pointer) -> Result<(), Error>,
) -> Result<(), Error> {
    fn reach(
        pointer: &Pointer,
        structure: Structure,
        bounds: Bounds,
        is_new: &mut dyn FnMut(u64) -> bool,
        repeat: Repeat,
    ) -> Result<bool, Error> {
        let block = pointer.block.get();
        if block < 2 || block >= bounds.image_blocks {
            return Err(Error::BadPointer { block, structure });
        }
        if is_new(block) {
            return Ok(true);
        }
        match repeat {
            Repeat::Skip => Ok(false),
            Repeat::Refuse => Err(Error::malformed(
                block,
                structure,
                "block reached twice: the page map is not a tree",
            )),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one recursive step of the walk above, which holds them all"
    )]
    fn level<D: BlockDevice>(
        device: &mut D,
        pointer: &Pointer,
        level_index: u32,
        prefix: u64,
        bounds: Bounds,
        is_new: &mut dyn FnMut(u64) -> bool,
        repeat: Repeat,
        visit: &mut dyn FnMut(Structure, &Pointer) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if !reach(pointer, Structure::PageMapNode, bounds, is_new, repeat)? {
            return Ok(());
        }
        visit(Structure::PageMapNode, pointer)?;
        let node = read_node(device, pointer, bounds.image_blocks)?;
        for (slot_index, child) in node.iter().enumerate() {
            if child.is_none() {
                continue;
            }
            let index = (prefix << DIGIT_BITS) | slot_index as u64;
            if index.saturating_mul(pages_per_entry(level_index)) >= bounds.page_limit {
                return Err(Error::malformed(
                    pointer.block.get(),
                    Structure::PageMapNode,
                    "an entry lies past the domain's memory maximum",
                ));
            }
            if level_index + 1 == PAGE_MAP_HEIGHT {
                if reach(child, Structure::Page, bounds, is_new, repeat)? {
                    visit(Structure::Page, child)?;
                }
            } else {
                level(
                    device,
                    child,
                    level_index + 1,
                    index,
                    bounds,
                    is_new,
                    repeat,
                    visit,
                )?;
            }
        }
        Ok(())
    }

    if root.is_none() {
        return Ok(());
    }
    level(device, root, 0, 0, bounds, is_new, repeat, visit)
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

//! Support for a pager that reads and writes pages without going through the image.
//!
//! The kernel pages a domain's memory in and out on page faults, where it may
//! not allocate or take the image's locks. So it asks the image, outside the
//! fault path, where every stored page lives ([`Image::page_locations`]) and
//! for a pool of free blocks ([`Image::reserve_blocks`]). On a fault it reads
//! a page straight from its block (checking the CRC itself); to evict a dirty
//! page it writes it to a reserved block. Back outside the fault path it
//! hands such pages to the image with [`Image::adopt_page`], which stages
//! them exactly as [`Image::stage_page`] would have: copy-on-write, never
//! over committed state, durable with the next commit.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::Image;
use crate::PAGE_SIZE;
use crate::device::BlockDevice;
use crate::error::{Error, Structure};
use crate::layout::{Pointer, crc32c};
use crate::page_map;

/// Where a stored page's bytes are: a block of the device and the CRC-32C
/// of its [`PAGE_SIZE`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLocation {
    pub block: u64,
    pub crc: u32,
}

impl PageLocation {
    /// The location of `page` written to `block`.
    pub fn of(block: u64, page: &[u8; PAGE_SIZE]) -> Self {
        Self {
            block,
            crc: crc32c(page),
        }
    }

    fn from_pointer(pointer: &Pointer) -> Option<Self> {
        (!pointer.is_none()).then(|| Self {
            block: pointer.block.get(),
            crc: pointer.crc.get(),
        })
    }
}

impl<D: BlockDevice> Image<D> {
    /// Every stored page and where it is (staged pages over the last
    /// commit), ascending; absent pages read as zeros. One walk of the page
    /// map: it reads the map's nodes, never the pages.
    pub fn page_locations(&mut self) -> Result<Vec<(u64, PageLocation)>, Error> {
        let bounds = self.committed_bounds();
        let mut committed = Vec::new();
        page_map::walk(
            &mut self.device,
            &self.superblock.page_map_root,
            bounds,
            &mut |_| Ok(()),
            &mut |page_index, pointer| {
                if let Some(location) = PageLocation::from_pointer(pointer) {
                    committed.push((page_index, location));
                }
                Ok(())
            },
        )?;
        if self.staged_pages.is_empty() {
            return Ok(committed);
        }
        let mut merged: BTreeMap<u64, PageLocation> = committed.into_iter().collect();
        for (&page_index, pointer) in &self.staged_pages {
            match PageLocation::from_pointer(pointer) {
                Some(location) => merged.insert(page_index, location),
                None => merged.remove(&page_index),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// The pages staged for the next commit and where they are (`None`: the
    /// page is staged as zeros). Taken just before a commit, this is where
    /// the commit puts them.
    pub fn staged_locations(&self) -> Vec<(u64, Option<PageLocation>)> {
        self.staged_pages
            .iter()
            .map(|(&page_index, pointer)| (page_index, PageLocation::from_pointer(pointer)))
            .collect()
    }

    /// Takes `count` free blocks for a pager to write pages into. They
    /// belong to no commit, whatever commits happen meanwhile: until
    /// [`Image::adopt_page`] takes one, a power cut leaves it free. Fails
    /// with [`Error::NoSpace`] (reserving none) when fewer are free.
    pub fn reserve_blocks(&mut self, count: usize) -> Result<Vec<u64>, Error> {
        self.check_not_poisoned()?;
        let mut blocks = Vec::with_capacity(count);
        for _ in 0..count {
            match self.space.pin() {
                Ok(block) => blocks.push(block),
                Err(error) => {
                    for &block in &blocks {
                        self.space.unpin(block);
                    }
                    return Err(error);
                }
            }
        }
        self.pager_blocks.extend(blocks.iter().copied());
        Ok(blocks)
    }

    /// Gives back reserved blocks the pager did not use.
    pub fn release_blocks(&mut self, blocks: &[u64]) {
        for block in blocks {
            if self.pager_blocks.remove(block) {
                self.space.unpin(*block);
            }
        }
    }

    /// Stages page `page_index` as the bytes a pager wrote to a reserved
    /// block, as [`Image::stage_page`] would have. The CRC is the pager's
    /// word: it is checked whenever the page is read back.
    pub fn adopt_page(&mut self, page_index: u64, location: PageLocation) -> Result<(), Error> {
        self.check_not_poisoned()?;
        self.check_page_index(page_index)?;
        if !self.pager_blocks.remove(&location.block) {
            return Err(Error::BadPointer {
                block: location.block,
                structure: Structure::Page,
            });
        }
        self.space.adopt(location.block);
        self.blocks_written_since_commit += 1;
        self.pages_staged_since_commit += 1;
        let pointer = Pointer::new(location.block, location.crc);
        if let Some(replaced) = self.staged_pages.insert(page_index, pointer)
            && !replaced.is_none()
        {
            self.space.free(replaced.block.get());
        }
        Ok(())
    }

    /// Blocks reserved for a pager and not adopted.
    pub fn reserved_block_count(&self) -> usize {
        self.pager_blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::device::{BLOCK_SIZE, MemoryDevice};
    use crate::image::NewDomain;

    fn new_image() -> Image<MemoryDevice> {
        Image::create(
            MemoryDevice::new(256),
            NewDomain {
                id: abi::DomainId(7),
                name: "paged",
                module: b"\0asm\x01\0\0\0",
                memory_pages: 1,
                memory_max_pages: 4,
                args: vec![],
                env: vec![],
                network: Default::default(),
            },
        )
        .unwrap()
    }

    fn page_of(byte: u8) -> [u8; PAGE_SIZE] {
        [byte; PAGE_SIZE]
    }

    #[test]
    fn locations_merge_staged_over_committed() {
        let mut image = new_image();
        image.stage_page(1, &page_of(1)).unwrap();
        image.stage_page(3, &page_of(3)).unwrap();
        image.stage_page(5, &page_of(5)).unwrap();
        image.commit().unwrap();
        image.stage_page(3, &page_of(0)).unwrap();
        image.stage_page(4, &page_of(4)).unwrap();
        image.stage_page(5, &page_of(9)).unwrap();
        let locations = image.page_locations().unwrap();
        let pages: Vec<u64> = locations.iter().map(|(page, _)| *page).collect();
        assert_eq!(pages, vec![1, 4, 5]);
        for (page_index, location) in locations {
            let mut block = [0u8; BLOCK_SIZE];
            image
                .device_mut()
                .read_block(location.block, &mut block)
                .unwrap();
            assert_eq!(crc32c(&block), location.crc);
            let mut read = [0u8; PAGE_SIZE];
            image.read_page(page_index, &mut read).unwrap();
            assert_eq!(read, block);
        }
        let staged = image.staged_locations();
        assert_eq!(staged.len(), 3);
        assert_eq!(staged[0], (3, None));
    }

    #[test]
    fn an_adopted_page_reads_back_and_survives_reopen() {
        let mut image = new_image();
        let blocks = image.reserve_blocks(4).unwrap();
        assert_eq!(image.reserved_block_count(), 4);
        let page = page_of(0xab);
        image.device_mut().write_block(blocks[2], &page).unwrap();
        image
            .adopt_page(2, PageLocation::of(blocks[2], &page))
            .unwrap();
        // Adopting a block that is not reserved (or twice) is refused.
        assert!(
            image
                .adopt_page(3, PageLocation::of(blocks[2], &page))
                .is_err()
        );
        image.commit().unwrap();
        // The unused three stay lent across the commit, and the commit does
        // not write them down as used.
        assert_eq!(image.reserved_block_count(), 3);
        image.verify().unwrap();
        let device = image.into_device();
        let mut image = Image::open(device).unwrap();
        let mut read = [0u8; PAGE_SIZE];
        image.read_page(2, &mut read).unwrap();
        assert_eq!(read, page);
        assert_eq!(image.page_locations().unwrap()[0].0, 2);
    }

    #[test]
    fn reserved_blocks_are_never_handed_out_twice() {
        let mut image = new_image();
        let reserved = image.reserve_blocks(8).unwrap();
        for round in 0..4 {
            for page_index in 0..16 {
                image.stage_page(page_index, &page_of(round + 1)).unwrap();
            }
            for (_, location) in image.staged_locations() {
                let block = location.unwrap().block;
                assert!(!reserved.contains(&block), "block {block} was reserved");
            }
            image.commit().unwrap();
            image.verify().unwrap();
        }
        image.release_blocks(&reserved);
        assert_eq!(image.reserved_block_count(), 0);
    }

    #[test]
    fn a_wrong_crc_is_caught_on_read() {
        let mut image = new_image();
        let blocks = image.reserve_blocks(1).unwrap();
        let page = page_of(5);
        image.device_mut().write_block(blocks[0], &page).unwrap();
        let wrong = PageLocation {
            block: blocks[0],
            crc: 1,
        };
        image.adopt_page(0, wrong).unwrap();
        let mut read = [0u8; PAGE_SIZE];
        assert!(matches!(
            image.read_page(0, &mut read),
            Err(Error::ChecksumMismatch { .. })
        ));
    }
}

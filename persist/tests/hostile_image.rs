//! Hostile images, every checksum right, refused cheaply and by name.
//!
//! Issue 16's hostile images: page-map nodes that share their children (4
//! blocks that would expand to 16.7 M entries), a fan-out of 16 over shared
//! nodes, entries past the domain's memory, a sequence number at `u64::MAX`,
//! counters at their limits. Each is forged by `bodies::forge`, which signs
//! every CRC again, and each is refused by opening with a typed error. Cheap
//! is measured, not timed: the device counts the blocks opening reads (its
//! memory is one bitmap of the image's size whatever the page map claims,
//! so a bound on reads is a bound on the entries it could have collected).

mod common;

#[path = "../fuzz/bodies/forge.rs"]
#[allow(dead_code, reason = "the tests use part of the forge")]
mod forge;

use common::page;
use forge::Forge;
use persist::{
    BLOCK_SIZE, BlockDevice, Counter, DeviceError, Error, Image, MemoryDevice, NewDomain, Structure,
};

/// A memory device that counts the blocks read from it.
struct CountingDevice {
    inner: MemoryDevice,
    reads: u64,
}

impl BlockDevice for CountingDevice {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.reads += 1;
        self.inner.read_block(index, buffer)
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.inner.write_block(index, buffer)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.inner.flush()
    }

    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
}

/// What opening `bytes` cost and said.
struct Opened {
    error: Error,
    blocks_read: u64,
}

/// Opens `bytes`, which must be refused, counting the blocks read.
fn open_refused(bytes: Vec<u8>) -> Opened {
    let mut device = CountingDevice {
        inner: MemoryDevice::from_bytes(bytes),
        reads: 0,
    };
    let error = match Image::open(&mut device) {
        Ok(_) => panic!("a hostile image opened"),
        Err(error) => error,
    };
    Opened {
        error,
        blocks_read: device.reads,
    }
}

/// Blocks of the images forged here: few are used, so blocks 100 on are
/// free for forged nodes and pages.
const IMAGE_BLOCKS: u64 = 128;

/// One commit (the creation, in slot 1) of a domain allowed `memory_max_pages`.
fn created(memory_max_pages: u64) -> Forge {
    let image = Image::create(
        MemoryDevice::new(IMAGE_BLOCKS),
        NewDomain {
            id: persist::DomainId(0x0bad),
            name: "hostile",
            module: common::MODULE,
            memory_pages: 1,
            memory_max_pages,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .unwrap();
    Forge::new(image.into_device().into_bytes())
}

/// The slot of the creation commit.
const SLOT: u64 = 1;

fn assert_malformed(error: &Error, block: u64, structure: Structure, reason: &str) {
    match error {
        Error::Malformed {
            block: found_block,
            structure: found_structure,
            reason: found_reason,
        } => {
            assert_eq!(
                (*found_block, *found_structure),
                (block, structure),
                "{error}"
            );
            assert!(found_reason.contains(reason), "{error}");
        }
        other => panic!("expected a malformed {structure} at {block}, got: {other}"),
    }
}

#[test]
fn four_blocks_whose_nodes_share_children_are_refused_after_three_nodes() {
    // 2^20 wasm pages: the page limit is the page map's own 2^24, so every
    // entry is in range and only the tree check stands in the way.
    let mut forge = created(1 << 20);
    let (page, leaf, middle, root) = (103, 100, 101, 102);
    forge.write_page(page, 0xab);
    let all = |child| {
        (0..forge::FANOUT)
            .map(move |slot| (slot, child))
            .collect::<Vec<_>>()
    };
    forge.write_node(leaf, &all(page));
    forge.write_node(middle, &all(leaf));
    forge.write_node(root, &all(middle));
    forge.mark_used(SLOT, &[page, leaf, middle, root], 104);
    forge.set_root(SLOT, root);
    let opened = open_refused(forge.bytes);
    println!("shared children: {}", opened.error);
    assert_malformed(
        &opened.error,
        page,
        Structure::Page,
        "block reached twice: the page map is not a tree",
    );
    // Superblocks, free space, metadata and three nodes: not 16.7 M
    // entries (400 MiB).
    assert!(
        opened.blocks_read <= 10,
        "{} blocks read",
        opened.blocks_read
    );
}

#[test]
fn a_fan_out_of_sixteen_over_shared_nodes_is_refused_at_the_second_visit() {
    let mut forge = created(1 << 20);
    let pages: Vec<u64> = (105..121).collect();
    for &page in &pages {
        forge.write_page(page, page as u8);
    }
    let (leaf, middle, root) = (100, 101, 102);
    let sixteen = |children: &dyn Fn(usize) -> u64| {
        (0..16)
            .map(|slot| (slot * 16, children(slot)))
            .collect::<Vec<_>>()
    };
    forge.write_node(leaf, &sixteen(&|slot| pages[slot]));
    forge.write_node(middle, &sixteen(&|_| leaf));
    forge.write_node(root, &sixteen(&|_| middle));
    let mut used = pages.clone();
    used.extend([leaf, middle, root]);
    forge.mark_used(SLOT, &used, 104);
    forge.set_root(SLOT, root);
    let opened = open_refused(forge.bytes);
    println!("fan-out 16: {}", opened.error);
    assert_malformed(
        &opened.error,
        leaf,
        Structure::PageMapNode,
        "block reached twice: the page map is not a tree",
    );
    assert!(
        opened.blocks_read <= 10,
        "{} blocks read",
        opened.blocks_read
    );
}

#[test]
fn an_entry_past_the_memory_maximum_is_refused_at_the_root() {
    // One wasm page: pages 0 to 15. The root's second entry covers pages
    // 65,536 on, so nothing below it is read.
    let mut forge = created(1);
    let (page, leaf, middle, root) = (103, 100, 101, 102);
    forge.write_page(page, 1);
    forge.write_node(leaf, &[(0, page)]);
    forge.write_node(middle, &[(0, leaf)]);
    forge.write_node(root, &[(1, middle)]);
    forge.mark_used(SLOT, &[page, leaf, middle, root], 104);
    forge.set_root(SLOT, root);
    let opened = open_refused(forge.bytes);
    println!("past the maximum: {}", opened.error);
    assert_malformed(
        &opened.error,
        root,
        Structure::PageMapNode,
        "an entry lies past the domain's memory maximum",
    );
    assert!(
        opened.blocks_read <= 8,
        "{} blocks read",
        opened.blocks_read
    );
}

#[test]
fn a_page_map_block_the_bitmap_calls_free_is_refused() {
    // A tree in every other way, but the allocator would hand its blocks
    // out again: refused before that can happen.
    let mut forge = created(1);
    let (page, leaf, middle, root) = (103, 100, 101, 102);
    forge.write_page(page, 1);
    forge.write_node(leaf, &[(3, page)]);
    forge.write_node(middle, &[(0, leaf)]);
    forge.write_node(root, &[(0, middle)]);
    forge.set_root(SLOT, root);
    let opened = open_refused(forge.bytes);
    println!("marked free: {}", opened.error);
    assert_malformed(
        &opened.error,
        root,
        Structure::PageMapNode,
        "a reachable block is marked free",
    );
}

#[test]
fn a_sequence_at_u64_max_is_refused_before_the_commit_is_read() {
    let mut forge = created(1);
    // u64::MAX is odd: slot 1 is where it would live.
    forge.set_u64(SLOT, forge::SEQUENCE, u64::MAX);
    forge.sign_superblock(SLOT);
    let opened = open_refused(forge.bytes);
    println!("sequence u64::MAX: {}", opened.error);
    assert_eq!(
        opened.error,
        Error::CounterOverflow {
            counter: Counter::Sequence,
            value: u64::MAX
        }
    );
    assert_eq!(opened.blocks_read, 2, "only the superblocks are read");
}

#[test]
fn a_sequence_one_below_the_limit_opens_and_refuses_the_commit_after_it() {
    let mut forge = created(1);
    forge.set_u64(SLOT, forge::SEQUENCE, u64::MAX - 2);
    forge.sign_superblock(SLOT);
    let mut image = Image::open(MemoryDevice::from_bytes(forge.bytes)).unwrap();
    image.stage_page(0, &page(1)).unwrap();
    // u64::MAX - 1 is the last number a commit may take.
    assert_eq!(image.commit().unwrap().sequence, u64::MAX - 1);
    image.stage_page(1, &page(2)).unwrap();
    assert_eq!(
        image.commit(),
        Err(Error::CounterOverflow {
            counter: Counter::Sequence,
            value: u64::MAX - 1
        })
    );
    // The last commit is intact and opens.
    let image = Image::open(image.into_device()).unwrap();
    assert_eq!(image.sequence(), u64::MAX - 1);
}

#[test]
fn a_stored_page_count_that_disagrees_with_the_page_map_is_refused() {
    for pages_stored in [1, u64::MAX] {
        let mut forge = created(1);
        forge.set_u64(SLOT, forge::PAGES_STORED, pages_stored);
        forge.sign_superblock(SLOT);
        let opened = open_refused(forge.bytes);
        println!("pages stored {pages_stored}: {}", opened.error);
        assert_malformed(
            &opened.error,
            SLOT,
            Structure::Superblock,
            "page count disagrees with the page map",
        );
    }
}

#[test]
fn a_commit_count_at_its_limit_is_refused_and_the_last_commit_stays() {
    let mut image = common::fresh(64, 1);
    image.metadata_mut().counters.commits = u64::MAX - 1;
    image.commit().unwrap();
    assert_eq!(image.metadata().counters.commits, u64::MAX);
    image.stage_page(0, &page(3)).unwrap();
    let sequence = image.sequence();
    assert_eq!(
        image.commit(),
        Err(Error::CounterOverflow {
            counter: Counter::Commits,
            value: u64::MAX
        })
    );
    assert_eq!(image.metadata().counters.commits, u64::MAX);
    assert_eq!(image.stats().pages_staged, 1, "the staged page is kept");
    let image = Image::open(image.into_device()).unwrap();
    assert_eq!(image.sequence(), sequence);
}

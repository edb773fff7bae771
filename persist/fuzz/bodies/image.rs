//! Fuzz bodies: image open on raw bytes and on structured, re-signed forgeries.
//!
//! Raw bytes almost never get past the superblock's checksum, and a mutated
//! seed image rarely past the CRCs of its inner blocks. The structured body
//! builds a real image from its input's first bytes (memory size, commit
//! count, counters near their limits), then applies the rest of the input
//! as edits to superblock fields and page-map nodes, and re-signs every CRC
//! on the way up (`forge`): the mutations reach shared nodes, cycles,
//! entries past the memory maximum and extreme counters.

use persist::{Error, Image, MemoryDevice, NewDomain, PAGE_SIZE, Unopened};

use super::forge::{self, Forge};

/// Blocks of the structured body's images.
pub const IMAGE_BLOCKS: u64 = 96;

/// Opens `data` as an image and, when it opens, reads, verifies and
/// commits; when its newest commit is damaged, rolls it back and does the
/// same. Nothing may panic, and what opens stores no more pages than the
/// image has blocks.
pub fn open(data: &[u8]) -> Outcome {
    let device = MemoryDevice::from_bytes(data.to_vec());
    let block_count = (data.len() / persist::BLOCK_SIZE) as u64;
    match Image::try_open(device) {
        Ok(image) => {
            exercise(image, block_count);
            Outcome::Opened
        }
        Err(Unopened {
            error: error @ Error::NewestCommitDamaged { .. },
            device,
        }) => {
            if let Ok(image) = Image::open_rolling_back(device) {
                assert!(image.rollback_record().is_some(), "a rollback unrecorded");
                exercise(image, block_count);
            }
            Outcome::Refused(error)
        }
        Err(Unopened { error, .. }) => Outcome::Refused(error),
    }
}

/// How an input ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Opened,
    Refused(Error),
}

fn exercise(mut image: Image<MemoryDevice>, block_count: u64) {
    let mut page = [0u8; PAGE_SIZE];
    for page_index in [0, 1, 255, 256, 65_535] {
        let _ = image.read_page(page_index, &mut page);
    }
    let _ = image.module();
    if let Ok(stored) = image.stored_pages() {
        assert!(
            stored.len() as u64 <= block_count,
            "{} pages stored in {block_count} blocks",
            stored.len()
        );
    }
    if let Ok(locations) = image.page_locations() {
        assert!(locations.len() as u64 <= block_count);
    }
    let _ = image.verify();
    let _ = image.stage_page(0, &[1; PAGE_SIZE]);
    let _ = image.commit();
}

/// A small real image, shaped by `shape` (three bytes): its memory maximum
/// (one page up to the page map's whole range), how many commits, and
/// whether its commit count starts next to its limit.
pub fn base_image(shape: [u8; 3]) -> Vec<u8> {
    let memory_max_pages = match shape[0] % 4 {
        0 => 1,
        1 => 2,
        2 => 4096,
        _ => 1 << 20,
    };
    let mut image = Image::create(
        MemoryDevice::new(IMAGE_BLOCKS),
        NewDomain {
            id: persist::DomainId(0xf022),
            name: "forged",
            module: b"\0asm\x01\0\0\0",
            memory_pages: 1,
            memory_max_pages,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .expect("the base image fits");
    if shape[2] % 2 == 1 {
        image.metadata_mut().counters.commits = u64::MAX - 1;
    }
    let commits = u64::from(shape[1] % 3);
    for commit in 0..commits {
        for page_index in [0, 7 + commit, 300 % (memory_max_pages * 16)] {
            let _ = image.stage_page(page_index, &[commit as u8 + 1; PAGE_SIZE]);
        }
        let _ = image.commit();
    }
    image.into_device().into_bytes()
}

/// Values a mutation writes into a counter.
const EXTREMES: [u64; 6] = [0, 1, u64::MAX - 2, u64::MAX - 1, u64::MAX, 1 << 24];

/// Superblock fields a mutation may set.
const FIELDS: [usize; 4] = [
    forge::SEQUENCE,
    forge::PAGES_STORED,
    forge::BLOCKS_USED,
    forge::ROLLBACKS,
];

/// The structured body: `data[..3]` shapes a base image, each following
/// four bytes are one edit (kind, then three arguments), and every CRC is
/// signed again before the image is opened.
pub fn structured(data: &[u8]) -> Outcome {
    let mut shape = [0u8; 3];
    for (to, from) in shape.iter_mut().zip(data) {
        *to = *from;
    }
    let mut forge = Forge::new(base_image(shape));
    let edits = data.get(3..).unwrap_or(&[]);
    let mut touched_slots = [false; 2];
    for edit in edits.chunks(4).take(64) {
        let [kind, first, second, third] =
            [0, 1, 2, 3].map(|at| edit.get(at).copied().unwrap_or(0));
        // Most edits go to the newest commit; some to the older one.
        let slot = if first & 0x80 == 0 {
            forge.newest_slot()
        } else {
            1 - forge.newest_slot()
        };
        touched_slots[slot as usize] = true;
        let levels = forge.page_map_levels(slot);
        let pick = |level: usize, choice: u8| {
            levels
                .get(level)
                .filter(|blocks| !blocks.is_empty())
                .map(|blocks| blocks[usize::from(choice) % blocks.len()])
        };
        let any_block = u64::from(third) % forge.block_count();
        match kind % 8 {
            // A counter in the superblock at an extreme.
            0 => {
                let field = FIELDS[usize::from(second) % FIELDS.len()];
                let mut value = EXTREMES[usize::from(third) % EXTREMES.len()];
                if field == forge::SEQUENCE {
                    // Keep the slot's parity, or the superblock is not ours.
                    value = (value & !1) | slot;
                }
                forge.set_u64(slot, field, value);
            }
            // A node entry naming another node of any level: sharing and
            // cycles.
            1 => {
                if let (Some(node), Some(child)) = (
                    pick(usize::from(first) % 3, second),
                    pick(usize::from(third) % 4, third),
                ) {
                    forge.set_pointer(node, usize::from(second) * 16, child, 0);
                }
            }
            // A node entry naming any block at all.
            2 => {
                if let Some(node) = pick(usize::from(first) % 3, second) {
                    forge.set_pointer(node, usize::from(second) * 16, any_block, 0);
                }
            }
            // A node entry cleared.
            3 => {
                if let Some(node) = pick(usize::from(first) % 3, second) {
                    forge.set_pointer(node, usize::from(second) * 16, 0, 0);
                }
            }
            // The root replaced by another page-map block or any block.
            4 => {
                let root = pick(usize::from(second) % 4, third).unwrap_or(any_block);
                forge.set_pointer(slot, forge::PAGE_MAP_ROOT, root, 0);
            }
            // Every entry of a node naming one child: a fan-out of 256.
            5 => {
                if let (Some(node), Some(child)) = (
                    pick(usize::from(first) % 3, second),
                    pick(usize::from(first) % 3 + 1, third),
                ) {
                    let fan_out = usize::from(second).max(1);
                    for entry in 0..fan_out.min(forge::FANOUT) {
                        forge.set_pointer(node, entry * 16, child, 0);
                    }
                }
            }
            // Blocks marked used in the bitmap, so that the tree checks
            // are reached rather than the bitmap's.
            6 => {
                let blocks: Vec<u64> = levels.iter().flatten().copied().collect();
                forge.mark_used(
                    slot,
                    &blocks,
                    forge.block_count() - 1 - u64::from(third % 8),
                );
            }
            // A byte anywhere, signed again with the rest.
            _ => {
                let at = (usize::from(second) << 8 | usize::from(third)) * 7 % forge.bytes.len();
                forge.bytes[at] ^= first | 1;
            }
        }
    }
    for (slot, touched) in touched_slots.iter().enumerate() {
        if *touched {
            forge.sign_page_map(slot as u64);
        }
    }
    open(&forge.bytes)
}

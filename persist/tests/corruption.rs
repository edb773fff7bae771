//! Flipped bits, truncated and garbage files: typed errors or the other
//! superblock, never a panic, never bad data returned as good.

mod common;

use std::collections::BTreeMap;

use common::{MODULE, fresh, page};
use persist::{BLOCK_SIZE, Error, Image, MemoryDevice, PAGE_SIZE, Structure, crc32c};
use proptest::prelude::*;

const PAGES: [u64; 4] = [0, 1, 300, 4000];

/// What each commit holds: sequence to (page contents, clock).
type Expected = BTreeMap<u64, (BTreeMap<u64, [u8; PAGE_SIZE]>, u64)>;

/// An image with commits 1 (empty), 2 and 3, and what each commit holds:
/// sequence to (page contents, clock).
fn small_image() -> (Vec<u8>, Expected) {
    let mut image = fresh(40, 256);
    let mut expected = BTreeMap::new();
    expected.insert(1, (BTreeMap::new(), 0));
    let mut pages = BTreeMap::new();
    for sequence in 2..=3u64 {
        for (position, &page_index) in PAGES.iter().enumerate() {
            let contents = page(sequence * 10 + position as u64);
            image.stage_page(page_index, &contents).unwrap();
            pages.insert(page_index, contents);
        }
        image.metadata_mut().clock_ns = sequence;
        image.commit().unwrap();
        expected.insert(sequence, (pages.clone(), sequence));
    }
    (image.into_device().into_bytes(), expected)
}

/// Opens `bytes` and reads everything; any data returned must be right.
fn check_never_wrong(bytes: Vec<u8>, expected: &Expected) -> Result<(), TestCaseError> {
    let Ok(mut image) = Image::open(MemoryDevice::from_bytes(bytes)) else {
        return Ok(());
    };
    // Only commit 3, or commit 2 when commit 3's superblock is damaged.
    let sequence = image.sequence();
    prop_assert!(sequence == 3 || sequence == 2, "opened commit {sequence}");
    let (pages, clock_ns) = &expected[&sequence];
    prop_assert_eq!(image.metadata().clock_ns, *clock_ns);
    prop_assert_eq!(&image.metadata().name, "test");
    for page_index in PAGES {
        let mut buffer = [0u8; PAGE_SIZE];
        if image.read_page(page_index, &mut buffer).is_ok() {
            prop_assert!(
                buffer == pages[&page_index],
                "page {page_index} of commit {sequence} read back wrong"
            );
        }
    }
    if let Ok(module) = image.module() {
        prop_assert_eq!(module, MODULE);
    }
    if let Ok(stored) = image.stored_pages() {
        prop_assert_eq!(stored, PAGES.to_vec());
    }
    let _ = image.verify();
    Ok(())
}

#[test]
fn every_bit_of_every_block_flipped_in_turn_never_yields_wrong_data() {
    let (bytes, expected) = small_image();
    let mut flips = 0;
    let mut errors_seen = 0;
    for block in 0..bytes.len() / BLOCK_SIZE {
        // 64 bit positions per block, spread over it (first and last bits
        // included): 2,560 corruptions, every structure hit many times.
        for step in 0..64 {
            let bit = (step * (BLOCK_SIZE * 8 - 1)) / 63;
            let mut corrupt = bytes.clone();
            corrupt[block * BLOCK_SIZE + bit / 8] ^= 1 << (bit % 8);
            let opened = Image::open(MemoryDevice::from_bytes(corrupt.clone()));
            if opened.is_err() {
                errors_seen += 1;
            } else if let Ok(mut image) = opened
                && image.verify().is_err()
            {
                errors_seen += 1;
            }
            check_never_wrong(corrupt, &expected).unwrap();
            flips += 1;
        }
    }
    assert_eq!(flips, 40 * 64);
    assert!(
        errors_seen > 100,
        "only {errors_seen} corruptions were noticed"
    );
}

#[test]
fn a_flipped_page_bit_is_a_checksum_error_naming_the_block() {
    let (bytes, _) = small_image();
    let mut image = Image::open(MemoryDevice::from_bytes(bytes.clone())).unwrap();
    let mut buffer = [0u8; PAGE_SIZE];
    image.read_page(300, &mut buffer).unwrap();
    // Find the block that holds page 300 and flip one of its bits.
    let block = (0..bytes.len() / BLOCK_SIZE)
        .find(|block| bytes[block * BLOCK_SIZE..][..BLOCK_SIZE] == buffer)
        .unwrap();
    let mut corrupt = bytes;
    corrupt[block * BLOCK_SIZE + 100] ^= 0x10;
    let mut image = Image::open(MemoryDevice::from_bytes(corrupt)).unwrap();
    let expected = Error::ChecksumMismatch {
        block: block as u64,
        structure: Structure::Page,
    };
    assert_eq!(image.read_page(300, &mut buffer), Err(expected.clone()));
    assert_eq!(image.verify(), Err(expected));
}

#[test]
fn a_torn_newest_superblock_falls_back_to_the_older_commit() {
    let (mut bytes, _) = small_image();
    // Commit 3 lives in slot 1.
    bytes[BLOCK_SIZE + 20] ^= 1;
    let image = Image::open(MemoryDevice::from_bytes(bytes.clone())).unwrap();
    assert_eq!(image.sequence(), 2);
    bytes[20] ^= 1;
    assert_eq!(
        Image::open(MemoryDevice::from_bytes(bytes)).unwrap_err(),
        Error::NoValidSuperblock
    );
}

#[test]
fn truncated_files_are_reported_as_too_small() {
    let (bytes, _) = small_image();
    for len in [0, 100, BLOCK_SIZE, 2 * BLOCK_SIZE + 1, bytes.len() - 1] {
        let error = Image::open(MemoryDevice::from_bytes(bytes[..len].to_vec())).unwrap_err();
        assert!(
            matches!(error, Error::DeviceTooSmall { .. }),
            "{len}: {error}"
        );
    }
}

#[test]
fn garbage_is_not_an_image() {
    let garbage: Vec<u8> = (0..64 * BLOCK_SIZE)
        .map(|index| (index * 7 + 3) as u8)
        .collect();
    assert_eq!(
        Image::open(MemoryDevice::from_bytes(garbage)).unwrap_err(),
        Error::NotAnImage
    );
    assert_eq!(
        Image::open(MemoryDevice::new(64)).unwrap_err(),
        Error::NotAnImage
    );
}

/// Rewrites both superblocks' checksums, so that damage inside them reaches
/// the deeper parsers instead of failing the superblock checksum.
fn resign_superblocks(bytes: &mut [u8]) {
    for slot in 0..2 {
        let block = &mut bytes[slot * BLOCK_SIZE..][..BLOCK_SIZE];
        let checksum = crc32c(&block[..BLOCK_SIZE - 4]);
        block[BLOCK_SIZE - 4..].copy_from_slice(&checksum.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Arbitrary bytes fed to open never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..20 * BLOCK_SIZE)) {
        if let Ok(mut image) = Image::open(MemoryDevice::from_bytes(bytes)) {
            let _ = image.verify();
        }
    }

    /// A valid image with random bytes overwritten (superblocks re-signed so
    /// that impossible pointers and lengths get through) never panics, and
    /// never allocates without bound.
    #[test]
    fn damaged_images_with_valid_superblocks_never_panic(
        writes in prop::collection::vec((0usize..40 * BLOCK_SIZE, any::<u8>()), 1..16),
        hit_superblocks in prop::collection::vec((0usize..2 * BLOCK_SIZE, any::<u8>()), 0..8),
    ) {
        let (mut bytes, _) = small_image();
        for (offset, value) in writes.into_iter().chain(hit_superblocks) {
            bytes[offset] = value;
        }
        resign_superblocks(&mut bytes);
        if let Ok(mut image) = Image::open(MemoryDevice::from_bytes(bytes)) {
            let mut buffer = [0u8; PAGE_SIZE];
            for page_index in PAGES.into_iter().chain([5, 4095]) {
                let _ = image.read_page(page_index, &mut buffer);
            }
            let _ = image.module();
            let _ = image.stored_pages();
            let _ = image.verify();
            let _ = image.stage_page(2, &page(2));
            let _ = image.commit();
        }
    }
}

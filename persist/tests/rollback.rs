//! A damaged newest commit: named, not replaced silently, rolled back at will.

mod common;

#[path = "../fuzz/bodies/forge.rs"]
#[allow(dead_code, reason = "the tests use part of the forge")]
mod forge;

use common::{fresh, page, read};
use forge::Forge;
use persist::migrate::Migration;
use persist::{
    BLOCK_SIZE, Error, FaultPlan, FaultyDevice, Image, MemoryDevice, RollbackRecord, Structure,
};

/// Offset of the metadata chain pointer in a superblock.
const METADATA: usize = 48;

/// An image with commits 1, 2 (page 0 = page(2)) and 3 (page 0 = page(3)).
fn three_commits() -> Vec<u8> {
    let mut image = fresh(64, 1);
    for seed in [2, 3] {
        image.stage_page(0, &page(seed)).unwrap();
        image.metadata_mut().clock_ns = seed;
        image.commit().unwrap();
    }
    assert_eq!(image.sequence(), 3);
    image.into_device().into_bytes()
}

/// `bytes` with one byte of commit 3's metadata block flipped.
fn damage_newest_metadata(bytes: Vec<u8>) -> (Vec<u8>, u64) {
    let mut forge = Forge::new(bytes);
    let (block, _) = forge.pointer_at(forge.newest_slot(), METADATA);
    forge.bytes[block as usize * BLOCK_SIZE + 100] ^= 0x20;
    (forge.bytes, block)
}

#[test]
fn a_damaged_newest_commit_is_named_with_the_intact_one_and_not_opened() {
    let (bytes, block) = damage_newest_metadata(three_commits());
    let error = Image::open(MemoryDevice::from_bytes(bytes)).unwrap_err();
    let damage = Error::ChecksumMismatch {
        block,
        structure: Structure::Metadata,
    };
    assert_eq!(
        error,
        Error::NewestCommitDamaged {
            damaged_sequence: 3,
            intact_sequence: 2,
            cause: Box::new(damage.clone()),
        }
    );
    assert_eq!(error.damage(), &damage);
    assert_eq!(
        error.to_string(),
        format!(
            "commit 3 is damaged (checksum mismatch in metadata block at block {block}); \
             the older commit 2 is intact and opens only by an explicit rollback"
        )
    );
}

#[test]
fn rolling_back_opens_the_older_commit_and_records_it_in_the_image() {
    let (bytes, _) = damage_newest_metadata(three_commits());
    let mut image = Image::open_rolling_back(MemoryDevice::from_bytes(bytes)).unwrap();
    let record = RollbackRecord {
        rollbacks: 1,
        damaged_sequence: 3,
        restored_sequence: 2,
    };
    // Committed at once, in the damaged commit's slot, two numbers on.
    assert_eq!(image.sequence(), 5);
    assert_eq!(image.rollback_record(), Some(record));
    assert_eq!(
        record.to_string(),
        "commit 3 was damaged; rolled back to commit 2 on purpose"
    );
    assert_eq!(read(&mut image, 0), page(2));
    assert_eq!(image.metadata().clock_ns, 2);
    image.verify().unwrap();

    // The record stays with the image: across a reopen and later commits.
    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(image.sequence(), 5);
    assert_eq!(image.rollback_record(), Some(record));
    image.stage_page(0, &page(6)).unwrap();
    assert_eq!(image.commit().unwrap().sequence, 6);
    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(image.rollback_record(), Some(record));
    assert_eq!(read(&mut image, 0), page(6));
    image.verify().unwrap();
}

#[test]
fn rolling_back_a_sound_image_is_refused() {
    let error = Image::open_rolling_back(MemoryDevice::from_bytes(three_commits())).unwrap_err();
    assert_eq!(error.error, Error::NothingToRollBack { sequence: 3 });
    // The device comes back untouched and opens as before.
    let image = Image::open(error.device).unwrap();
    assert_eq!((image.sequence(), image.rollback_record()), (3, None));
}

#[test]
fn a_tombstone_is_never_rolled_back_to_the_domain_it_handed_over() {
    let mut image = fresh(64, 1);
    image.stage_page(0, &page(1)).unwrap();
    image.commit().unwrap();
    image.metadata_mut().migration = Some(Migration::Outgoing {
        migration_id: 7,
        target: "machine-b".into(),
    });
    image.stage_page(0, &page(2)).unwrap();
    image.commit().unwrap();
    // Damage the tombstone's page map, not its metadata.
    let mut forge = Forge::new(image.into_device().into_bytes());
    let (root, _) = forge.pointer_at(forge.newest_slot(), forge::PAGE_MAP_ROOT);
    forge.bytes[root as usize * BLOCK_SIZE + 7] ^= 1;
    let error = Image::open(MemoryDevice::from_bytes(forge.bytes.clone())).unwrap_err();
    assert!(
        matches!(error, Error::NewestCommitDamaged { .. }),
        "{error}"
    );
    let refused = Image::open_rolling_back(MemoryDevice::from_bytes(forge.bytes)).unwrap_err();
    assert_eq!(
        refused.error,
        Error::RollbackRefused {
            damaged_sequence: 3,
            reason: "it handed the domain over to another machine, which may run it",
        }
    );
}

#[test]
fn a_power_cut_during_a_rollback_leaves_the_image_as_it_was_or_rolled_back() {
    let (bytes, _) = damage_newest_metadata(three_commits());
    let mut outcomes = [0u32; 2];
    for writes in 0..12 {
        for seed in 0..4 {
            let plan = FaultPlan {
                power_off_after_writes: Some(writes),
                ..FaultPlan::default()
            };
            let device = FaultyDevice::new(MemoryDevice::from_bytes(bytes.clone()), plan);
            let device = match Image::open_rolling_back(device) {
                Ok(image) => image.into_device().into_inner().unwrap(),
                Err(unopened) => unopened.device.power_cut(seed).unwrap(),
            };
            match Image::open(device) {
                Ok(mut image) => {
                    assert_eq!(image.sequence(), 5);
                    assert_eq!(read(&mut image, 0), page(2));
                    image.verify().unwrap();
                    outcomes[1] += 1;
                }
                Err(error) => {
                    assert!(
                        matches!(
                            error,
                            Error::NewestCommitDamaged {
                                damaged_sequence: 3,
                                intact_sequence: 2,
                                ..
                            }
                        ),
                        "{error}"
                    );
                    outcomes[0] += 1;
                }
            }
        }
    }
    assert!(outcomes.iter().all(|&count| count > 0), "{outcomes:?}");
}

#[test]
fn a_torn_newest_superblock_is_no_commit_and_still_opens_the_older_one() {
    // The commit protocol's own fallback: a superblock that fails its
    // checksum was never durable, so the older commit is the image.
    let mut bytes = three_commits();
    bytes[BLOCK_SIZE + 30] ^= 1;
    let image = Image::open(MemoryDevice::from_bytes(bytes)).unwrap();
    assert_eq!((image.sequence(), image.rollback_record()), (2, None));
}

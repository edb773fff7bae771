//! A failed flush is final: no commit follows, the older superblock stays.
//!
//! A disk that fails a flush may have lost any write the flush covered, and
//! (as Linux reports a writeback error once) a later flush may succeed over
//! them. A commit retried after such a failure would write a superblock
//! over pages that never reached the disk, into the slot of the older, good
//! commit (the fsyncgate pattern). `FaultyDevice` models that disk: its
//! failed flush drops every unflushed write and the next flush succeeds.

mod common;

use common::{fresh, page, read};
use persist::{
    BLOCK_SIZE, BlockDevice, DeviceError, Error, FaultPlan, FaultyDevice, Image, MemoryDevice,
    PAGE_SIZE, PoisonCause,
};

/// Both superblocks as the disk holds them.
fn superblocks<D: BlockDevice>(image: &mut Image<D>) -> [[u8; BLOCK_SIZE]; 2] {
    let mut blocks = [[0u8; BLOCK_SIZE]; 2];
    for (slot, block) in blocks.iter_mut().enumerate() {
        image.device_mut().read_block(slot as u64, block).unwrap();
    }
    blocks
}

/// An image with two commits on a faulty device that fails flush `number`
/// (counted from the open).
fn image_failing_flush(number: u64) -> Image<FaultyDevice<MemoryDevice>> {
    let mut image = fresh(128, 1);
    for seed in 1..=2 {
        image.stage_page(seed, &page(seed)).unwrap();
        image.commit().unwrap();
    }
    let plan = FaultPlan {
        fail_flush_number: Some(number),
        ..FaultPlan::default()
    };
    Image::open(FaultyDevice::new(image.into_device(), plan)).unwrap()
}

#[test]
fn a_failed_flush_poisons_the_image_and_no_retry_overwrites_the_older_superblock() {
    // Each commit flushes twice (its blocks, then its superblock): fail
    // either flush of the first, second or third commit after the open.
    for failing_flush in 1..=6 {
        let mut image = image_failing_flush(failing_flush);
        let mut committed = Vec::new();
        let failure = loop {
            let seed = 10 + committed.len() as u64;
            image.stage_page(3, &page(seed)).unwrap();
            match image.commit() {
                Ok(stats) => committed.push((stats.sequence, seed)),
                Err(error) => break error,
            }
        };
        assert_eq!(
            failure,
            Error::Device(DeviceError::InjectedFlushFault {
                flush_number: failing_flush
            })
        );
        // The second flush of a commit is its superblock's.
        let cause = if failing_flush % 2 == 1 {
            PoisonCause::FlushFailed
        } else {
            PoisonCause::SuperblockWriteFailed
        };
        let on_disk = superblocks(&mut image);
        // Every later commit is refused, however often it is tried, and
        // nothing reaches either superblock.
        for attempt in 0..3 {
            assert_eq!(
                image.commit(),
                Err(Error::Poisoned { cause }),
                "attempt {attempt}"
            );
            assert_eq!(
                image.stage_page(4, &page(99)),
                Err(Error::Poisoned { cause })
            );
            assert_eq!(superblocks(&mut image), on_disk);
        }
        // Reopened, the disk holds the last commit that returned Ok, whole.
        let device = image.into_device().into_inner().unwrap();
        let mut image = Image::open(device).unwrap();
        let (sequence, seed) = committed.last().copied().unwrap_or((3, 0));
        assert_eq!(image.sequence(), sequence, "failing flush {failing_flush}");
        let expected = if seed == 0 {
            [0; PAGE_SIZE]
        } else {
            page(seed)
        };
        assert_eq!(read(&mut image, 3), expected);
        assert_eq!(read(&mut image, 1), page(1));
        assert_eq!(read(&mut image, 2), page(2));
        image.verify().unwrap();
    }
}

#[test]
fn the_poison_names_its_cause() {
    let error = Error::Poisoned {
        cause: PoisonCause::FlushFailed,
    };
    assert!(error.to_string().contains("flush failed"), "{error}");
}

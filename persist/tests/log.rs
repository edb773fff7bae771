//! The domain's log in its image: what it keeps, what a commit costs, power
//! cuts, snapshots and rollbacks, export and fork, hostile log rings.

mod common;

use common::{fresh, page};
use persist::{
    BLOCK_SIZE, Error, FORMAT_VERSION, FaultPlan, FaultyDevice, Image, LOG_BLOCKS,
    LOG_CAPACITY_BYTES, LOG_FORMAT_VERSION, MemoryDevice, crc32c,
};

/// The log line number `index`.
fn line(index: usize) -> String {
    format!(
        "{:>10}.000 count {index} and some words to make it longer\n",
        index / 10
    )
}

/// The log bytes one block holds.
const CHAIN_PAYLOAD_LEN: usize = LOG_CAPACITY_BYTES / LOG_BLOCKS;

/// Checks that `log` is what a log that was given all of `written` may
/// show: all of it while it fits, else a suffix that starts at a whole line
/// and holds at least the newest 15 blocks' worth less a line, at most
/// `LOG_CAPACITY_BYTES`.
fn check_suffix(log: &[u8], written: &[u8], context: &str) {
    if written.len() <= LOG_CAPACITY_BYTES - CHAIN_PAYLOAD_LEN {
        assert!(
            log == written,
            "{context}: {} bytes of {}",
            log.len(),
            written.len()
        );
        return;
    }
    assert!(written.ends_with(log), "{context}: the log is no suffix");
    assert!(
        log.len() <= LOG_CAPACITY_BYTES,
        "{context}: {} bytes",
        log.len()
    );
    let floor = LOG_CAPACITY_BYTES - CHAIN_PAYLOAD_LEN - 100;
    assert!(log.len() >= floor, "{context}: only {} bytes", log.len());
    let start = written.len() - log.len();
    assert!(
        start == 0 || written[start - 1] == b'\n',
        "{context}: starts mid-line"
    );
}

fn version(bytes: &[u8], sequence: u64) -> u32 {
    let slot = (sequence % 2) as usize * BLOCK_SIZE;
    u32::from_le_bytes(bytes[slot + 8..slot + 12].try_into().unwrap())
}

#[test]
fn the_log_keeps_its_newest_lines_across_commits_and_reopening() {
    let mut image = fresh(1024, 16);
    let mut written = Vec::new();
    assert!(image.log().unwrap().is_empty());
    for commit in 0..400 {
        for index in commit * 7..commit * 7 + 7 {
            written.extend_from_slice(line(index).as_bytes());
            image.append_log(line(index).as_bytes());
        }
        // Staged lines read back before they are committed.
        check_suffix(&image.log().unwrap(), &written, &format!("commit {commit}"));
        image.commit().unwrap();
        if commit % 37 == 0 {
            image.verify().unwrap();
        }
    }
    assert!(written.len() > 2 * LOG_CAPACITY_BYTES);
    let sequence = image.sequence();
    let bytes = image.into_device().into_bytes();
    assert_eq!(version(&bytes, sequence), LOG_FORMAT_VERSION);
    let mut image = Image::open(MemoryDevice::from_bytes(bytes)).unwrap();
    check_suffix(&image.log().unwrap(), &written, "reopened");
    let report = image.verify().unwrap();
    // The ring holds no more than its blocks: nothing leaked on the way.
    let stats = image.stats();
    assert!(
        stats.blocks_used < 40,
        "{} blocks used after 400 commits of a log ({report:?})",
        stats.blocks_used
    );
}

#[test]
fn a_commit_that_logs_writes_one_block_more_whatever_the_log_holds() {
    let mut image = fresh(1024, 16);
    let quiet = {
        image.stage_page(1, &page(1)).unwrap();
        image.commit().unwrap().blocks_written
    };
    let mut costs = Vec::new();
    for round in 0..200 {
        image.append_log(line(round).as_bytes());
        image.stage_page(1, &page(round as u64)).unwrap();
        costs.push(image.commit().unwrap().blocks_written);
    }
    // One block rewritten (the partly filled last one); two when a line
    // crosses into a new block.
    assert!(
        costs
            .iter()
            .all(|&cost| cost == quiet + 1 || cost == quiet + 2),
        "quiet commit {quiet} blocks, logging commits {costs:?}"
    );
    // A commit that logs nothing writes no log block.
    image.stage_page(1, &page(7)).unwrap();
    assert_eq!(image.commit().unwrap().blocks_written, quiet);
}

#[test]
fn a_huge_append_keeps_only_the_newest_bytes() {
    let mut image = fresh(1024, 16);
    let mut written = Vec::new();
    for index in 0..20_000 {
        written.extend_from_slice(line(index).as_bytes());
    }
    image.append_log(&written);
    check_suffix(&image.log().unwrap(), &written, "staged");
    image.commit().unwrap();
    check_suffix(&image.log().unwrap(), &written, "committed");
    assert!(image.commit().unwrap().blocks_written < 8);
    image.verify().unwrap();
}

#[test]
fn set_log_replaces_the_log_and_an_empty_one_leaves_version_one() {
    let mut image = fresh(512, 16);
    image.append_log(line(1).as_bytes());
    image.commit().unwrap();
    image.set_log(line(2).as_bytes());
    assert_eq!(image.log().unwrap(), line(2).as_bytes());
    image.commit().unwrap();
    assert_eq!(image.log().unwrap(), line(2).as_bytes());
    image.set_log(b"");
    image.commit().unwrap();
    assert!(image.log().unwrap().is_empty());
    let sequence = image.sequence();
    let mut image =
        Image::open(MemoryDevice::from_bytes(image.into_device().into_bytes())).unwrap();
    image.verify().unwrap();
    let bytes = image.into_device().into_bytes();
    assert_eq!(version(&bytes, sequence), FORMAT_VERSION);
}

/// A replaced log reads as its new lines alone, staged and committed,
/// even where the old ring had dropped its oldest bytes.
#[test]
fn set_log_over_a_full_ring_reads_as_the_new_lines_alone() {
    let mut image = fresh(1024, 16);
    for index in 0..3000 {
        image.append_log(line(index).as_bytes());
    }
    image.commit().unwrap();
    let replacement = [line(1), line(2)].concat();
    image.set_log(replacement.as_bytes());
    assert_eq!(image.log().unwrap(), replacement.as_bytes(), "staged");
    image.commit().unwrap();
    assert_eq!(image.log().unwrap(), replacement.as_bytes(), "committed");
    image.verify().unwrap();
}

/// The log is the domain's, not a state's: a snapshot does not hold it,
/// a rollback keeps it, and deleting a snapshot leaves it as it is.
#[test]
fn snapshots_and_rollbacks_keep_the_live_log() {
    let mut image = fresh(1024, 16);
    image.append_log(line(1).as_bytes());
    image.stage_page(0, &page(1)).unwrap();
    image.commit().unwrap();
    image.snapshot_create("before", 1).unwrap();
    image.append_log(line(2).as_bytes());
    image.stage_page(0, &page(2)).unwrap();
    image.commit().unwrap();
    image.snapshot_apply("before").unwrap();
    let both = [line(1), line(2)].concat();
    assert_eq!(image.log().unwrap(), both.as_bytes());
    image.append_log(line(3).as_bytes());
    image.snapshot_delete("before").unwrap();
    let all = [line(1), line(2), line(3)].concat();
    assert_eq!(image.log().unwrap(), all.as_bytes());
    image.verify().unwrap();
    let mut image =
        Image::open(MemoryDevice::from_bytes(image.into_device().into_bytes())).unwrap();
    assert_eq!(image.log().unwrap(), all.as_bytes());
}

#[test]
fn an_export_carries_the_log_and_a_fork_starts_without_one() {
    let mut image = fresh(1024, 16);
    image.append_log(line(1).as_bytes());
    image.stage_page(0, &page(1)).unwrap();
    image.commit().unwrap();
    image.append_log(line(2).as_bytes());
    let blocks = image.export_block_count(None).unwrap();
    let mut exported = image.export_to(None, MemoryDevice::new(blocks)).unwrap();
    let both = [line(1), line(2)].concat();
    assert_eq!(exported.log().unwrap(), both.as_bytes());
    exported.verify().unwrap();
    let mut forked = image
        .fork_to(
            None,
            MemoryDevice::new(blocks),
            persist::DomainId(7),
            "twin",
            None,
        )
        .unwrap();
    assert!(forked.log().unwrap().is_empty());
}

/// A power cut during a commit that logs leaves the log of the last
/// commit or of this one, and a clean image.
#[test]
fn a_power_cut_during_a_commit_that_logs_leaves_the_old_or_new_log() {
    let mut base = fresh(512, 16);
    let mut old = Vec::new();
    for index in 0..300 {
        old.extend_from_slice(line(index).as_bytes());
    }
    base.append_log(&old);
    base.commit().unwrap();
    let old = base.log().unwrap();
    let base = base.into_device().into_bytes();
    let mut added = Vec::new();
    for index in 300..420 {
        added.extend_from_slice(line(index).as_bytes());
    }
    let new = {
        let mut image = Image::open(MemoryDevice::from_bytes(base.clone())).unwrap();
        image.append_log(&added);
        image.commit().unwrap();
        image.log().unwrap()
    };
    assert!(new.ends_with(&added) && new != old);
    let mut saw_new = false;
    for writes in 0.. {
        let mut finished = false;
        for seed in 0..3 {
            let plan = FaultPlan {
                power_off_after_writes: Some(writes),
                ..FaultPlan::default()
            };
            let device = FaultyDevice::new(MemoryDevice::from_bytes(base.clone()), plan);
            let mut image = Image::open(device).unwrap();
            image.append_log(&added);
            finished = image.stage_page(3, &page(3)).is_ok() && image.commit().is_ok();
            let after = image.into_device().power_cut(seed).unwrap();
            let mut image = Image::open(after)
                .unwrap_or_else(|error| panic!("after {writes} writes, seed {seed}: {error}"));
            image.verify().unwrap();
            let log = image.log().unwrap();
            let is_new = log == new;
            assert!(is_new || log == old, "after {writes} writes");
            if finished {
                assert!(is_new, "a commit that returned Ok lost its log lines");
            }
            saw_new |= is_new;
            image.append_log(line(9999).as_bytes());
            image.commit().unwrap();
            image.verify().unwrap();
        }
        if finished {
            break;
        }
    }
    assert!(saw_new);
}

/// Where the log ring starts in a superblock: after the snapshot table.
const LOG_OFFSET: usize = 8 + 4 + 4 + 8 + 8 + 16 + 32 + 16 + 8 + 8 + 24 + 32;

/// Rewrites the newest superblock of `bytes` with `edit`, re-signed.
fn edit_superblock(bytes: &mut [u8], sequence: u64, edit: impl Fn(&mut [u8])) {
    let slot = (sequence % 2) as usize;
    let block = &mut bytes[slot * BLOCK_SIZE..][..BLOCK_SIZE];
    edit(block);
    let checksum = crc32c(&block[..BLOCK_SIZE - 4]);
    block[BLOCK_SIZE - 4..].copy_from_slice(&checksum.to_le_bytes());
}

/// A change to a superblock's bytes.
type Edit = Box<dyn Fn(&mut [u8])>;

#[test]
fn hostile_log_rings_are_refused() {
    let mut image = fresh(512, 16);
    for index in 0..200 {
        image.append_log(line(index).as_bytes());
    }
    image.commit().unwrap();
    let sequence = image.sequence();
    let bytes = image.into_device().into_bytes();
    let count_offset = LOG_OFFSET + LOG_BLOCKS * 16;
    let slot = (sequence % 2) as usize * BLOCK_SIZE;
    let count = u32::from_le_bytes(
        bytes[slot + count_offset..slot + count_offset + 4]
            .try_into()
            .unwrap(),
    );
    assert!(count >= 2, "the test needs a log of two blocks or more");
    let first_block = u64::from_le_bytes(bytes[slot + LOG_OFFSET..][..8].try_into().unwrap());

    // Contents a superblock's version does not allow make it no commit
    // of ours (as a torn one): the image opens at the older commit.
    let not_ours: Vec<(&str, Edit)> = vec![
        (
            "more blocks than a log keeps",
            Box::new(move |block| {
                block[count_offset..count_offset + 4].copy_from_slice(&17u32.to_le_bytes())
            }),
        ),
        (
            "a log in a version 1 superblock",
            Box::new(|block| block[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes())),
        ),
        (
            "no log in a version 3 superblock",
            Box::new(move |block| block[count_offset..count_offset + 4].fill(0)),
        ),
    ];
    for (what, edit) in not_ours {
        let mut hostile = bytes.clone();
        edit_superblock(&mut hostile, sequence, &*edit);
        let mut image = Image::open(MemoryDevice::from_bytes(hostile))
            .unwrap_or_else(|error| panic!("{what}: {error}"));
        assert_eq!(image.sequence(), sequence - 1, "{what}");
        assert!(image.log().unwrap().is_empty(), "{what}");
    }
    // A log ring that its version allows but that does not hold together
    // is a damaged commit, named as such.
    let damaged: Vec<(&str, Edit)> = vec![
        (
            "a block past its count",
            Box::new(move |block| {
                block[count_offset..count_offset + 4].copy_from_slice(&1u32.to_le_bytes())
            }),
        ),
        (
            "a block out of range",
            Box::new(|block| {
                block[LOG_OFFSET..LOG_OFFSET + 8].copy_from_slice(&9_999u64.to_le_bytes())
            }),
        ),
        (
            "a wrong checksum",
            Box::new(|block| block[LOG_OFFSET + 8] ^= 1),
        ),
        (
            "a block listed twice",
            Box::new(move |block| {
                let first: [u8; 16] = block[LOG_OFFSET..LOG_OFFSET + 16].try_into().unwrap();
                block[LOG_OFFSET + 16..LOG_OFFSET + 32].copy_from_slice(&first);
            }),
        ),
    ];
    for (what, edit) in damaged {
        let mut hostile = bytes.clone();
        edit_superblock(&mut hostile, sequence, &*edit);
        let error = Image::open(MemoryDevice::from_bytes(hostile)).unwrap_err();
        assert!(
            matches!(error, Error::NewestCommitDamaged { .. }),
            "{what}: {error}"
        );
    }
    // A log block whose payload length is out of bounds, re-checksummed.
    let mut hostile = bytes.clone();
    let block = &mut hostile[first_block as usize * BLOCK_SIZE..][..BLOCK_SIZE];
    block[16..20].copy_from_slice(&5_000u32.to_le_bytes());
    let crc = crc32c(block);
    edit_superblock(&mut hostile, sequence, |superblock| {
        superblock[LOG_OFFSET + 8..LOG_OFFSET + 12].copy_from_slice(&crc.to_le_bytes())
    });
    let error = Image::open(MemoryDevice::from_bytes(hostile)).unwrap_err();
    assert!(error.to_string().contains("log"), "{error}");
}

//! Named snapshots: round trips, copy-on-write sharing, limits, power cuts
//! during create, apply and delete, and hostile snapshot tables.

mod common;

use common::{fresh, page, read};
use persist::{
    BLOCK_SIZE, Error, FaultPlan, FaultyDevice, Image, MAX_SNAPSHOTS, MemoryDevice, PAGE_SIZE,
    SNAPSHOTS_FORMAT_VERSION, TagError, crc32c,
};

/// An image with pages 0..`pages` holding `page(seed + index)`, committed.
fn image_with_pages(blocks: u64, pages: u64, seed: u64) -> Image<MemoryDevice> {
    let mut image = fresh(blocks, 64);
    for page_index in 0..pages {
        image
            .stage_page(page_index, &page(seed + page_index))
            .unwrap();
    }
    image.commit().unwrap();
    image
}

fn tags(image: &mut Image<impl persist::BlockDevice>) -> Vec<String> {
    image
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|info| info.tag)
        .collect()
}

/// A rollback takes the domain's own state from the snapshot (with the
/// network record, whose socket numbers its memory holds) and keeps what
/// other domains rely on: the mailbox, the outbox and the message numbers
/// (so no message is lost or doubled), identity and totals.
#[test]
fn apply_keeps_messaging_identity_and_totals_live() {
    use persist::{DomainId, MessageCounts, StoredMessage, StoredOutboxMessage};
    let mut image = image_with_pages(2048, 4, 10);
    image.metadata_mut().clock_ns = 1_000;
    image.metadata_mut().network.listen = vec![6379];
    image.metadata_mut().network.connections = vec![4];
    image.snapshot_create("old", 0).unwrap();
    let peer = DomainId(7);
    let metadata = image.metadata_mut();
    metadata.clock_ns = 2_000;
    metadata.mailbox = vec![StoredMessage {
        sender: peer,
        bytes: b"arrived after".to_vec(),
    }];
    metadata.outbox = vec![StoredOutboxMessage {
        receiver: peer,
        sequence: 3,
        bytes: b"sent after".to_vec(),
    }];
    metadata.message_counts = MessageCounts {
        sent: vec![(peer, 3)],
        accepted: vec![(peer, 5)],
    };
    metadata.counters.fuel_used = 123_456;
    metadata.network.connections = vec![5, 6];
    image.stage_page(0, &page(99)).unwrap();
    image.commit().unwrap();
    let live = image.metadata().clone();

    image.snapshot_apply("old").unwrap();
    let mut image = Image::open(image.into_device()).unwrap();
    let rolled = image.metadata().clone();
    assert_eq!(read(&mut image, 0), page(10));
    assert_eq!(rolled.clock_ns, 1_000);
    // The socket numbers the snapshot's memory holds (they read as reset).
    assert_eq!(rolled.network.connections, [4]);
    assert_eq!(rolled.network.listen, [6379]);
    assert_eq!(rolled.mailbox, live.mailbox);
    assert_eq!(rolled.outbox, live.outbox);
    assert_eq!(rolled.message_counts, live.message_counts);
    assert_eq!(rolled.counters.fuel_used, 123_456);
    assert_eq!((rolled.id, &rolled.name), (live.id, &live.name));
    image.verify().unwrap();
}

#[test]
fn create_list_apply_delete_round_trip() {
    let mut image = image_with_pages(2048, 8, 100);
    image.metadata_mut().clock_ns = 5_000;
    let first = image.snapshot_create("before", 1_700_000_000).unwrap();
    image.verify().unwrap();
    // Change the live state: pages, a removed page, the clock.
    image.stage_page(0, &page(900)).unwrap();
    image.stage_page(7, &[0; PAGE_SIZE]).unwrap();
    image.stage_page(20, &page(901)).unwrap();
    image.metadata_mut().clock_ns = 9_000;
    image.commit().unwrap();
    let second = image.snapshot_create("after", 1_700_000_100).unwrap();
    assert!(second > first);

    let mut image = Image::open(image.into_device()).unwrap();
    image.verify().unwrap();
    let list = image.snapshots().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        image.snapshot_tags().collect::<Vec<_>>(),
        ["before", "after"]
    );
    assert_eq!(list[0].tag, "before");
    assert_eq!(list[0].id, first);
    assert_eq!(list[0].created, 1_700_000_000);
    assert_eq!(list[0].clock_ns, 5_000);
    assert_eq!(list[0].pages_stored, 8);
    assert_eq!(list[1].pages_stored, 8);
    assert_eq!(list[1].clock_ns, 9_000);
    assert!(list[0].exclusive_blocks > 0, "{list:?}");

    image.snapshot_apply("before").unwrap();
    assert_eq!(image.metadata().clock_ns, 5_000);
    assert_eq!(read(&mut image, 0), page(100));
    assert_eq!(read(&mut image, 7), page(107));
    assert_eq!(read(&mut image, 20), [0; PAGE_SIZE]);
    assert_eq!(image.stats().pages_stored, 8);
    image.verify().unwrap();
    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(read(&mut image, 0), page(100));
    assert_eq!(image.metadata().clock_ns, 5_000);
    image.verify().unwrap();

    image.snapshot_apply("after").unwrap();
    assert_eq!(read(&mut image, 0), page(900));
    assert_eq!(read(&mut image, 20), page(901));
    image.snapshot_delete("before").unwrap();
    image.verify().unwrap();
    assert_eq!(tags(&mut image), ["after"]);
    image.snapshot_delete("after").unwrap();
    assert_eq!(image.snapshot_count(), 0);
    image.verify().unwrap();
    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(read(&mut image, 20), page(901));
    image.verify().unwrap();
}

#[test]
fn a_snapshot_costs_a_few_blocks_whatever_the_pages() {
    for pages in [16u64, 512] {
        let mut image = image_with_pages(4096, pages, 1);
        let before = image.stats().blocks_free;
        image.snapshot_create("s", 0).unwrap();
        let after = image.stats().blocks_free;
        // The commit's metadata chain, table chain, free-space blocks: the
        // pages and page-map nodes are shared, not copied.
        assert!(
            before - after <= 8,
            "{pages} pages: a snapshot took {} blocks",
            before - after
        );
        // Changing one page copies it and its path, not the rest.
        image.stage_page(3, &page(77)).unwrap();
        let stats = image.commit().unwrap();
        assert!(stats.blocks_written <= 12, "{stats:?}");
        image.verify().unwrap();
    }
}

#[test]
fn deleting_gives_the_blocks_back() {
    let mut image = image_with_pages(4096, 64, 1);
    image.commit().unwrap();
    let free_at_start = image.stats().blocks_free;
    image.snapshot_create("old", 0).unwrap();
    // Rewrite every page: the snapshot alone holds the old ones.
    for page_index in 0..64 {
        image
            .stage_page(page_index, &page(1000 + page_index))
            .unwrap();
    }
    image.commit().unwrap();
    let list = image.snapshots().unwrap();
    assert!(list[0].exclusive_blocks >= 64, "{list:?}");
    image.snapshot_delete("old").unwrap();
    // Two more commits let the older superblocks go.
    image.commit().unwrap();
    image.commit().unwrap();
    let free_at_end = image.stats().blocks_free;
    assert!(
        free_at_end + 4 >= free_at_start,
        "{free_at_start} free before, {free_at_end} after"
    );
    image.verify().unwrap();
    let mut image = Image::open(image.into_device()).unwrap();
    image.verify().unwrap();
}

#[test]
fn sixty_four_snapshots_and_clear_refusals() {
    let mut image = image_with_pages(8192, 4, 1);
    for number in 0..MAX_SNAPSHOTS as u64 {
        image.stage_page(number % 4, &page(500 + number)).unwrap();
        image
            .snapshot_create(&format!("s{number}"), number)
            .unwrap();
    }
    assert_eq!(
        image.snapshot_create("one-more", 0),
        Err(Error::SnapshotTableFull { max: MAX_SNAPSHOTS })
    );
    assert_eq!(
        image.snapshot_create("s3", 0),
        Err(Error::DuplicateSnapshotTag { tag: "s3".into() })
    );
    assert_eq!(
        image.snapshot_apply("nope").unwrap_err(),
        Error::UnknownSnapshot { tag: "nope".into() }
    );
    assert_eq!(
        image.snapshot_delete("nope").unwrap_err(),
        Error::UnknownSnapshot { tag: "nope".into() }
    );
    assert_eq!(
        image.snapshot_create("a b", 0),
        Err(Error::InvalidTag(TagError::Character { at: 1, byte: b' ' }))
    );
    image.verify().unwrap();
    let mut image = Image::open(image.into_device()).unwrap();
    image.verify().unwrap();
    for number in [17u64, 40] {
        image.snapshot_apply(&format!("s{number}")).unwrap();
        assert_eq!(read(&mut image, number % 4), page(500 + number));
    }
    for number in 0..MAX_SNAPSHOTS as u64 {
        image.snapshot_delete(&format!("s{number}")).unwrap();
    }
    image.verify().unwrap();
    assert_eq!(image.snapshot_count(), 0);
}

#[test]
fn an_image_without_snapshots_keeps_version_one_and_its_bytes() {
    let image = image_with_pages(256, 4, 1);
    let bytes = image.into_device().into_bytes();
    assert_eq!(bytes[8..12], 1u32.to_le_bytes());
    let mut image = Image::open(MemoryDevice::from_bytes(bytes)).unwrap();
    image.snapshot_create("s", 0).unwrap();
    image.snapshot_delete("s").unwrap();
    let bytes = image.into_device().into_bytes();
    // The newest superblock says version 1 again once no snapshot is left.
    let image = Image::open(MemoryDevice::from_bytes(bytes.clone())).unwrap();
    let newest = (image.sequence() % 2) as usize * BLOCK_SIZE;
    assert_eq!(bytes[newest + 8..newest + 12], 1u32.to_le_bytes());
}

#[test]
fn export_writes_one_state_as_a_compact_image() {
    let mut image = image_with_pages(4096, 10, 1);
    image.metadata_mut().clock_ns = 42;
    image.snapshot_create("kept", 0).unwrap();
    image.stage_page(2, &page(333)).unwrap();
    image.commit().unwrap();
    let blocks = image.export_block_count(Some("kept")).unwrap();
    assert!(blocks < 200, "{blocks}");
    let mut exported = image
        .export_to(Some("kept"), MemoryDevice::new(blocks))
        .unwrap();
    assert_eq!(exported.snapshot_count(), 0);
    assert_eq!(read(&mut exported, 2), page(3));
    assert_eq!(exported.metadata().clock_ns, 42);
    let mut exported = Image::open(exported.into_device()).unwrap();
    exported.verify().unwrap();
    assert_eq!(exported.stored_pages().unwrap().len(), 10);
    let mut live = image.export_to(None, MemoryDevice::new(blocks)).unwrap();
    assert_eq!(read(&mut live, 2), page(333));
    live.verify().unwrap();
}

/// A fork is a new domain with the parent's pages and clock, a new ID and
/// name, an empty mailbox and no message numbers, one generation on.
#[test]
fn a_fork_is_a_new_domain_one_generation_on() {
    use persist::{DomainId, MessageCounts, StoredMessage, StoredStatus};
    let mut image = image_with_pages(2048, 6, 20);
    image.metadata_mut().clock_ns = 77;
    image.metadata_mut().mailbox = vec![StoredMessage {
        sender: DomainId(5),
        bytes: b"for the parent".to_vec(),
    }];
    image.metadata_mut().message_counts = MessageCounts {
        sent: vec![],
        accepted: vec![(DomainId(5), 1)],
    };
    image.commit().unwrap();
    let blocks = image.export_block_count(None).unwrap();
    let fork = image
        .fork_to(None, MemoryDevice::new(blocks), DomainId(99), "twin", None)
        .unwrap();
    let mut fork = Image::open(fork.into_device()).unwrap();
    fork.verify().unwrap();
    let metadata = fork.metadata().clone();
    assert_eq!(
        (metadata.id, metadata.name.as_str()),
        (DomainId(99), "twin")
    );
    assert_eq!(metadata.clock_ns, 77);
    assert!(metadata.mailbox.is_empty());
    assert!(metadata.message_counts.is_empty());
    assert_eq!(
        metadata.env.last().map(String::as_str),
        Some("AMBER_GENERATION=1")
    );
    assert_eq!(read(&mut fork, 5), page(25));

    // A fork of the fork is generation 2, and a fork can start stopped.
    let grandchild = fork
        .fork_to(
            None,
            MemoryDevice::new(blocks),
            DomainId(100),
            "twin2",
            Some(StoredStatus::Stopped),
        )
        .unwrap();
    assert_eq!(
        grandchild
            .metadata()
            .env
            .iter()
            .filter(|entry| entry.starts_with("AMBER_GENERATION"))
            .collect::<Vec<_>>(),
        ["AMBER_GENERATION=2"]
    );
    assert_eq!(grandchild.metadata().status, StoredStatus::Stopped);
    assert!(matches!(
        image.fork_to(
            None,
            MemoryDevice::new(blocks),
            DomainId(101),
            "bad name",
            None
        ),
        Err(Error::InvalidName(_))
    ));
}

/// Runs `operation` on an image whose device fails after each number of
/// writes in turn, cuts the power with several seeds, and checks that the
/// image opens with the old or the new snapshot set and verifies clean.
fn power_cuts_during(
    prepare: impl Fn(&mut Image<FaultyDevice<MemoryDevice>>),
    operation: impl Fn(&mut Image<FaultyDevice<MemoryDevice>>) -> Result<(), Error>,
    old_tags: &[&str],
    new_tags: &[&str],
) {
    let base = {
        let image = image_with_pages(1024, 12, 1);
        let device = FaultyDevice::new(image.into_device(), FaultPlan::default());
        let mut image = Image::open(device).unwrap();
        prepare(&mut image);
        image.into_device().into_inner().unwrap()
    };
    let mut saw_new = false;
    for writes in 0.. {
        let mut finished = false;
        for seed in 0..3 {
            let plan = FaultPlan {
                power_off_after_writes: Some(writes),
                ..FaultPlan::default()
            };
            let device =
                FaultyDevice::new(MemoryDevice::from_bytes(base.as_bytes().to_vec()), plan);
            let mut image = Image::open(device).unwrap();
            finished = operation(&mut image).is_ok();
            let after = image.into_device().power_cut(seed).unwrap();
            let mut image = Image::open(after)
                .unwrap_or_else(|error| panic!("after {writes} writes, seed {seed}: {error}"));
            image
                .verify()
                .unwrap_or_else(|error| panic!("after {writes} writes, seed {seed}: {error}"));
            let found = tags(&mut image);
            let is_old = found == old_tags;
            let is_new = found == new_tags;
            assert!(is_old || is_new, "after {writes} writes: {found:?}");
            if finished {
                assert!(is_new, "a snapshot operation that returned Ok was lost");
            }
            saw_new |= is_new;
            // The image goes on: a commit after the cut verifies too.
            image.stage_page(5, &page(4242)).unwrap();
            image.commit().unwrap();
            image.verify().unwrap();
        }
        if finished {
            break;
        }
    }
    assert!(saw_new);
}

#[test]
fn a_power_cut_during_create_leaves_the_old_or_new_set() {
    power_cuts_during(
        |image| {
            image.snapshot_create("a", 1).unwrap();
            image.stage_page(1, &page(50)).unwrap();
        },
        |image| image.snapshot_create("b", 2).map(|_| ()),
        &["a"],
        &["a", "b"],
    );
}

#[test]
fn a_power_cut_during_apply_leaves_the_old_or_new_state() {
    power_cuts_during(
        |image| {
            image.snapshot_create("a", 1).unwrap();
            image.stage_page(1, &page(50)).unwrap();
            image.stage_page(2, &[0; PAGE_SIZE]).unwrap();
            image.commit().unwrap();
        },
        |image| image.snapshot_apply("a").map(|_| ()),
        &["a"],
        &["a"],
    );
}

#[test]
fn a_power_cut_during_delete_leaves_the_old_or_new_set() {
    power_cuts_during(
        |image| {
            image.snapshot_create("a", 1).unwrap();
            for page_index in 0..12 {
                image
                    .stage_page(page_index, &page(70 + page_index))
                    .unwrap();
            }
            image.snapshot_create("b", 2).unwrap();
            image.stage_page(3, &page(99)).unwrap();
            image.commit().unwrap();
        },
        |image| image.snapshot_delete("a").map(|_| ()),
        &["a", "b"],
        &["b"],
    );
}

/// Rewrites the newest superblock of `bytes` with `edit`, re-signed.
fn edit_superblock(bytes: &mut [u8], sequence: u64, edit: impl Fn(&mut [u8])) {
    let slot = (sequence % 2) as usize;
    let block = &mut bytes[slot * BLOCK_SIZE..][..BLOCK_SIZE];
    edit(block);
    let checksum = crc32c(&block[..BLOCK_SIZE - 4]);
    block[BLOCK_SIZE - 4..].copy_from_slice(&checksum.to_le_bytes());
}

/// The snapshot table pointer's offset in a superblock.
const TABLE_OFFSET: usize = 8 + 4 + 4 + 8 + 8 + 16 + 32 + 16 + 8 + 8 + 24;

#[test]
fn hostile_snapshot_tables_are_refused() {
    let mut image = image_with_pages(512, 4, 1);
    image.snapshot_create("a", 1).unwrap();
    let sequence = image.sequence();
    let bytes = image.into_device().into_bytes();
    let slot = (sequence % 2) as usize * BLOCK_SIZE;
    assert_eq!(
        bytes[slot + 8..slot + 12],
        SNAPSHOTS_FORMAT_VERSION.to_le_bytes()
    );
    let table_block = u64::from_le_bytes(
        bytes[slot + TABLE_OFFSET..slot + TABLE_OFFSET + 8]
            .try_into()
            .unwrap(),
    );
    // A table claimed longer than any table: refused before it is read.
    let mut long = bytes.clone();
    edit_superblock(&mut long, sequence, |block| {
        block[TABLE_OFFSET + 16..TABLE_OFFSET + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    let error = Image::open(MemoryDevice::from_bytes(long)).unwrap_err();
    assert!(error.to_string().contains("snapshot table"), "{error}");
    // A table pointer past the image.
    let mut past = bytes.clone();
    edit_superblock(&mut past, sequence, |block| {
        block[TABLE_OFFSET..TABLE_OFFSET + 8].copy_from_slice(&10_000u64.to_le_bytes());
    });
    assert!(Image::open(MemoryDevice::from_bytes(past)).is_err());
    // Version 2 without a table, version 1 with one: not our superblocks,
    // so the older commit (without the snapshot) opens.
    let mut no_table = bytes.clone();
    edit_superblock(&mut no_table, sequence, |block| {
        block[TABLE_OFFSET..TABLE_OFFSET + 32].fill(0);
    });
    let opened = Image::open(MemoryDevice::from_bytes(no_table)).unwrap();
    assert_eq!(opened.sequence(), sequence - 1);
    // A table block whose bytes are garbage (re-signed): refused by name.
    let mut garbage = bytes.clone();
    let table_at = table_block as usize * BLOCK_SIZE;
    garbage[table_at + 24..table_at + 64].fill(0xff);
    let crc = crc32c(&garbage[table_at..table_at + BLOCK_SIZE]);
    edit_superblock(&mut garbage, sequence, |block| {
        block[TABLE_OFFSET + 8..TABLE_OFFSET + 12].copy_from_slice(&crc.to_le_bytes());
    });
    let error = Image::open(MemoryDevice::from_bytes(garbage)).unwrap_err();
    assert!(
        matches!(error, Error::NewestCommitDamaged { .. }),
        "{error}"
    );
}

/// A device that counts the blocks read.
struct Counting {
    inner: MemoryDevice,
    reads: u64,
}

impl persist::BlockDevice for Counting {
    fn read_block(
        &mut self,
        index: u64,
        buffer: &mut [u8; BLOCK_SIZE],
    ) -> Result<(), persist::DeviceError> {
        self.reads += 1;
        self.inner.read_block(index, buffer)
    }
    fn write_block(
        &mut self,
        index: u64,
        buffer: &[u8; BLOCK_SIZE],
    ) -> Result<(), persist::DeviceError> {
        self.inner.write_block(index, buffer)
    }
    fn flush(&mut self) -> Result<(), persist::DeviceError> {
        self.inner.flush()
    }
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
}

#[test]
fn opening_reads_a_tree_shared_by_every_snapshot_once() {
    let mut image = image_with_pages(4096, 300, 1);
    for number in 0..MAX_SNAPSHOTS {
        image.snapshot_create(&format!("s{number}"), 0).unwrap();
    }
    let mut counting = Counting {
        inner: image.into_device(),
        reads: 0,
    };
    let opened = Image::open(&mut counting).map(|image| image.snapshot_count());
    assert_eq!(opened, Ok(MAX_SNAPSHOTS));
    // The live map (1 root, 1 middle node, 2 leaves), bitmaps, metadata,
    // the table, and one metadata block per snapshot: the shared tree is
    // not walked 64 times.
    assert!(
        counting.reads < 2 * MAX_SNAPSHOTS as u64 + 40,
        "{} reads",
        counting.reads
    );
}

/// Random stages, commits, snapshot creates, applies and deletes, with
/// reopens: the live pages and every snapshot's pages always match a model,
/// and `verify` finds no leaked or doubly used block.
#[test]
fn random_snapshot_workloads_match_a_model() {
    use std::collections::BTreeMap;

    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut image = fresh(3000, 64);
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut committed = live.clone();
    let mut snapshots: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut serial = 0;
    let (mut applies, mut deletes) = (0, 0);
    for step in 0..600 {
        match next(12) {
            0..=4 => {
                let page_index = next(40) * 23;
                serial += 1;
                if next(6) == 0 {
                    image.stage_page(page_index, &[0; PAGE_SIZE]).unwrap();
                    live.remove(&page_index);
                } else {
                    image.stage_page(page_index, &page(serial)).unwrap();
                    live.insert(page_index, serial);
                }
            }
            5 | 6 => {
                image.commit().unwrap();
                committed = live.clone();
            }
            7 | 8 => {
                let tag = format!("t{}", next(20));
                match image.snapshot_create(&tag, step) {
                    Ok(_) => {
                        committed = live.clone();
                        snapshots.insert(tag, live.clone());
                    }
                    Err(Error::DuplicateSnapshotTag { .. }) => {
                        assert!(snapshots.contains_key(&tag));
                    }
                    Err(error) => panic!("step {step}: {error}"),
                }
            }
            9 => {
                if let Some(tag) = snapshots.keys().nth(next(8) as usize).cloned() {
                    image.snapshot_apply(&tag).unwrap();
                    applies += 1;
                    live = snapshots[&tag].clone();
                    committed = live.clone();
                }
            }
            10 => {
                if let Some(tag) = snapshots.keys().nth(next(8) as usize).cloned() {
                    image.snapshot_delete(&tag).unwrap();
                    deletes += 1;
                    snapshots.remove(&tag);
                    committed = live.clone();
                }
            }
            _ => {
                image = Image::open(image.into_device()).unwrap();
                live = committed.clone();
            }
        }
        if step % 10 == 0 {
            image
                .verify()
                .unwrap_or_else(|error| panic!("step {step}: {error}"));
            for page_index in (0..40).map(|slot| slot * 23) {
                let expected = live.get(&page_index).map_or([0; PAGE_SIZE], |&s| page(s));
                assert_eq!(read(&mut image, page_index), expected, "step {step}");
            }
            let listed: Vec<String> = tags(&mut image);
            let mut expected: Vec<String> = snapshots.keys().cloned().collect();
            expected.sort();
            let mut sorted = listed.clone();
            sorted.sort();
            assert_eq!(sorted, expected, "step {step}");
        }
    }
    assert!(
        applies > 10 && deletes > 10,
        "{applies} applies, {deletes} deletes"
    );
    // Every snapshot still holds its pages, checked by exporting each.
    for (tag, pages) in &snapshots {
        let blocks = image.export_block_count(Some(tag)).unwrap();
        let mut exported = image
            .export_to(Some(tag), MemoryDevice::new(blocks))
            .unwrap();
        for (&page_index, &seed) in pages {
            assert_eq!(read(&mut exported, page_index), page(seed), "{tag}");
        }
        assert_eq!(exported.stored_pages().unwrap().len(), pages.len());
    }
}

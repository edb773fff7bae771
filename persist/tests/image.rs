//! Round trips through create, stage, commit, open; stats; no-space; versions.

mod common;

use common::{MODULE, domain, fresh, page, read};
use persist::{
    BLOCK_SIZE, Error, Image, MemoryDevice, PAGE_MAP_HEIGHT, PAGE_SIZE, StoredGlobal,
    StoredMessage, StoredStatus, ValueType, module_sha256,
};

#[test]
fn pages_and_metadata_survive_reopen() {
    let mut image = fresh(256, 16);
    image.stage_page(0, &page(1)).unwrap();
    image.stage_page(200, &page(2)).unwrap();
    assert_eq!(read(&mut image, 200), page(2), "staged pages read back");
    let metadata = image.metadata_mut();
    metadata.status = StoredStatus::Exited(3);
    metadata.globals.push(StoredGlobal {
        index: 1,
        value_type: ValueType::I64,
        bits: u64::MAX,
    });
    metadata.mailbox.push(StoredMessage {
        sender: persist::DomainId(9),
        bytes: b"hello".to_vec(),
    });
    metadata.suspension = vec![1, 2, 3];
    metadata.clock_ns = 77;
    metadata.counters.fuel_used = 1000;
    let stats = image.commit().unwrap();
    assert_eq!(stats.sequence, 2);
    assert_eq!(stats.pages_written, 2);

    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(read(&mut image, 0), page(1));
    assert_eq!(read(&mut image, 200), page(2));
    assert_eq!(read(&mut image, 5), [0; PAGE_SIZE], "absent pages are zero");
    let metadata = image.metadata();
    assert_eq!(metadata.status, StoredStatus::Exited(3));
    assert_eq!(metadata.globals[0].bits, u64::MAX);
    assert_eq!(metadata.mailbox[0].bytes, b"hello");
    assert_eq!(metadata.suspension, [1, 2, 3]);
    assert_eq!(metadata.clock_ns, 77);
    assert_eq!(metadata.counters.commits, 1);
    assert_eq!(metadata.counters.fuel_used, 1000);
    assert_eq!(metadata.args, ["test", "--verbose"]);
    assert_eq!(metadata.env, ["HOME=/"]);
    assert_eq!(metadata.id, domain(16).id);
    assert_eq!(image.module().unwrap(), MODULE);
    assert_eq!(image.module_sha256(), module_sha256(MODULE));
    assert_eq!(image.stored_pages().unwrap(), [0, 200]);
    assert_eq!(image.stats().pages_stored, 2);
    let report = image.verify().unwrap();
    assert_eq!(report.pages_checked, 2);
}

#[test]
fn staging_a_zero_page_removes_it() {
    let mut image = fresh(128, 1);
    image.stage_page(3, &page(3)).unwrap();
    image.commit().unwrap();
    let used_with_page = image.stats().blocks_used;
    image.stage_page(3, &[0; PAGE_SIZE]).unwrap();
    assert_eq!(image.stored_pages().unwrap(), Vec::<u64>::new());
    image.commit().unwrap();
    assert_eq!(read(&mut image, 3), [0; PAGE_SIZE]);
    assert_eq!(image.stats().pages_stored, 0);
    assert!(image.stats().blocks_used < used_with_page);
    image.verify().unwrap();
}

#[test]
fn pages_past_the_memory_maximum_are_refused() {
    let mut image = fresh(64, 1);
    assert_eq!(
        image.stage_page(16, &page(0)),
        Err(Error::PageOutOfRange {
            page_index: 16,
            limit: 16
        })
    );
    let mut buffer = [0u8; PAGE_SIZE];
    assert!(matches!(
        image.read_page(1 << 40, &mut buffer),
        Err(Error::PageOutOfRange { .. })
    ));
}

#[test]
fn restaging_a_page_frees_the_earlier_copy_at_once() {
    let mut image = fresh(64, 1);
    let free_before = image.stats().blocks_free;
    for round in 0..200 {
        image.stage_page(1, &page(round)).unwrap();
    }
    assert_eq!(image.stats().blocks_free, free_before - 1);
    image.commit().unwrap();
    assert_eq!(read(&mut image, 1), page(199));
}

#[test]
fn commits_reuse_space_so_a_small_image_lasts_forever() {
    // 40 blocks hold a few pages; 500 commits rewriting them must not leak.
    let mut image = fresh(40, 1);
    for round in 0..500 {
        image.stage_page(round % 4, &page(round)).unwrap();
        image.commit().unwrap();
    }
    let mut image = Image::open(image.into_device()).unwrap();
    for page_index in 0..4 {
        assert_eq!(read(&mut image, page_index), page(496 + page_index));
    }
    image.verify().unwrap();
}

#[test]
fn a_full_image_reports_no_space_and_keeps_the_last_commit() {
    let mut image = fresh(48, 16);
    let mut committed = 0;
    let error = loop {
        match image.stage_page(committed, &page(committed)) {
            Ok(()) => {}
            Err(error) => break error,
        }
        match image.commit() {
            Ok(_) => committed += 1,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(error, Error::NoSpace { device_blocks: 48 }),
        "{error}"
    );
    assert!(committed > 5, "only {committed} pages fit");
    // The failed attempt changed nothing durable, and freeing space works.
    let mut image = Image::open(image.into_device()).unwrap();
    for page_index in 0..committed {
        assert_eq!(read(&mut image, page_index), page(page_index));
    }
    image.verify().unwrap();
    image.stage_page(0, &[0; PAGE_SIZE]).unwrap();
    image.commit().unwrap();
}

#[test]
fn a_failed_commit_can_be_retried_after_space_is_freed() {
    let mut image = fresh(32, 16);
    let mut page_index = 0;
    while image.stage_page(page_index, &page(page_index)).is_ok() {
        page_index += 1;
    }
    assert!(matches!(image.commit(), Err(Error::NoSpace { .. })));
    // Dropping some staged pages makes room; the retry commits the rest.
    for dropped in 0..8 {
        image.stage_page(dropped, &[0; PAGE_SIZE]).unwrap();
    }
    image.commit().unwrap();
    assert_eq!(image.metadata().counters.commits, 1);
    assert!(read(&mut image, 9) == page(9));
    assert!(read(&mut image, 5) == [0; PAGE_SIZE]);
    image.verify().unwrap();
}

#[test]
fn the_module_is_written_once_whatever_the_commits() {
    let module = vec![0xAB; 64 * 1024];
    let mut new_domain = domain(1);
    new_domain.module = &module;
    let mut image = Image::create(MemoryDevice::new(256), new_domain).unwrap();
    for round in 0..5 {
        image.stage_page(0, &page(round)).unwrap();
        let stats = image.commit().unwrap();
        // A page, three nodes, metadata, bitmap, free-space root, superblock:
        // nothing near the module's 17 blocks.
        assert!(stats.blocks_written <= 8, "{stats:?}");
    }
    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(image.module().unwrap(), module);
}

#[test]
fn a_commit_of_k_pages_writes_o_k_log_n_blocks() {
    // 1 GiB of memory (262,144 pages) in a sparse device.
    let mut image = fresh(8192, 16 * 1024);
    let memory_pages = image.metadata().page_limit();
    assert_eq!(memory_pages, 262_144);
    for &dirty in &[1u64, 16, 256] {
        for page_number in 0..dirty {
            // Spread the pages over the whole memory: the worst case.
            let page_index = page_number * (memory_pages / dirty) + 7;
            image.stage_page(page_index, &page(page_index)).unwrap();
        }
        let stats = image.commit().unwrap();
        let bound = dirty * (1 + u64::from(PAGE_MAP_HEIGHT)) + 8;
        assert!(
            stats.blocks_written <= bound,
            "{dirty} pages wrote {} blocks (bound {bound})",
            stats.blocks_written
        );
    }
    // Neighbouring pages share nodes: 256 pages in one leaf cost 256 + 3.
    for page_index in 1024..1280 {
        image.stage_page(page_index, &page(page_index)).unwrap();
    }
    let stats = image.commit().unwrap();
    assert!(stats.blocks_written <= 256 + 3 + 8, "{stats:?}");
    image.verify().unwrap();
}

#[test]
fn an_unknown_format_version_is_named() {
    let image = fresh(64, 1);
    let mut device = image.into_device();
    for slot in 0..2 {
        let block = &mut device.as_bytes_mut()[slot * BLOCK_SIZE..][..BLOCK_SIZE];
        block[8..12].copy_from_slice(&7u32.to_le_bytes());
        let checksum = persist::crc32c(&block[..BLOCK_SIZE - 4]);
        block[BLOCK_SIZE - 4..].copy_from_slice(&checksum.to_le_bytes());
    }
    let error = Image::open(device).unwrap_err();
    assert_eq!(
        error,
        Error::UnsupportedVersion {
            found: 7,
            supported: 3
        }
    );
    assert_eq!(
        error.to_string(),
        "image format version 7 is not supported (this code reads versions up to 3)"
    );
}

#[test]
fn create_refuses_bad_names_and_tiny_devices() {
    let long = "n".repeat(256);
    for name in [
        "",
        long.as_str(),
        "two words",
        "esc\x1b[2J",
        "-flag",
        "x]y",
        "naïve",
    ] {
        let mut new_domain = domain(1);
        new_domain.name = name;
        assert!(
            matches!(
                Image::create(MemoryDevice::new(64), new_domain),
                Err(Error::InvalidName(_))
            ),
            "{name:?}"
        );
    }
    for name in ["counter", "kv-2", "app_1.0", "9lives"] {
        let mut new_domain = domain(1);
        new_domain.name = name;
        assert!(
            Image::create(MemoryDevice::new(64), new_domain).is_ok(),
            "{name:?}"
        );
    }
    assert!(matches!(
        Image::create(MemoryDevice::new(4), domain(1)),
        Err(Error::DeviceTooSmall { .. })
    ));
}

#[test]
fn create_over_an_old_image_starts_from_scratch() {
    let mut image = fresh(64, 1);
    for round in 0..5 {
        image.stage_page(0, &page(round)).unwrap();
        image.commit().unwrap();
    }
    let image = Image::create(image.into_device(), domain(1)).unwrap();
    assert_eq!(image.sequence(), 1);
    let mut image = Image::open(image.into_device()).unwrap();
    assert_eq!(image.sequence(), 1);
    assert_eq!(read(&mut image, 0), [0; PAGE_SIZE]);
}

#[cfg(feature = "std")]
#[test]
fn a_file_device_holds_an_image() {
    let path = std::env::temp_dir().join(format!("persist-test-{}.img", std::process::id()));
    let device = persist::FileDevice::create(&path, 64).unwrap();
    let mut image = Image::create(device, domain(1)).unwrap();
    image.stage_page(2, &page(2)).unwrap();
    image.commit().unwrap();
    drop(image);
    let mut image = Image::open(persist::FileDevice::open(&path).unwrap()).unwrap();
    assert_eq!(read(&mut image, 2), page(2));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_network_declaration_is_stored_and_a_bad_one_refused_before_any_write() {
    let mut listening = domain(16);
    listening.network = persist::NetworkDeclaration {
        listen: vec![6379, 80],
        durable_replies: true,
    };
    let mut image = Image::create(MemoryDevice::new(256), listening).unwrap();
    let network = &image.metadata().network;
    assert_eq!(network.listen, [6379, 80]);
    assert!(network.durable_replies);
    assert!(network.connections.is_empty());
    // The sockets open at a commit are stored with it, and read back.
    image.metadata_mut().network.connections = vec![5];
    image.metadata_mut().network.nonblocking = vec![5];
    image.commit().unwrap();
    let image = Image::open(image.into_device()).unwrap();
    assert_eq!(
        image.metadata().network,
        persist::NetworkRecord {
            listen: vec![6379, 80],
            durable_replies: true,
            connections: vec![5],
            nonblocking: vec![5],
        }
    );

    for (listen, refusal) in [
        (vec![80, 0], persist::ListenError::PortZero),
        (
            vec![80, 80],
            persist::ListenError::DuplicatePort { port: 80 },
        ),
        (
            (1..=9).collect(),
            persist::ListenError::TooManyPorts { count: 9 },
        ),
    ] {
        let mut refused = domain(16);
        refused.network.listen = listen;
        let error = Image::create(MemoryDevice::new(256), refused).unwrap_err();
        assert_eq!(
            error,
            Error::MetadataRefused(persist::MetadataError::Listen(refusal))
        );
        assert!(error.to_string().contains("listen port"), "{error}");
    }
}

/// A commit reuses the blocks that commits before it freed, lowest first:
/// rewriting the same pages commit after commit keeps to the image's first
/// blocks whatever its size, so a sparse image file stays about as large as
/// what it stores.
#[test]
fn rewriting_the_same_pages_keeps_to_the_low_blocks() {
    let mut image = fresh(16_384, 1024);
    for round in 0..200 {
        for page_index in 0..64 {
            image
                .stage_page(page_index * 7, &page(round * 64 + page_index))
                .unwrap();
        }
        image.commit().unwrap();
    }
    let highest = persist::reachable_blocks(image.device_mut())
        .unwrap()
        .into_iter()
        .max()
        .unwrap();
    // Three commits' worth of 64 pages and their trees, not 200.
    assert!(highest < 600, "block {highest} is in use after 200 commits");
}

/// A device that counts reads, writes and flushes.
#[derive(Debug)]
struct Counting {
    inner: MemoryDevice,
    reads: u64,
    writes: u64,
    flushes: u64,
}

impl persist::BlockDevice for Counting {
    fn block_count(&self) -> u64 {
        self.inner.block_count()
    }
    fn read_block(
        &mut self,
        block: u64,
        buffer: &mut [u8; BLOCK_SIZE],
    ) -> Result<(), persist::DeviceError> {
        self.reads += 1;
        self.inner.read_block(block, buffer)
    }
    fn write_block(
        &mut self,
        block: u64,
        buffer: &[u8; BLOCK_SIZE],
    ) -> Result<(), persist::DeviceError> {
        self.writes += 1;
        self.inner.write_block(block, buffer)
    }
    fn flush(&mut self) -> Result<(), persist::DeviceError> {
        self.flushes += 1;
        self.inner.flush()
    }
}

/// A commit that rewrites pages whose path the last commit wrote reads
/// nothing from the disk (the nodes come from the image's node cache): on
/// a disk, each read would be a request of its own between the writes.
#[test]
fn a_commit_of_recently_written_pages_reads_nothing() {
    let device = Counting {
        inner: MemoryDevice::new(4096),
        reads: 0,
        writes: 0,
        flushes: 0,
    };
    let mut image = Image::create(device, domain(16)).unwrap();
    for round in 0..20 {
        image.stage_page(3, &page(round)).unwrap();
        image.stage_page(200, &page(round + 1000)).unwrap();
        let reads_before = image.device().reads;
        image.commit().unwrap();
        if round > 0 {
            assert_eq!(image.device().reads, reads_before, "round {round}");
        }
    }
    let (writes, flushes) = (image.device().writes, image.device().flushes);
    image.stage_page(3, &page(77)).unwrap();
    image.commit().unwrap();
    // The page, its three nodes, the metadata, the space map and the
    // superblock; two flushes.
    assert!(
        image.device().writes - writes <= 8,
        "{}",
        image.device().writes - writes
    );
    assert_eq!(image.device().flushes - flushes, 2);
    assert_eq!(read(&mut image, 3), page(77));
    // A reopened image reads what it needs, once, then no more.
    let mut image = Image::open(image.into_device()).unwrap();
    image.stage_page(3, &page(78)).unwrap();
    image.commit().unwrap();
    let reads = image.device().reads;
    image.stage_page(3, &page(79)).unwrap();
    image.commit().unwrap();
    assert_eq!(image.device().reads, reads);
    image.verify().unwrap();
    assert_eq!(read(&mut image, 3), page(79));
    assert_eq!(read(&mut image, 200), page(1019));
}

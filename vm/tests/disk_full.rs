//! A full disk pauses its domain, keeps the last commit, and others run on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use vm::persist::{Image, MemoryDevice, NewDomain};
use vm::{
    Commit, Domain, DomainRecord, DomainStatus, Error, HashedHeapBacking, MemoryBacking,
    MemoryStorage, PAGE_BYTES, PauseReason, PersistStorage, Scheduler, SchedulerEvent, Storage,
    Wake, new_engine,
};

/// Forever: grows its memory by one wasm page, writes every 4 KiB page of it
/// (its index + 1 at its start), and commits.
const DISKFILL: &str = r#"(module
    (import "env" "memory" (memory 1 64))
    (import "amber" "checkpoint" (func $checkpoint (result i32)))
    (func (export "_start")
        (local $page i32)
        (local $address i32)
        (loop $forever
            (local.set $page (memory.grow (i32.const 1)))
            (if (i32.eq (local.get $page) (i32.const -1)) (then unreachable))
            (local.set $address (i32.shl (local.get $page) (i32.const 16)))
            (loop $touch
                (i32.store (local.get $address) (i32.add (local.get $address) (i32.const 1)))
                (local.set $address (i32.add (local.get $address) (i32.const 4096)))
                (br_if $touch (i32.and (local.get $address) (i32.const 0xffff))))
            (drop (call $checkpoint))
            (br $forever))))"#;

/// Loops forever without a host call.
const BUSY: &str = r#"(module
    (import "env" "memory" (memory 1 1))
    (func (export "_start") (loop $forever (br $forever))))"#;

/// A 1 MiB image (256 blocks) holding DISKFILL.
fn small_image(blocks: u64) -> Image<MemoryDevice> {
    image_of(blocks, 7, "diskfill", DISKFILL, 64)
}

/// An image of `blocks` blocks holding domain `name` running `wat`.
fn image_of(blocks: u64, id: u128, name: &str, wat: &str, max_pages: u64) -> Image<MemoryDevice> {
    let module = wasm(wat);
    Image::create(
        MemoryDevice::new(blocks),
        NewDomain {
            id: vm::DomainId(id),
            name,
            module: &module,
            memory_pages: 1,
            memory_max_pages: max_pages,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .unwrap()
}

/// A domain whose storage is the image itself, as the kernel holds its own:
/// the test reaches the image through the typed storage, with no downcast.
fn open_image(
    engine: &vm::wasmi::Engine,
    platform: &Arc<TestPlatform>,
    image: Image<MemoryDevice>,
) -> Domain<PersistStorage<MemoryDevice>> {
    Domain::open_compiled(
        engine,
        platform.clone(),
        PersistStorage::new(image),
        Box::new(HashedHeapBacking::new()),
        None,
    )
    .unwrap()
}

#[test]
fn a_full_disk_pauses_the_domain_keeps_its_last_commit_and_spares_the_others() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let diskfill = open_image(&engine, &platform, small_image(256));
    let busy = open_image(&engine, &platform, image_of(1024, 1, "busy", BUSY, 1));
    let mut scheduler = Scheduler::new(10_000);
    scheduler.add(diskfill, "diskfill handle").unwrap();
    scheduler.add(busy, "busy handle").unwrap();
    let mut events = Vec::new();
    for _ in 0..2_000 {
        events.extend(scheduler.run_round());
        platform.advance_ns(1_000_000);
    }
    // Said once, and paused domains are left out of checkpoint_all.
    assert_eq!(
        events,
        [SchedulerEvent::Paused {
            handle: "diskfill handle",
            name: "diskfill".into(),
            reason: PauseReason::DiskFull
        }]
    );
    let checkpointed: Vec<String> = scheduler
        .checkpoint_all()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(checkpointed, ["busy"]);

    let diskfill = scheduler.domain("diskfill").unwrap();
    assert_eq!(diskfill.pause_reason(), Some(PauseReason::DiskFull));
    assert_eq!(diskfill.status(), DomainStatus::Running);
    assert_eq!(diskfill.wake(), Wake::OnMessage);
    let committed_pages = diskfill.record().memory_pages;
    assert!(committed_pages > 4, "only {committed_pages} wasm pages");
    // Paused: no more fuel, no more commits; the busy domain runs on.
    let fuel = diskfill.fuel_used();
    let busy_fuel = scheduler.domain("busy").unwrap().fuel_used();
    run_rounds(&mut scheduler, &platform, 100);
    let diskfill = scheduler.domain_mut("diskfill").unwrap();
    assert_eq!(diskfill.fuel_used(), fuel);
    assert_eq!(diskfill.record().memory_pages, committed_pages);
    assert!(scheduler.domain("busy").unwrap().fuel_used() >= busy_fuel + 100 * 10_000);
    // A periodic checkpoint of the paused domain fails the same way.
    let diskfill = scheduler.domain_mut("diskfill").unwrap();
    assert!(matches!(
        diskfill.request_checkpoint(),
        Err(Error::DiskFull { .. })
    ));
    // Resuming retries the commit: still no room, still paused.
    assert!(matches!(
        diskfill.resume_from_pause(),
        Err(Error::DiskFull { device_blocks: 256 })
    ));
    assert_eq!(diskfill.pause_reason(), Some(PauseReason::DiskFull));

    // The image holds the last commit, whole: it verifies, and a reopened
    // domain has every page the committed rounds wrote.
    diskfill.storage_mut().image_mut().verify().unwrap();
    let (handle, diskfill) = scheduler.remove("diskfill").unwrap();
    assert_eq!(handle, "diskfill handle");
    let device = diskfill.into_storage().into_image().device().clone();
    let reopened = Image::open(device).unwrap();
    let domain = open_with(&engine, &platform, Box::new(PersistStorage::new(reopened))).unwrap();
    assert_eq!(domain.record().memory_pages, committed_pages);
    let memory = domain.memory_bytes();
    for wasm_page in 1..committed_pages as usize {
        for page in 0..16 {
            let address = wasm_page * 65536 + page * PAGE_BYTES;
            let stored = u32::from_le_bytes(memory[address..address + 4].try_into().unwrap());
            assert_eq!(stored as usize, address + 1, "page at {address:#x}");
        }
    }
}

/// MemoryStorage whose commits fail as a full disk while `is_full` is set.
struct FillableStorage {
    inner: MemoryStorage,
    is_full: Arc<AtomicBool>,
}

impl Storage for FillableStorage {
    fn load(&mut self) -> Result<DomainRecord, Error> {
        self.inner.load()
    }
    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), Error> {
        self.inner.read_page(page_index, page)
    }
    fn stored_pages(&mut self) -> Result<Vec<u64>, Error> {
        self.inner.stored_pages()
    }
    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), Error> {
        if self.is_full.load(Ordering::SeqCst) {
            return Err(Error::DiskFull { device_blocks: 9 });
        }
        self.inner.commit(commit)
    }
}

#[test]
fn a_paused_domain_resumes_once_its_commit_fits_and_its_call_returns_ok() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let is_full = Arc::new(AtomicBool::new(false));
    let storage = FillableStorage {
        inner: MemoryStorage::new(record("diskfill", 7, wasm(DISKFILL))),
        is_full: is_full.clone(),
    };
    // Opening commits the memory as instantiation leaves it; then the disk fills.
    let mut domain = open_with(&engine, &platform, Box::new(storage)).unwrap();
    let commits_at_open = domain.record().commits;
    is_full.store(true, Ordering::SeqCst);
    for _ in 0..10 {
        domain.run(10_000);
    }
    assert_eq!(domain.pause_reason(), Some(PauseReason::DiskFull));
    // The first round's memory, never committed.
    assert_eq!(domain.memory_bytes().len(), 2 * 65536);
    assert_eq!(domain.record().commits, commits_at_open);
    assert!(matches!(
        domain.resume_from_pause(),
        Err(Error::DiskFull { .. })
    ));

    is_full.store(false, Ordering::SeqCst);
    domain.resume_from_pause().unwrap();
    assert_eq!(domain.pause_reason(), None);
    assert_eq!(domain.record().memory_pages, 2);
    assert_eq!(domain.resume_from_pause(), Err(Error::NotPaused));
    for _ in 0..10 {
        domain.run(10_000);
    }
    assert!(domain.record().memory_pages > 2);
    assert_eq!(domain.status(), DomainStatus::Running);
}

/// The host backing plus a pager-like reserve: before each slice it takes
/// every free block it can from the image, as the kernel's pager pool does
/// on a small disk.
struct GreedyBacking {
    inner: HashedHeapBacking,
    reserve: Vec<u64>,
    released: Arc<std::sync::atomic::AtomicUsize>,
}

impl MemoryBacking for GreedyBacking {
    fn static_buffer(&mut self, maximum_bytes: u64) -> Option<&'static mut [u8]> {
        self.inner.static_buffer(maximum_bytes)
    }
    fn dirty_pages(&mut self, memory: &[u8]) -> Vec<u64> {
        self.inner.dirty_pages(memory)
    }
    fn commit_succeeded(&mut self) {
        self.inner.commit_succeeded();
    }
    fn reset_to(&mut self, memory: &[u8]) {
        self.inner.reset_to(memory);
    }
    fn before_slice(&mut self, _memory: &[u8], storage: &mut dyn Storage) -> Result<(), Error> {
        let paging = storage.pager().unwrap();
        let mut count = 256;
        while count > 0 {
            if let Ok(blocks) = paging.reserve_blocks(count) {
                self.reserve.extend(blocks);
            }
            count /= 2;
        }
        Ok(())
    }
    fn release_reserve(&mut self, storage: &mut dyn Storage) -> usize {
        let blocks = std::mem::take(&mut self.reserve);
        storage.pager().unwrap().release_blocks(&blocks);
        self.released.fetch_add(blocks.len(), Ordering::SeqCst);
        blocks.len()
    }
}

/// Runs DISKFILL on a 256-block image until it pauses; returns the wasm
/// pages its last commit holds.
fn pages_when_full(backing: Box<dyn MemoryBacking>) -> u32 {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let storage = Box::new(PersistStorage::new(small_image(256)));
    let mut domain = vm::Domain::open(&engine, platform.clone(), storage, backing).unwrap();
    for _ in 0..2_000 {
        domain.run(10_000);
        platform.advance_ns(1_000_000);
    }
    assert_eq!(domain.pause_reason(), Some(PauseReason::DiskFull));
    domain.record().memory_pages
}

#[test]
fn blocks_kept_for_page_outs_are_given_back_before_a_domain_is_paused() {
    let without_reserve = pages_when_full(Box::new(HashedHeapBacking::new()));
    let released = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let with_reserve = pages_when_full(Box::new(GreedyBacking {
        inner: HashedHeapBacking::new(),
        reserve: Vec::new(),
        released: released.clone(),
    }));
    assert!(released.load(Ordering::SeqCst) > 0);
    assert!(
        with_reserve + 1 >= without_reserve,
        "paused at {with_reserve} wasm pages with a reserve, {without_reserve} without"
    );
}

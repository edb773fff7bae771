//! ProtectedBacking finds exactly the pages written, alone and under a domain.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;
use vm::{
    Domain, DomainId, DomainRecord, HashedHeapBacking, MemoryBacking, MemoryStorage, PAGE_BYTES,
    RunOutcome, StdPlatform, Storage, new_engine,
};
use vm_host::ProtectedBacking;

/// A backing with its window's buffer, as the vm would take it.
fn backing_of(pages: usize) -> (ProtectedBacking, &'static mut [u8]) {
    let mut backing = ProtectedBacking::new();
    let buffer = backing
        .static_buffer((pages * PAGE_BYTES) as u64)
        .expect("a window on this host");
    assert!(backing.is_protected());
    (backing, buffer)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Round after round, a commit sees the pages written since the last
    /// one, whatever was written (the same byte again counts too).
    #[test]
    fn each_commit_reports_the_pages_written_since_the_last(
        rounds in prop::collection::vec(
            prop::collection::vec((0usize..64, 0usize..PAGE_BYTES, any::<u8>()), 0..40),
            1..6,
        ),
    ) {
        let (mut backing, buffer) = backing_of(64);
        for writes in rounds {
            let mut expected = BTreeSet::new();
            for (page_index, offset, value) in writes {
                buffer[page_index * PAGE_BYTES + offset] = value;
                expected.insert(page_index as u64);
            }
            let expected: Vec<u64> = expected.into_iter().collect();
            prop_assert_eq!(backing.dirty_pages(buffer), expected);
            backing.commit_succeeded();
            prop_assert!(backing.dirty_pages(buffer).is_empty());
        }
    }
}

#[test]
fn a_failed_commit_keeps_its_pages_dirty() {
    let (mut backing, buffer) = backing_of(8);
    buffer[3 * PAGE_BYTES] = 1;
    assert_eq!(backing.dirty_pages(buffer), vec![3]);
    // No commit_succeeded: the commit failed.
    buffer[5 * PAGE_BYTES + 9] = 2;
    assert_eq!(backing.dirty_pages(buffer), vec![3, 5]);
    backing.commit_succeeded();
    assert!(backing.dirty_pages(buffer).is_empty());
}

#[test]
fn only_pages_inside_memory_are_reported() {
    let (mut backing, buffer) = backing_of(16);
    buffer[2 * PAGE_BYTES] = 1;
    buffer[12 * PAGE_BYTES] = 1;
    // wasmi's memory is 8 pages now; the window is as large as the maximum.
    assert_eq!(backing.dirty_pages(&buffer[..8 * PAGE_BYTES]), vec![2]);
}

#[test]
fn a_restore_starts_clean_and_knows_what_instantiation_wrote() {
    let (mut backing, buffer) = backing_of(8);
    buffer[PAGE_BYTES] = 7;
    assert_eq!(backing.pages_written_since_creation(buffer), Some(vec![1]));
    buffer[6 * PAGE_BYTES] = 7;
    backing.reset_to(buffer);
    assert!(backing.dirty_pages(buffer).is_empty());
    buffer[PAGE_BYTES + 1] = 8;
    assert_eq!(backing.dirty_pages(buffer), vec![1]);
}

/// Every page made writable splits the mapping; past `vm.max_map_count`
/// mappings the backing stops tracking and reports every page, then
/// tracks again after the next commit.
#[test]
fn too_many_scattered_writes_report_every_page_until_the_next_commit() {
    let max_map_count: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(65_530);
    // Every other page written: two mappings per written page.
    let written = max_map_count / 2 + 1_000;
    let pages = written * 2;
    let (mut backing, buffer) = backing_of(pages);
    for page_index in 0..written {
        buffer[page_index * 2 * PAGE_BYTES] = 1;
    }
    let dirty = backing.dirty_pages(buffer);
    assert_eq!(dirty.len(), pages, "every page counts once tracking is off");
    backing.commit_succeeded();
    assert!(backing.dirty_pages(buffer).is_empty());
    buffer[5 * PAGE_BYTES] = 2;
    assert_eq!(backing.dirty_pages(buffer), vec![5], "tracking is back");
    for page_index in 0..written {
        assert_eq!(buffer[page_index * 2 * PAGE_BYTES], 1);
    }
}

#[test]
fn threads_track_their_own_windows() {
    let workers: Vec<_> = (0..4u8)
        .map(|worker| {
            std::thread::spawn(move || {
                let (mut backing, buffer) = backing_of(256);
                for round in 0..50usize {
                    let page_index = (round * 7 + usize::from(worker)) % 256;
                    buffer[page_index * PAGE_BYTES + usize::from(worker)] = worker;
                    assert_eq!(backing.dirty_pages(buffer), vec![page_index as u64]);
                    backing.commit_succeeded();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker thread");
    }
}

#[test]
fn dropped_windows_give_their_slots_back() {
    for _ in 0..(vm_host::protection::SLOT_COUNT + 100) {
        let (mut backing, buffer) = backing_of(16);
        buffer[0] = 1;
        assert_eq!(backing.dirty_pages(buffer), vec![0]);
    }
}

/// A memory that counts, at every third page of 1 MiB, how often it ran,
/// clears the word its data segment set, then waits for a message for ever.
const EVERY_THIRD_PAGE: &str = r#"(module
    (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
    (import "env" "memory" (memory 16 64))
    (data (i32.const 12296) "data")
    (func (export "_start") (local $address i32)
        (loop $again
            (i32.store (local.get $address) (i32.add (i32.load (local.get $address)) (i32.const 1)))
            (local.set $address (i32.add (local.get $address) (i32.const 12288)))
            (br_if $again (i32.lt_u (local.get $address) (i32.const 1048576))))
        (i32.store (i32.const 12296) (i32.const 0))
        (drop (call $recv (i32.const 0) (i32.const 0) (i32.const 0) (i64.const -1)))))"#;

fn open(storage: Box<dyn Storage>, backing: Box<dyn MemoryBacking>) -> Domain {
    Domain::open(
        &new_engine(),
        Arc::new(StdPlatform::default()),
        storage,
        backing,
    )
    .expect("the domain opens")
}

#[test]
fn a_domain_commits_and_restores_through_its_window() {
    let module = wat::parse_str(EVERY_THIRD_PAGE).expect("test WAT parses");
    let record = DomainRecord::new(DomainId::from_le_bytes([7; 16]), "thirds", module);
    let mut domain = open(
        Box::new(MemoryStorage::new(record)),
        Box::new(ProtectedBacking::new()),
    );
    assert_eq!(domain.run(1_000_000), RunOutcome::Waiting);
    domain.commit().expect("the first commit");
    let written: Vec<u64> = (0..256).step_by(3).collect();
    let mut storage = domain.into_storage();
    assert_eq!(storage.stored_pages().expect("pages"), written);

    // Restored into a window, the domain runs again and counts to two.
    let mut domain = open(storage, Box::new(ProtectedBacking::new()));
    assert_eq!(
        &domain.memory_bytes()[12296..12300],
        b"\0\0\0\0",
        "memory reads as the image, not as the data segment"
    );
    assert_eq!(domain.run(1_000_000), RunOutcome::Waiting);
    domain.commit().expect("the second commit");
    let storage = domain.into_storage();

    // Read back by the hashing backing, as another host would.
    let domain = open(storage, Box::new(HashedHeapBacking::new()));
    let memory = domain.memory_bytes();
    for page_index in 0..256usize {
        let word = &memory[page_index * PAGE_BYTES..page_index * PAGE_BYTES + 4];
        let expected: u32 = if page_index % 3 == 0 { 2 } else { 0 };
        assert_eq!(word, expected.to_le_bytes(), "page {page_index}");
    }
}

/// Run in a child process: a write to a read-only page that is no window's.
const FOREIGN_FAULT: &str = "VM_HOST_TEST_FOREIGN_FAULT";
/// Run in a child process: a stack overflow on a thread.
const STACK_OVERFLOW: &str = "VM_HOST_TEST_STACK_OVERFLOW";

#[test]
fn a_fault_outside_every_window_still_kills_the_process() {
    if std::env::var_os(FOREIGN_FAULT).is_some() {
        let (_backing, _buffer) = backing_of(4);
        // SAFETY: a fresh read-only anonymous page that is no window's.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_BYTES,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        // SAFETY: none; this child exists to die of this write. The
        // handler must pass the fault on rather than make the page writable.
        unsafe { std::ptr::write_volatile(page.cast::<u8>(), 1) };
        eprintln!("the write to a foreign read-only page went through");
        std::process::exit(0);
    }
    let output = child(
        FOREIGN_FAULT,
        "a_fault_outside_every_window_still_kills_the_process",
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSEGV),
        "the child died of SIGSEGV: {output:?}"
    );
}

#[test]
fn a_stack_overflow_is_still_reported_as_one() {
    if std::env::var_os(STACK_OVERFLOW).is_some() {
        let (_backing, _buffer) = backing_of(4);
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| recurse(0))
            .expect("a thread");
        let _ = worker.join();
        return;
    }
    let output = child(STACK_OVERFLOW, "a_stack_overflow_is_still_reported_as_one");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has overflowed its stack"),
        "Rust's report reached stderr through our handler: {stderr}"
    );
}

#[expect(unconditional_recursion, reason = "it overflows the stack on purpose")]
fn recurse(depth: u64) -> u64 {
    let padding = std::hint::black_box([depth; 64]);
    padding[0] + recurse(depth + 1)
}

fn child(variable: &str, test: &str) -> std::process::Output {
    Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(variable, "1")
        .output()
        .expect("the child test runs")
}

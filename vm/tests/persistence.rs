//! Checkpoint and restore: memory, globals and a suspended stack survive.
//!
//! `COUNTER` does by hand what binaryen's asyncify pass does to a loop whose
//! counter `n` is a local: at an unwind it pushes `n` into the save buffer
//! and returns; at a rewind it pops `n` and jumps straight back into `sleep`.
//! So only a correct unwind, commit, restore and rewind keep counting.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use vm::persist::{Image, NewDomain};
use vm::{
    BlockingImport, DomainStatus, Error, MemoryStorage, PersistStorage, RunOutcome, Storage,
    new_engine,
};

const COUNTER: &str = r#"(module
    (import "amber" "sleep" (func $sleep (param i64)))
    (import "amber" "log" (func $log (param i32 i32 i32)))
    (import "env" "memory" (memory 1 4))
    (data (i32.const 0) "count ??")
    (global $state (export "amber.global.0") (mut i32) (i32.const 0))
    (global $data (export "amber.global.1") (mut i32) (i32.const 0))
    (func (export "asyncify_start_unwind") (param i32)
        (global.set $state (i32.const 1)) (global.set $data (local.get 0)))
    (func (export "asyncify_stop_unwind") (global.set $state (i32.const 0)))
    (func (export "asyncify_start_rewind") (param i32)
        (global.set $state (i32.const 2)) (global.set $data (local.get 0)))
    (func (export "asyncify_stop_rewind") (global.set $state (i32.const 0)))
    (func (export "asyncify_get_state") (result i32) (global.get $state))
    (func (export "_start") (local $n i32) (local $cursor i32)
        (if (i32.eq (global.get $state) (i32.const 2))
            (then
                (local.set $cursor (i32.sub (i32.load (global.get $data)) (i32.const 4)))
                (local.set $n (i32.load (local.get $cursor)))
                (i32.store (global.get $data) (local.get $cursor))))
        (loop $again
            (if (i32.ne (global.get $state) (i32.const 2))
                (then
                    (local.set $n (i32.add (local.get $n) (i32.const 1)))
                    (i32.store8 (i32.const 6) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 10))))
                    (i32.store8 (i32.const 7) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
                    (call $log (i32.const 3) (i32.const 0) (i32.const 8))))
            (call $sleep (i64.const 100000000))
            (if (i32.eq (global.get $state) (i32.const 1))
                (then
                    (local.set $cursor (i32.load (global.get $data)))
                    (i32.store (local.get $cursor) (local.get $n))
                    (i32.store (global.get $data) (i32.add (local.get $cursor) (i32.const 4)))
                    (return)))
            (br $again))))"#;

/// Runs `domain` through `sleeps` sleeps of 100 ms.
fn run_sleeps(domain: &mut vm::Domain, platform: &TestPlatform, sleeps: usize) {
    for _ in 0..sleeps {
        assert_eq!(domain.run(100_000), RunOutcome::Waiting);
        platform.advance_ns(100_000_000);
    }
}

fn counts(platform: &TestPlatform) -> Vec<String> {
    platform
        .lines()
        .into_iter()
        .filter_map(|line| line.strip_prefix("[counter] log: count ").map(String::from))
        .collect()
}

#[test]
fn a_counter_resumes_mid_loop_from_its_last_commit() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "counter", 1, COUNTER).unwrap();
    assert!(domain.has_asyncify());
    run_sleeps(&mut domain, &platform, 3);
    assert_eq!(
        domain.request_checkpoint(),
        Ok(true),
        "unwound: a safe point"
    );
    let record = domain.record().clone();
    let suspension = record
        .suspension
        .clone()
        .expect("committed while suspended");
    assert_eq!(suspension.import, BlockingImport::AmberSleep);
    assert_eq!(record.memory_pages, 2, "one page grown for the save area");
    assert_eq!(record.globals.len(), 2);
    run_sleeps(&mut domain, &platform, 2);
    assert_eq!(counts(&platform), ["01", "02", "03", "04", "05"]);
    // A crash: everything after the commit is lost; reopen from storage.
    let storage = domain.into_storage();
    let mut domain = open_with(&engine, &platform, storage).unwrap();
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Waiting,
        "rewound and asleep"
    );
    let fuel_used = domain.fuel_used();
    assert_eq!(domain.run(100_000), RunOutcome::Waiting, "still asleep");
    assert_eq!(
        domain.fuel_used(),
        fuel_used,
        "a sleeping domain is not rewound"
    );
    platform.advance_ns(100_000_000);
    run_sleeps(&mut domain, &platform, 2);
    assert_eq!(
        counts(&platform),
        ["01", "02", "03", "04", "05", "04", "05", "06"]
    );
}

#[test]
fn a_domain_paused_for_migration_commits_running_and_resumes_mid_loop() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "counter", 1, COUNTER).unwrap();
    run_sleeps(&mut domain, &platform, 3);
    assert_eq!(
        domain.hold_for_migration(),
        Ok(true),
        "asleep: a safe point"
    );
    assert_eq!(domain.record().status, DomainStatus::Running);
    assert_eq!(domain.status(), DomainStatus::Stopped, "held here");
    let fuel_used = domain.fuel_used();
    platform.advance_ns(100_000_000);
    domain.run(100_000);
    assert_eq!(domain.fuel_used(), fuel_used, "a held domain does not run");
    // A power cut now: the image says running, so it goes on after a reboot.
    let storage = domain.into_storage();
    let mut domain = open_with(&engine, &platform, storage).unwrap();
    assert_eq!(domain.status(), DomainStatus::Running);
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Waiting,
        "rewound and asleep"
    );
    platform.advance_ns(100_000_000);
    run_sleeps(&mut domain, &platform, 1);
    assert_eq!(counts(&platform), ["01", "02", "03", "04", "05"]);
}

#[test]
fn checkpoints_are_taken_at_the_next_blocking_call_when_busy() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "counter", 1, COUNTER).unwrap();
    // Start counts as a safe point: nothing ran since the first commit.
    assert_eq!(domain.request_checkpoint(), Ok(true));
    run_sleeps(&mut domain, &platform, 2);
    assert_eq!(domain.record().commits, 2);
    assert_eq!(domain.request_checkpoint(), Ok(true));
    assert_eq!(domain.record().commits, 3);
}

/// Storage the test can still reach while a domain owns it.
#[derive(Clone)]
struct SharedStorage(Arc<Mutex<MemoryStorage>>);

impl SharedStorage {
    /// Fresh storage for a domain named `name` running `wat`.
    fn new(name: &str, wat: &str) -> Self {
        let storage = MemoryStorage::new(record(name, 1, wasm(wat)));
        Self(Arc::new(Mutex::new(storage)))
    }
}

impl Storage for SharedStorage {
    fn load(&mut self) -> Result<vm::DomainRecord, Error> {
        self.0.lock().unwrap().load()
    }
    fn read_page(&mut self, page_index: u64, page: &mut [u8; vm::PAGE_BYTES]) -> Result<(), Error> {
        self.0.lock().unwrap().read_page(page_index, page)
    }
    fn stored_pages(&mut self) -> Result<Vec<u64>, Error> {
        self.0.lock().unwrap().stored_pages()
    }
    fn commit(&mut self, commit: &vm::Commit<'_>) -> Result<(), Error> {
        self.0.lock().unwrap().commit(commit)
    }
}

#[test]
fn a_failed_commit_keeps_the_previous_state_and_reports_it() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let shared = SharedStorage::new("counter", COUNTER);
    let mut domain = open_with(&engine, &platform, Box::new(shared.clone())).unwrap();
    run_sleeps(&mut domain, &platform, 2);
    assert_eq!(domain.request_checkpoint(), Ok(true));
    shared.0.lock().unwrap().failure = Some("disk on fire".into());
    run_sleeps(&mut domain, &platform, 2);
    assert_eq!(
        domain.request_checkpoint(),
        Err(Error::Storage("disk on fire".into()))
    );
    // The domain goes on; a restart resumes from the last good commit.
    run_sleeps(&mut domain, &platform, 1);
    drop(domain);
    shared.0.lock().unwrap().failure = None;
    let mut domain = open_with(&engine, &platform, Box::new(shared)).unwrap();
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    platform.advance_ns(100_000_000);
    run_sleeps(&mut domain, &platform, 1);
    assert_eq!(
        counts(&platform),
        ["01", "02", "03", "04", "05", "03", "04"]
    );
}

#[test]
fn a_suspended_stack_is_never_rewound_into_other_code() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "counter", 1, COUNTER).unwrap();
    run_sleeps(&mut domain, &platform, 1);
    domain.request_checkpoint().unwrap();
    let mut record = domain.record().clone();
    record.module = wasm(&COUNTER.replace("count ??", "COUNT ??"));
    let error = open_with(&engine, &platform, Box::new(MemoryStorage::new(record))).unwrap_err();
    assert_eq!(error, Error::ModuleFingerprintMismatch);
}

#[test]
fn a_module_without_asyncify_keeps_memory_and_restarts_at_entry() {
    // Counts runs in memory at 64, then waits for ever in recv.
    let wat = r#"(module
        (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
        (import "env" "memory" (memory 1 1))
        (data (i32.const 0) "data segment")
        (func (export "_start")
            (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))
            (i32.store (i32.const 0) (i32.const 0))
            (drop (call $recv (i32.const 128) (i32.const 16) (i32.const 160) (i64.const -1)))))"#;
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "plain", 1, wat).unwrap();
    assert!(!domain.has_asyncify());
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    assert_eq!(domain.request_checkpoint(), Ok(true));
    let mut domain = open_with(&engine, &platform, domain.into_storage()).unwrap();
    assert_eq!(&domain.memory_bytes()[64..68], &1u32.to_le_bytes());
    assert_eq!(
        &domain.memory_bytes()[0..4],
        &[0, 0, 0, 0],
        "data segments are not applied again over the image"
    );
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    assert_eq!(&domain.memory_bytes()[64..68], &2u32.to_le_bytes());
    assert_eq!(domain.status(), DomainStatus::Running);
}

#[test]
fn a_delivered_message_is_durable_even_while_the_receiver_computes() {
    let busy = r#"(module
        (import "env" "memory" (memory 1 1))
        (func (export "_start") (loop $again (br $again))))"#;
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "busy", 1, busy).unwrap();
    assert_eq!(domain.run(10_000), RunOutcome::Preempted);
    let message = vm::MailboxMessage {
        from: vm::DomainId::from_le_bytes([2; 16]),
        bytes: b"hi".to_vec(),
    };
    assert_eq!(domain.deliver(message.clone()), vm::abi::StatusCode::Ok);
    let storage = domain.into_storage();
    let domain = open_with(&engine, &platform, storage).unwrap();
    assert_eq!(domain.record().mailbox, [message]);
}

#[test]
fn mailbox_and_clock_survive_a_restart() {
    let wat = r#"(module
        (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
        (import "amber" "now" (func $now (result i64)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start")
            (i64.store (i32.const 0) (call $now))
            (drop (call $recv (i32.const 128) (i32.const 16) (i32.const 160) (i64.const -1)))
            (i64.store (i32.const 8) (call $now))))"#;
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "kv", 1, wat).unwrap();
    platform.advance_ns(5_000);
    domain.deliver(vm::MailboxMessage {
        from: vm::DomainId::from_le_bytes([2; 16]),
        bytes: b"put".to_vec(),
    });
    domain.request_checkpoint().unwrap();
    assert_eq!(domain.record().mailbox.len(), 1);
    assert_eq!(domain.record().clock_ns, 5_000);
    platform.advance_ns(1_000_000);
    let mut domain = open_with(&engine, &platform, domain.into_storage()).unwrap();
    assert_eq!(run_to_end(&mut domain, &platform), DomainStatus::Exited(0));
    assert_eq!(&domain.memory_bytes()[128..131], b"put");
    assert_eq!(&domain.memory_bytes()[0..8], &5_000u64.to_le_bytes());
}

fn persist_domain(
    engine: &vm::wasmi::Engine,
    platform: &Arc<TestPlatform>,
    device: SharedDevice,
    is_new: bool,
) -> vm::Domain {
    let module = wasm(COUNTER);
    let image = if is_new {
        let domain = NewDomain {
            id: vm::DomainId(1),
            name: "counter",
            module: &module,
            memory_pages: 1,
            memory_max_pages: 4,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        };
        Image::create(device, domain).unwrap()
    } else {
        Image::open(device).unwrap()
    };
    open_with(engine, platform, Box::new(PersistStorage::new(image))).unwrap()
}

#[test]
fn a_power_cut_between_commits_resumes_from_one_of_them() {
    let engine = new_engine();
    for power_off_after_writes in 1..8 {
        for seed in 0..3 {
            let platform = TestPlatform::new();
            let device = SharedDevice::new(512);
            let mut domain = persist_domain(&engine, &platform, device.clone(), true);
            run_sleeps(&mut domain, &platform, 3);
            assert_eq!(domain.request_checkpoint(), Ok(true));
            run_sleeps(&mut domain, &platform, 2);
            device.power_off_after_writes(power_off_after_writes);
            let _ = domain.request_checkpoint();
            drop(domain);
            device.power_cut(seed);
            let mut domain = persist_domain(&engine, &platform, device, false);
            platform.advance_ns(100_000_000);
            run_sleeps(&mut domain, &platform, 1);
            let counts = counts(&platform);
            assert_eq!(counts[..5], ["01", "02", "03", "04", "05"]);
            assert!(
                counts[5] == "04" || counts[5] == "06",
                "after {power_off_after_writes} writes, seed {seed}: {counts:?}"
            );
        }
    }
}

/// Calls `checkpoint` once and stores its result at 32 (asyncified by hand;
/// no locals live across the call, so the save area holds nothing).
const CHECKPOINTER: &str = r#"(module
    (import "amber" "checkpoint" (func $checkpoint (result i32)))
    (import "env" "memory" (memory 1 4))
    (global $state (export "amber.global.0") (mut i32) (i32.const 0))
    (global $data (export "amber.global.1") (mut i32) (i32.const 0))
    (func (export "asyncify_start_unwind") (param i32)
        (global.set $state (i32.const 1)) (global.set $data (local.get 0)))
    (func (export "asyncify_stop_unwind") (global.set $state (i32.const 0)))
    (func (export "asyncify_start_rewind") (param i32)
        (global.set $state (i32.const 2)) (global.set $data (local.get 0)))
    (func (export "asyncify_stop_rewind") (global.set $state (i32.const 0)))
    (func (export "_start") (local $result i32)
        (i32.store (i32.const 32) (i32.const 77))
        (local.set $result (call $checkpoint))
        (if (i32.eq (global.get $state) (i32.const 1)) (then (return)))
        (i32.store (i32.const 32) (local.get $result))))"#;

#[test]
fn checkpoint_unwinds_commits_and_returns_ok_also_after_a_restart() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let shared = SharedStorage::new("checkpointer", CHECKPOINTER);
    let mut domain = open_with(&engine, &platform, Box::new(shared.clone())).unwrap();
    assert_eq!(domain.run(100_000), RunOutcome::Waiting);
    let record = domain.record().clone();
    assert_eq!(record.commits, 2, "the first commit and the checkpoint");
    assert_eq!(
        record
            .suspension
            .as_ref()
            .map(|suspension| suspension.import),
        Some(BlockingImport::AmberCheckpoint)
    );
    let committed = shared.0.lock().unwrap().clone();
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(&domain.memory_bytes()[32..36], &0i32.to_le_bytes());
    // After a crash right after the commit, the call returns OK as well.
    let mut domain = open_with(&engine, &platform, Box::new(committed)).unwrap();
    assert_eq!(&domain.memory_bytes()[32..36], &77i32.to_le_bytes());
    assert_eq!(
        domain.run(100_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(&domain.memory_bytes()[32..36], &0i32.to_le_bytes());
}

/// The text of each line of a domain's log, without its clock stamp, and
/// checks that the stamps never go back.
fn log_texts(log: &[u8]) -> Vec<String> {
    let log = std::str::from_utf8(log).unwrap();
    let mut last_ms = 0u64;
    log.lines()
        .map(|line| {
            let (stamp, text) = line.trim_start().split_once(' ').unwrap();
            let (seconds, millis) = stamp.split_once('.').unwrap();
            let ms = seconds.parse::<u64>().unwrap() * 1000 + millis.parse::<u64>().unwrap();
            assert!(ms >= last_ms, "the clock went back in {log}");
            last_ms = ms;
            text.to_string()
        })
        .collect()
}

/// What a domain prints goes into its image's log with the commit of the
/// state that printed it: a crash loses the lines since the last commit,
/// as it loses that state, and the domain prints them again as it redoes
/// that work.
#[test]
fn printed_lines_are_kept_in_the_image_log_with_the_state() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let device = SharedDevice::new(512);
    let mut domain = persist_domain(&engine, &platform, device.clone(), true);
    run_sleeps(&mut domain, &platform, 3);
    assert_eq!(domain.request_checkpoint(), Ok(true));
    run_sleeps(&mut domain, &platform, 2);
    let count = |n: &str| format!("count {n}");
    // Committed and printed since.
    assert_eq!(
        log_texts(&domain.log().unwrap()),
        ["01", "02", "03", "04", "05"].map(count)
    );
    drop(domain);
    let mut domain = persist_domain(&engine, &platform, device.clone(), false);
    assert_eq!(
        log_texts(&domain.log().unwrap()),
        ["01", "02", "03"].map(count)
    );
    platform.advance_ns(100_000_000);
    run_sleeps(&mut domain, &platform, 2);
    assert_eq!(domain.request_checkpoint(), Ok(true));
    drop(domain);
    let mut image = Image::open(device).unwrap();
    assert_eq!(
        log_texts(&image.log().unwrap()),
        ["01", "02", "03", "04", "05"].map(count)
    );
}

//! Exactly-once messaging: resends are recognised, lost messages redelivered.
//!
//! `SENDER` sends 0, 1, 2, ... to `SINK`, which counts each number it
//! receives in its memory. Both are checkpointed at random moments and the
//! power is cut at random moments, mid-commit too; each cut rolls both back
//! to their last commits. A sender rolled back past messages the sink
//! already accepted sends them again, and only the message numbers keep the
//! sink from counting them twice; a sink rolled back past messages the
//! sender committed as sent gets them again from the sender's outbox.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use vm::persist::{Image, NewDomain};
use vm::{
    Commit, Domain, DomainRecord, MemoryStorage, PAGE_BYTES, PersistStorage, Scheduler, Storage,
    new_engine,
};

/// How many numbers the sender sends: more than a mailbox holds, so the
/// sender also meets backpressure.
const LIMIT: u32 = 300;

/// Sends the number at 0 to "sink" and counts it up when accepted; every
/// seventh number, checkpoints (no asyncify: a restart begins at `_start`
/// with the committed memory).
const SENDER: &str = r#"(module
    (import "amber" "send" (func $send (param i32 i32 i32 i32) (result i32)))
    (import "amber" "checkpoint" (func $checkpoint (result i32)))
    (import "env" "memory" (memory 1 1))
    (data (i32.const 16) "sink")
    (func (export "_start") (local $n i32)
        (loop $again
            (local.set $n (i32.load (i32.const 0)))
            (if (i32.ge_u (local.get $n) (i32.const 300)) (then (return)))
            (if (i32.eqz (call $send (i32.const 16) (i32.const 4) (i32.const 0) (i32.const 4)))
                (then
                    (i32.store (i32.const 0) (i32.add (local.get $n) (i32.const 1)))
                    (if (i32.eqz (i32.rem_u (local.get $n) (i32.const 7)))
                        (then (drop (call $checkpoint))))))
            (br $again))))"#;

/// Receives numbers and adds one to the count of each, at 1024 + 4 n.
const SINK: &str = r#"(module
    (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
    (import "env" "memory" (memory 1 1))
    (func (export "_start") (local $slot i32)
        (loop $again
            (if (i32.eq (call $recv (i32.const 0) (i32.const 4) (i32.const 16) (i64.const -1))
                        (i32.const 4))
                (then
                    (local.set $slot
                        (i32.add (i32.const 1024) (i32.shl (i32.load (i32.const 0)) (i32.const 2))))
                    (i32.store (local.get $slot)
                        (i32.add (i32.load (local.get $slot)) (i32.const 1)))))
            (br $again))))"#;

/// Opens the domain on `device`, creating its image first when `is_new`.
fn open_domain(
    engine: &vm::wasmi::Engine,
    platform: &Arc<TestPlatform>,
    device: &SharedDevice,
    (id, name, wat): (u128, &str, &str),
    is_new: bool,
) -> Domain {
    let image = if is_new {
        let module = wasm(wat);
        let domain = NewDomain {
            id: vm::DomainId(id),
            name,
            module: &module,
            memory_pages: 1,
            memory_max_pages: 1,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        };
        Image::create(device.clone(), domain).unwrap()
    } else {
        Image::open(device.clone()).unwrap()
    };
    open_with(engine, platform, Box::new(PersistStorage::new(image))).unwrap()
}

/// A small deterministic random source (xorshift64).
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// How many times each number arrived: counted by the sink, or waiting in
/// its mailbox.
fn arrivals(sink: &Domain) -> Vec<u32> {
    let memory = sink.memory_bytes();
    let mut arrivals: Vec<u32> = (0..LIMIT as usize)
        .map(|n| {
            let slot = 1024 + 4 * n;
            u32::from_le_bytes(memory[slot..slot + 4].try_into().unwrap())
        })
        .collect();
    for message in &sink.record().mailbox {
        let n = u32::from_le_bytes(message.bytes[..4].try_into().unwrap());
        arrivals[n as usize] += 1;
    }
    arrivals
}

#[test]
fn every_message_arrives_exactly_once_across_power_cuts() {
    let engine = new_engine();
    let sender_spec = (1, "sender", SENDER);
    let sink_spec = (2, "sink", SINK);
    let mut resends_seen = 0;
    for seed in 1..=16u64 {
        let mut random = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let platform = TestPlatform::new();
        let disks = [SharedDevice::new(512), SharedDevice::new(512)];
        let mut is_new = true;
        let mut cuts = 0;
        loop {
            let mut scheduler = Scheduler::new(1_000 + random.below(4_000));
            let sender = open_domain(&engine, &platform, &disks[0], sender_spec, is_new);
            let sink = open_domain(&engine, &platform, &disks[1], sink_spec, is_new);
            is_new = false;
            // A sender behind what the sink accepted will send again.
            let sent = sender.record().sent.get(&sink.id()).copied();
            let accepted = sink.record().accepted.get(&sender.id()).copied();
            if accepted > sent {
                resends_seen += 1;
            }
            scheduler.add(sender, ()).unwrap();
            scheduler.add(sink, ()).unwrap();
            if cuts == 40 {
                // Enough: run to the end and shut down cleanly.
                run_rounds(&mut scheduler, &platform, 2_000);
                for (name, result) in scheduler.checkpoint_all() {
                    assert_eq!(result, Ok(true), "{name}");
                }
                break;
            }
            let rounds = 1 + random.below(30);
            let cut_at_round = random.below(rounds);
            for round in 0..rounds {
                if round == cut_at_round {
                    // The power goes in the middle of a commit, or between.
                    let disk = &disks[random.below(2) as usize];
                    disk.power_off_after_writes(random.below(8));
                }
                if random.below(4) == 0 {
                    let _ = scheduler.checkpoint_all();
                }
                scheduler.run_round();
                platform.advance_ns(1_000_000);
            }
            drop(scheduler);
            for disk in &disks {
                disk.power_cut(random.below(u64::MAX));
            }
            cuts += 1;
        }
        let sink = open_domain(&engine, &platform, &disks[1], sink_spec, false);
        let sender = open_domain(&engine, &platform, &disks[0], sender_spec, false);
        assert_eq!(
            &sender.memory_bytes()[..4],
            &LIMIT.to_le_bytes(),
            "seed {seed}"
        );
        let arrivals = arrivals(&sink);
        let wrong: Vec<(usize, u32)> = arrivals
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count != 1)
            .map(|(n, &count)| (n, count))
            .collect();
        assert!(
            wrong.is_empty(),
            "seed {seed}: (number, arrivals) {wrong:?}"
        );
    }
    // The test proves something only if cuts really made senders resend.
    assert!(resends_seen > 0, "no power cut rolled a sender back");
}

/// Receives forever, spending about 3,000 instructions on each message.
const BUSY_RECEIVER: &str = r#"(module
    (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
    (import "env" "memory" (memory 1 1))
    (func (export "_start") (local $i i32)
        (loop $again
            (drop (call $recv (i32.const 0) (i32.const 64) (i32.const 64) (i64.const -1)))
            (local.set $i (i32.const 0))
            (loop $burn
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $burn (i32.lt_u (local.get $i) (i32.const 500))))
            (br $again))))"#;

fn message(n: u32) -> vm::MailboxMessage {
    vm::MailboxMessage {
        from: vm::DomainId::from_le_bytes([7; 16]),
        bytes: n.to_le_bytes().to_vec(),
    }
}

#[test]
fn a_receiver_whose_recv_never_waits_still_reaches_a_wanted_commit() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "busy", 3, BUSY_RECEIVER).unwrap();
    for n in 0..100 {
        assert_eq!(domain.deliver(message(n)), vm::abi::StatusCode::Ok);
    }
    assert_eq!(domain.run(1_000), vm::RunOutcome::Preempted);
    assert_eq!(domain.request_checkpoint(), Ok(false));
    // A few messages' worth of fuel: recv always finds one waiting, yet
    // the next call stops at a safe point for the commit.
    let _ = domain.run(20_000);
    assert!(!domain.is_checkpoint_pending());
    let stored = domain.record().mailbox.len();
    assert!(
        stored < 100,
        "the commit dropped received messages ({stored} stored)"
    );
    assert!(stored > 0, "the receiver did not run out of messages");
}

#[test]
fn a_stream_of_messages_keeps_the_stored_mailbox_small() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "busy", 3, BUSY_RECEIVER).unwrap();
    let mut largest = 0;
    for n in 0..1000 {
        assert_eq!(
            domain.deliver(message(n)),
            vm::abi::StatusCode::Ok,
            "message {n}"
        );
        let _ = domain.run(5_000);
        largest = largest.max(domain.record().mailbox.len());
    }
    // Every delivery rewrites the stored mailbox; the receiver's commits,
    // asked for by deliveries, keep it from growing with the stream.
    assert!(largest <= 20, "the stored mailbox grew to {largest}");
}

#[test]
fn a_message_the_receiver_lost_comes_again_from_the_senders_outbox() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let disks = [SharedDevice::new(512), SharedDevice::new(512)];
    let sender_spec = (1, "sender", SENDER);
    let sink_spec = (2, "sink", SINK);
    let mut scheduler = Scheduler::new(1_000_000);
    scheduler
        .add(
            open_domain(&engine, &platform, &disks[0], sender_spec, true),
            (),
        )
        .unwrap();
    scheduler
        .add(
            open_domain(&engine, &platform, &disks[1], sink_spec, true),
            (),
        )
        .unwrap();
    // Sends and commits all 300 (one a round, a commit every seventh),
    // while the sink commits only when its senders' copies pile up.
    run_rounds(&mut scheduler, &platform, 400);
    let sender = scheduler.domain("sender").unwrap();
    assert_eq!(&sender.memory_bytes()[..4], &LIMIT.to_le_bytes());
    let kept = sender.outbox_len();
    assert!(kept > 0, "the sink committed everything: nothing to lose");
    assert!(kept <= vm::abi::MAX_OUTBOX_MESSAGES, "{kept} copies kept");
    // The sender has exited: its last commit holds its outbox.
    drop(scheduler);
    for disk in &disks {
        disk.power_cut(1);
    }
    // The sink lost what it received since its last commit; the sender's
    // committed outbox still holds it.
    let sender = open_domain(&engine, &platform, &disks[0], sender_spec, false);
    let sink = open_domain(&engine, &platform, &disks[1], sink_spec, false);
    let lost = arrivals(&sink).iter().filter(|&&count| count == 0).count();
    assert!(lost > 0, "the sink lost nothing");
    let mut scheduler = Scheduler::new(1_000_000);
    scheduler.add(sender, ()).unwrap();
    scheduler.add(sink, ()).unwrap();
    run_rounds(&mut scheduler, &platform, 50);
    assert_eq!(scheduler.settle_outbox("sender"), Ok(true));
    let sink = scheduler.domain("sink").unwrap();
    let arrivals = arrivals(sink);
    assert!(arrivals.iter().all(|&count| count == 1), "{arrivals:?}");
    // Once the sink's commit holds them, the copies go.
    run_rounds(&mut scheduler, &platform, 1);
    assert_eq!(scheduler.domain("sender").unwrap().outbox_len(), 0);
}

/// Memory storage whose commits fail while `failing` is set.
struct Unreliable {
    inner: MemoryStorage,
    failing: Arc<AtomicBool>,
}

impl Storage for Unreliable {
    fn load(&mut self) -> Result<DomainRecord, vm::Error> {
        self.inner.load()
    }

    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), vm::Error> {
        self.inner.read_page(page_index, page)
    }

    fn stored_pages(&mut self) -> Result<Vec<u64>, vm::Error> {
        self.inner.stored_pages()
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), vm::Error> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(vm::Error::Storage("the disk is gone".into()));
        }
        self.inner.commit(commit)
    }
}

/// Sends 4-byte messages to "sink" for ever and stores the status of the
/// last send at 0.
const FLOODER: &str = r#"(module
    (import "amber" "send" (func $send (param i32 i32 i32 i32) (result i32)))
    (import "env" "memory" (memory 1 1))
    (data (i32.const 16) "sink")
    (func (export "_start")
        (loop $again
            (i32.store (i32.const 0)
                (call $send (i32.const 16) (i32.const 4) (i32.const 4) (i32.const 4)))
            (br $again))))"#;

#[test]
fn a_receiver_that_cannot_commit_stops_its_senders_at_a_full_outbox() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let failing = Arc::new(AtomicBool::new(false));
    let storage = Unreliable {
        inner: MemoryStorage::new(record("sink", 2, wasm(SINK))),
        failing: failing.clone(),
    };
    let sink = open_with(&engine, &platform, Box::new(storage)).unwrap();
    let flooder = open(&engine, &platform, "flooder", 1, FLOODER).unwrap();
    let mut scheduler = Scheduler::new(100_000);
    scheduler.add(flooder, ()).unwrap();
    scheduler.add(sink, ()).unwrap();
    run_rounds(&mut scheduler, &platform, 100);
    failing.store(true, Ordering::Relaxed);
    // The sink takes every message but cannot commit: its sender keeps
    // the copies, up to the bound, and then hears MAILBOX_FULL.
    run_rounds(
        &mut scheduler,
        &platform,
        vm::abi::MAX_OUTBOX_MESSAGES + 100,
    );
    let flooder = scheduler.domain("flooder").unwrap();
    assert_eq!(flooder.outbox_len(), vm::abi::MAX_OUTBOX_MESSAGES);
    let status = i32::from_le_bytes(flooder.memory_bytes()[..4].try_into().unwrap());
    assert_eq!(status, vm::abi::StatusCode::MailboxFull.code());
    // Once the sink commits again, the copies go and sending goes on.
    failing.store(false, Ordering::Relaxed);
    run_rounds(&mut scheduler, &platform, 10);
    let flooder = scheduler.domain("flooder").unwrap();
    assert!(flooder.outbox_len() < vm::abi::MAX_OUTBOX_MESSAGES / 2);
    let status = i32::from_le_bytes(flooder.memory_bytes()[..4].try_into().unwrap());
    assert_eq!(status, vm::abi::StatusCode::Ok.code());
}

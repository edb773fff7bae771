//! A hostile record's outbox: delivered as its owner, within mailbox limits.
//!
//! Issue 15's hostile case (h): a record from elsewhere (an adopted
//! migration, an image written by someone else) whose outbox holds 2,001
//! messages to a local victim, numbered up to `u64::MAX - 1`, and whose
//! other fields name a forged sender. persist refuses such a record when it
//! is opened or migrated in (persist/tests/hostile_metadata.rs); these tests
//! give it to the vm directly, past that check, to show the vm's own bound:
//! the victim's mailbox never holds more than a `send` could put there, the
//! messages arrive as from the record's owner, exactly once and in order,
//! and a real domain with the forged ID is heard afterwards.

mod common;

use common::*;
use vm::abi::{MAX_MAILBOX_BYTES, MAX_MAILBOX_MESSAGES};
use vm::{DomainId, MailboxMessage, MemoryStorage, OutboxMessage, Scheduler, new_engine};

/// How many messages the forged outbox holds.
const FORGED: u64 = 2001;

/// Sleeps for ever, one millisecond at a time, and never receives.
const SLEEPER: &str = r#"(module
    (import "amber" "sleep" (func $sleep (param i64)))
    (import "env" "memory" (memory 1 1))
    (func (export "_start")
        (loop $again (call $sleep (i64.const 1000000)) (br $again))))"#;

/// Receives 4-byte numbers and adds one to the count of each, at 1024 + 4 n.
const COUNTER: &str = r#"(module
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

/// Sends the number 2001 to "victim" once, then sleeps for ever.
const REAL_SENDER: &str = r#"(module
    (import "amber" "send" (func $send (param i32 i32 i32 i32) (result i32)))
    (import "amber" "sleep" (func $sleep (param i64)))
    (import "env" "memory" (memory 1 1))
    (data (i32.const 0) "\d1\07\00\00")
    (data (i32.const 16) "victim")
    (func (export "_start")
        (loop $retry
            (br_if $retry (i32.ne
                (call $send (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 4))
                (i32.const 0))))
        (loop $again (call $sleep (i64.const 1000000)) (br $again))))"#;

fn id(byte: u8) -> DomainId {
    DomainId::from_le_bytes([byte; 16])
}

/// The owner of the forged record.
fn owner() -> DomainId {
    id(5)
}

/// The ID the record's other fields name as a sender.
fn forged() -> DomainId {
    id(6)
}

fn victim() -> DomainId {
    id(2)
}

/// The forger's record: `FORGED` messages of `len_bytes` each to the
/// victim, numbered up to `u64::MAX - 1`, and a mailbox and counts that
/// claim messages from the forged ID.
fn forged_record(len_bytes: usize) -> MemoryStorage {
    let mut record = record("forger", 5, wasm(SLEEPER));
    let first = u64::MAX - FORGED;
    record.outbox = (0..FORGED)
        .map(|n| {
            let mut bytes = vec![0; len_bytes];
            bytes[..4].copy_from_slice(&(n as u32).to_le_bytes());
            OutboxMessage {
                to: victim(),
                sequence: first + n,
                bytes,
            }
        })
        .collect();
    record.sent.insert(victim(), u64::MAX - 1);
    record.accepted.insert(forged(), u64::MAX - 1);
    record.mailbox.push(MailboxMessage {
        from: forged(),
        bytes: b"forged".to_vec(),
    });
    MemoryStorage::new(record)
}

/// Commits the victim (asleep: at a safe point) so that its record shows
/// its live mailbox.
fn committed_mailbox(scheduler: &mut Scheduler) -> (usize, usize, Vec<DomainId>) {
    let victim = scheduler.domain_mut("victim").unwrap();
    assert_eq!(victim.request_checkpoint(), Ok(true));
    let mailbox = &victim.record().mailbox;
    let bytes = mailbox.iter().map(|message| message.bytes.len()).sum();
    let senders = mailbox.iter().map(|message| message.from).collect();
    (mailbox.len(), bytes, senders)
}

#[test]
fn an_adopted_outbox_fills_a_victims_mailbox_only_to_its_limits() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut scheduler = Scheduler::new(100_000);
    scheduler
        .add(open(&engine, &platform, "victim", 2, SLEEPER).unwrap(), ())
        .unwrap();
    run_rounds(&mut scheduler, &platform, 2);
    // 2,001 messages of 1,000 bytes: 2 MB against a 256 KiB mailbox.
    let forger = open_with(&engine, &platform, Box::new(forged_record(1000))).unwrap();
    scheduler.add(forger, ()).unwrap();
    run_rounds(&mut scheduler, &platform, 20);
    // A message from outside any domain finds the live mailbox full too,
    // although the victim's last commit holds an empty one.
    let outside = MailboxMessage {
        from: id(9),
        bytes: b"outside".to_vec(),
    };
    let victim = scheduler.domain_mut("victim").unwrap();
    assert!(victim.record().mailbox.is_empty());
    assert_eq!(victim.deliver(outside), vm::abi::StatusCode::MailboxFull);

    let (messages, bytes, senders) = committed_mailbox(&mut scheduler);
    assert!(messages <= MAX_MAILBOX_MESSAGES, "{messages} messages");
    assert!(bytes <= MAX_MAILBOX_BYTES, "{bytes} bytes");
    assert_eq!(messages, MAX_MAILBOX_MESSAGES.min(MAX_MAILBOX_BYTES / 1000));
    assert!(senders.iter().all(|&sender| sender == owner()));
    // The rest wait in the forger's outbox, as copies a `send` would keep.
    let forger = scheduler.domain("forger").unwrap();
    assert_eq!(forger.outbox_len(), FORGED as usize);
    // The victim's counts: the owner's, raised only by what it took; the
    // forged ID's, untouched.
    let accepted = &scheduler.domain("victim").unwrap().record().accepted;
    assert_eq!(
        accepted.get(&owner()),
        Some(&(u64::MAX - FORGED + messages as u64 - 1))
    );
    assert_eq!(accepted.get(&forged()), None);
}

#[test]
fn a_draining_victim_gets_every_message_once_as_from_the_owner_then_hears_the_real_id() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut scheduler = Scheduler::new(100_000);
    scheduler
        .add(open(&engine, &platform, "victim", 2, COUNTER).unwrap(), ())
        .unwrap();
    let forger = open_with(&engine, &platform, Box::new(forged_record(4))).unwrap();
    scheduler.add(forger, ()).unwrap();
    // The victim takes a mailbox's worth a round; the rest are delivered
    // again as it drains.
    run_rounds(&mut scheduler, &platform, 100);
    let victim = scheduler.domain("victim").unwrap();
    let memory = victim.memory_bytes();
    let counts: Vec<u32> = (0..FORGED as usize)
        .map(|n| {
            let slot = 1024 + 4 * n;
            u32::from_le_bytes(memory[slot..slot + 4].try_into().unwrap())
        })
        .collect();
    assert!(counts.iter().all(|&count| count == 1), "{counts:?}");
    assert_eq!(victim.accepted_from(owner()), u64::MAX - 1);
    assert_eq!(victim.accepted_from(forged()), 0);

    // A real domain with the ID the record named is heard, not dropped as
    // a resend.
    let real = open(&engine, &platform, "real", 6, REAL_SENDER).unwrap();
    assert_eq!(real.id(), forged());
    scheduler.add(real, ()).unwrap();
    run_rounds(&mut scheduler, &platform, 10);
    let victim = scheduler.domain("victim").unwrap();
    let slot = 1024 + 4 * FORGED as usize;
    assert_eq!(
        u32::from_le_bytes(victim.memory_bytes()[slot..slot + 4].try_into().unwrap()),
        1
    );
    assert_eq!(victim.accepted_from(forged()), 1);
}

#[test]
fn a_new_send_never_overtakes_a_message_a_full_mailbox_holds_back() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut scheduler = Scheduler::new(100_000);
    scheduler
        .add(open(&engine, &platform, "victim", 2, SLEEPER).unwrap(), ())
        .unwrap();
    // Five messages of 60,000 bytes: four fit the victim's 256 KiB, the
    // fifth waits. The owner then sends a small one, which would fit.
    let mut record = record("forger", 5, wasm(REAL_SENDER));
    record.outbox = (1..=5)
        .map(|sequence| OutboxMessage {
            to: victim(),
            sequence,
            bytes: vec![sequence as u8; 60_000],
        })
        .collect();
    record.sent.insert(victim(), 5);
    let forger = open_with(&engine, &platform, Box::new(MemoryStorage::new(record))).unwrap();
    scheduler.add(forger, ()).unwrap();
    run_rounds(&mut scheduler, &platform, 20);
    // Had message 6 gone in, the victim's count would pass 5, and message
    // 5 would be dropped as a resend: lost.
    let victim = scheduler.domain("victim").unwrap();
    assert_eq!(victim.accepted_from(owner()), 4);
    assert_eq!(scheduler.domain("forger").unwrap().outbox_len(), 5);
}

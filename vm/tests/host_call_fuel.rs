//! A domain hammering an expensive host call gets no more CPU than a busy one.
//!
//! Each test runs two schedulers in alternating blocks of rounds on the same
//! thread:
//! one with a busy pure-wasm domain next to the hammering ones, one with as
//! many busy domains instead. Every domain of the second takes one slice of
//! wasm per round, so their time is what a fair share costs on this host
//! in this run; the first may take at most [`MAX_SHARE`] times that per
//! hammering domain. Before host calls paid for their work, one `fd_write`
//! of zero-length iovecs took 10,000 slices' time and a `poll_oneoff` of a
//! million subscriptions was charged 2 fuel. Time is the thread's CPU time
//! (the development machine's two cores are shared, and wall time counts
//! what other processes took), the median of many blocks is compared, and
//! the hammering domains' debt is paid in every block many times over.

mod common;

use std::time::Duration;

use common::*;
use vm::{DomainStatus, Scheduler, SchedulerEvent, new_engine};

/// The most CPU a hammering domain may take, in busy domains' shares: a
/// generous margin (host calls are timed in a less optimised build than
/// wasmi in `cargo test`), and far below what unpaid host work took.
const MAX_SHARE: f64 = 3.0;

const SLICE: u64 = vm::DEFAULT_FUEL_SLICE;
const ROUNDS_PER_BLOCK: usize = 400;
const BLOCKS: usize = 21;

const BUSY: &str = r#"(module
    (import "env" "memory" (memory 1 1))
    (func (export "_start") (local $i i64)
        (loop $again
            (local.set $i (i64.add (local.get $i) (i64.const 1)))
            (i64.store (i32.const 0) (local.get $i))
            (br $again))))"#;

/// What one comparison measured.
#[derive(Debug)]
struct Share {
    /// The hammering domains' CPU per round, in busy domains' shares (the
    /// median block's).
    hammer_shares: f64,
    /// Fuel each domain of the measured scheduler used, by name.
    fuel: Vec<(String, u64)>,
    /// Lines printed.
    lines: usize,
}

/// Runs `hammers` (name, wat) next to one busy domain, and as many busy
/// domains alone, and compares their time per round.
fn share(hammers: &[(&str, &str)]) -> Share {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let baseline_platform = TestPlatform::new();
    let mut measured = Scheduler::new(SLICE);
    let mut baseline = Scheduler::new(SLICE);
    let busy = open(&engine, &platform, "busy", 100, BUSY).unwrap();
    measured.add(busy, ()).unwrap();
    let busy = open(&engine, &baseline_platform, "busy", 100, BUSY).unwrap();
    baseline.add(busy, ()).unwrap();
    for (index, (name, wat)) in hammers.iter().enumerate() {
        let hammer = open(&engine, &platform, name, index as u8 + 1, wat).unwrap();
        measured.add(hammer, ()).unwrap();
        let name = format!("busy{index}");
        let busy = open(&engine, &baseline_platform, &name, index as u8 + 1, BUSY).unwrap();
        baseline.add(busy, ()).unwrap();
    }
    // Warm up: compile caches, first-touch pages, the first debts.
    for _ in 0..ROUNDS_PER_BLOCK {
        run_round(&mut measured, &platform);
        run_round(&mut baseline, &baseline_platform);
    }
    let mut ratios = Vec::new();
    for _ in 0..BLOCKS {
        let start = thread_cpu_time();
        for _ in 0..ROUNDS_PER_BLOCK {
            run_round(&mut measured, &platform);
        }
        let measured_time = thread_cpu_time() - start;
        let start = thread_cpu_time();
        for _ in 0..ROUNDS_PER_BLOCK {
            run_round(&mut baseline, &baseline_platform);
        }
        let baseline_time = thread_cpu_time() - start;
        ratios.push(measured_time.as_secs_f64() / baseline_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[BLOCKS / 2];
    // measured = busy + hammers, baseline = (1 + n) busy.
    let count = hammers.len() as f64;
    let hammer_shares = (ratio * (1.0 + count) - 1.0) / count;
    let fuel = measured
        .domains()
        .map(|domain| (domain.name().to_string(), domain.fuel_used()))
        .collect();
    Share {
        hammer_shares,
        fuel,
        lines: platform.lines().len(),
    }
}

/// The CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// One round; no domain may end.
fn run_round(scheduler: &mut Scheduler, platform: &TestPlatform) {
    for event in scheduler.run_round() {
        if let SchedulerEvent::Halted { name, status, .. } = event {
            assert_eq!(status, DomainStatus::Running, "{name} ended");
        }
    }
    platform.advance_ns(1_000_000);
}

/// Checks the share and that every domain made progress, and prints the
/// figures (`cargo test -- --nocapture`).
fn check(call: &str, share: &Share) {
    eprintln!(
        "{call}: {:.2} busy shares of CPU; fuel used {:?}; {} lines printed",
        share.hammer_shares, share.fuel, share.lines
    );
    assert!(
        share.hammer_shares <= MAX_SHARE,
        "{call}: a hammering domain took {:.1} busy domains' CPU",
        share.hammer_shares
    );
    let busy_fuel = share.fuel[0].1;
    let rounds = (BLOCKS + 1) * ROUNDS_PER_BLOCK;
    assert!(
        busy_fuel >= rounds as u64 * SLICE * 9 / 10,
        "busy got {busy_fuel} fuel"
    );
    for (name, fuel) in &share.fuel[1..] {
        assert!(*fuel > SLICE, "{name} did not run: {fuel} fuel");
        // Debt is paid: no domain gets more than its slices (plus the one
        // call whose cost a slice cannot hold, still owed at the end).
        assert!(
            *fuel <= busy_fuel + 200_000,
            "{name} used {fuel} fuel, busy {busy_fuel}"
        );
    }
}

#[test]
fn fd_write_with_many_empty_iovecs_pays_for_them() {
    // 8,192 zero-length iovecs {0, 0} in a zeroed page, over and over.
    let hammer = r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "env" "memory" (memory 2 2))
        (func (export "_start")
            (loop $again
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 8192) (i32.const 65536)))
                (br $again))))"#;
    check(
        "fd_write of 8,192 empty iovecs",
        &share(&[("iovecs", hammer)]),
    );
}

#[test]
fn fd_write_of_line_breaks_pays_for_its_lines() {
    // One iovec of 4,096 line breaks, over and over.
    let hammer = r#"(module
        (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (import "env" "memory" (memory 1 1))
        (data (i32.const 0) "\00\10\00\00\00\10\00\00")
        (func (export "_start")
            (memory.fill (i32.const 4096) (i32.const 10) (i32.const 4096))
            (loop $again
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
                (br $again))))"#;
    check(
        "fd_write of 4,096 line breaks",
        &share(&[("breaks", hammer)]),
    );
}

#[test]
fn poll_oneoff_with_many_subscriptions_pays_for_them() {
    // 1,024 clock subscriptions that are due at once (relative, timeout 0).
    let hammer = r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
        (import "env" "memory" (memory 2 2))
        (func (export "_start")
            (loop $again
                (drop (call $poll_oneoff (i32.const 0) (i32.const 65536) (i32.const 1024) (i32.const 131000)))
                (br $again))))"#;
    check(
        "poll_oneoff of 1,024 subscriptions",
        &share(&[("poll", hammer)]),
    );
}

#[test]
fn poll_oneoff_with_a_million_subscriptions_is_refused_cheaply() {
    let hammer = r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff"
            (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
        (import "env" "memory" (memory 1024 1024))
        (func (export "_start")
            (loop $again
                (if (i32.ne (call $poll_oneoff (i32.const 0) (i32.const 0) (i32.const 1300000) (i32.const 16))
                            (i32.const 28))
                    (then unreachable))
                (br $again))))"#;
    check(
        "poll_oneoff of 1.3 M subscriptions",
        &share(&[("million", hammer)]),
    );
}

#[test]
fn log_of_line_breaks_pays_for_its_lines() {
    let hammer = r#"(module
        (import "amber" "log" (func $log (param i32 i32 i32)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start")
            (memory.fill (i32.const 0) (i32.const 10) (i32.const 4096))
            (loop $again
                (call $log (i32.const 3) (i32.const 0) (i32.const 4096))
                (br $again))))"#;
    check("log of 4,096 line breaks", &share(&[("newlines", hammer)]));
}

#[test]
fn log_of_escape_bytes_pays_for_escaping_them() {
    let hammer = r#"(module
        (import "amber" "log" (func $log (param i32 i32 i32)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start")
            (memory.fill (i32.const 0) (i32.const 27) (i32.const 4096))
            (loop $again
                (call $log (i32.const 3) (i32.const 0) (i32.const 4096))
                (br $again))))"#;
    check("log of 4,096 ESC bytes", &share(&[("escapes", hammer)]));
}

#[test]
fn random_of_a_whole_page_pays_for_its_bytes() {
    let hammer = r#"(module
        (import "wasi_snapshot_preview1" "random_get"
            (func $random_get (param i32 i32) (result i32)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start")
            (loop $again
                (drop (call $random_get (i32.const 0) (i32.const 65536)))
                (br $again))))"#;
    check("random_get of 64 KiB", &share(&[("random", hammer)]));
}

#[test]
fn cheap_calls_in_a_loop_pay_for_each_call() {
    let hammer = r#"(module
        (import "amber" "now" (func $now (result i64)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start")
            (loop $again
                (i64.store (i32.const 0) (call $now))
                (br $again))))"#;
    check("now", &share(&[("now", hammer)]));
}

#[test]
fn send_and_recv_of_large_messages_pay_for_the_copies() {
    // The sender sends 64 KiB messages to the receiver as fast as it can
    // (mostly hearing MailboxFull); the receiver takes them as fast.
    let sender = r#"(module
        (import "amber" "send" (func $send (param i32 i32 i32 i32) (result i32)))
        (import "env" "memory" (memory 2 2))
        (data (i32.const 0) "receiver")
        (func (export "_start")
            (loop $again
                (drop (call $send (i32.const 0) (i32.const 8) (i32.const 65536) (i32.const 65536)))
                (br $again))))"#;
    let receiver = r#"(module
        (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))
        (import "env" "memory" (memory 2 2))
        (func (export "_start")
            (loop $again
                (drop (call $recv (i32.const 65536) (i32.const 65536) (i32.const 0) (i64.const -1)))
                (br $again))))"#;
    let share = share(&[("sender", sender), ("receiver", receiver)]);
    check("send and recv of 64 KiB", &share);
}

#[test]
fn the_measure_finds_a_busy_domain_next_to_another_takes_one_share() {
    // The method's own check: two domains that only compute are measured
    // as taking one share each.
    let share = share(&[("busy2", BUSY)]);
    check("a second busy domain", &share);
    assert!(
        (0.5..=1.5).contains(&share.hammer_shares),
        "{:.2} shares",
        share.hammer_shares
    );
}

#[test]
fn checkpoints_asked_in_a_loop_pay_for_their_commits() {
    // Each round of the loop dirties a page and asks for a commit.
    let hammer = r#"(module
        (import "amber" "checkpoint" (func $checkpoint (result i32)))
        (import "env" "memory" (memory 1 1))
        (func (export "_start") (local $i i32)
            (loop $again
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (i32.store (i32.const 0) (local.get $i))
                (drop (call $checkpoint))
                (br $again))))"#;
    check("checkpoint", &share(&[("checkpointer", hammer)]));
}

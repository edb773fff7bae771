//! Guest output is escaped and bounded per call; host work left owed is paid.

mod common;

use common::*;
use vm::{DomainStatus, RunOutcome, new_engine};

const LOG: &str = r#"(import "amber" "log" (func $log (param i32 i32 i32)))"#;
const FD_WRITE: &str = r#"(import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;
const POLL: &str = r#"(import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))"#;

fn module(imports: &str, pages: u32, body: &str) -> String {
    format!(
        r#"(module {imports}
            (import "env" "memory" (memory {pages} {pages}))
            (func (export "_start") {body}))"#
    )
}

fn run_alone(wat: &str) -> (DomainStatus, Vec<String>, Vec<u8>) {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, wat).expect("domain opens");
    let status = run_to_end(&mut domain, &platform);
    let memory = domain.memory_bytes()[..256].to_vec();
    (status, platform.lines(), memory)
}

#[test]
fn a_log_of_4096_line_breaks_prints_64_lines_and_says_it_cut_the_rest() {
    // It once printed 4,097 lines.
    let wat = module(
        LOG,
        1,
        "(memory.fill (i32.const 0) (i32.const 10) (i32.const 4096))
         (call $log (i32.const 3) (i32.const 0) (i32.const 4096))",
    );
    let (status, lines, _) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(lines.len(), vm::MAX_OUTPUT_LINES_PER_CALL + 1, "{lines:?}");
    assert!(lines[..64].iter().all(|line| line == "[app] log: "));
    assert_eq!(lines[64], "[app] log: (log message cut: 4033 more bytes)");
}

#[test]
fn escape_sequences_carriage_returns_and_bad_utf8_print_escaped() {
    let wat = format!(
        r#"(module {LOG}
            (import "env" "memory" (memory 1 1))
            (data (i32.const 0) "\1b[2J\1b[Hamber> \0d[counter] count 1\08\ff\fe")
            (func (export "_start") (call $log (i32.const 3) (i32.const 0) (i32.const 35))))"#
    );
    let (status, lines, _) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(
        lines,
        ["[app] log: \\x1b[2J\\x1b[Hamber> \\x0d[counter] count 1\\x08\\xff\\xfe"]
    );
}

#[test]
fn fd_write_of_4096_line_breaks_is_a_short_write_of_64_lines() {
    let wat = module(
        FD_WRITE,
        1,
        "(i32.store (i32.const 0) (i32.const 4096)) (i32.store (i32.const 4) (i32.const 4096))
         (memory.fill (i32.const 4096) (i32.const 10) (i32.const 4096))
         (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))",
    );
    let (status, lines, memory) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(lines.len(), 64);
    assert_eq!(&memory[16..20], &64u32.to_le_bytes());
}

#[test]
fn fd_write_reads_at_most_1024_iovecs_a_call() {
    // 2,000 iovecs of one byte each ("x" at 65,000): 1,024 are written.
    let wat = module(
        FD_WRITE,
        1,
        "(local $i i32)
         (i32.store8 (i32.const 65000) (i32.const 120))
         (loop $fill
            (i32.store (i32.shl (local.get $i) (i32.const 3)) (i32.const 65000))
            (i32.store (i32.add (i32.shl (local.get $i) (i32.const 3)) (i32.const 4)) (i32.const 1))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $fill (i32.lt_u (local.get $i) (i32.const 2000))))
         (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 2000) (i32.const 64000)))
         (i32.store (i32.const 0) (i32.load (i32.const 64000)))",
    );
    let (status, lines, memory) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(&memory[0..4], &1024u32.to_le_bytes());
    assert_eq!(lines, [format!("[app] out: {}", "x".repeat(1024))]);
}

#[test]
fn an_iovec_list_that_runs_off_memory_traps_where_reading_it_would() {
    // As apps/hostile/bad_iovec_count.wat: 2^31-1 iovecs from 2048, the
    // first a real line: it is printed, then the list's end traps, naming
    // the first iovec outside memory, although only 1,024 are read.
    let wat = format!(
        r#"(module {FD_WRITE}
            (import "env" "memory" (memory 1 1))
            (data (i32.const 1024) "writing...\0a")
            (data (i32.const 2048) "\00\04\00\00\0b\00\00\00")
            (func (export "_start")
                (drop (call $fd_write (i32.const 1) (i32.const 2048) (i32.const 0x7fffffff) (i32.const 0)))))"#
    );
    let (status, lines, _) = run_alone(&wat);
    assert_eq!(lines[0], "[app] out: writing...");
    assert_eq!(
        trap_reason(&status),
        "fd_write: pointer 0x10000 with length 4 lies outside the 65536-byte memory"
    );
    // A list that ends in memory is simply cut: a short write.
    let wat = module(
        FD_WRITE,
        1,
        "(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 8000) (i32.const 64000)))",
    );
    assert_eq!(run_alone(&wat).0, DomainStatus::Exited(0));
}

#[test]
fn poll_oneoff_with_more_than_1024_subscriptions_is_einval() {
    let wat = module(
        POLL,
        1024,
        "(i32.store (i32.const 0) (call $poll_oneoff (i32.const 0) (i32.const 0) (i32.const 1300000) (i32.const 16)))
         (i32.store (i32.const 4) (call $poll_oneoff (i32.const 0) (i32.const 49152) (i32.const 1024) (i32.const 16)))",
    );
    let (status, _, memory) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(&memory[0..4], &vm::abi::errno::INVAL.to_le_bytes());
    assert_eq!(&memory[4..8], &vm::abi::errno::SUCCESS.to_le_bytes());
    assert_eq!(&memory[16..20], &1024u32.to_le_bytes(), "events written");
}

#[test]
fn a_call_costing_more_than_a_slice_is_paid_by_the_next_slices() {
    // poll_oneoff of 1,024 subscriptions costs more than a 1,000-fuel
    // slice: the slices after it pay the debt without running the domain.
    let wat = module(
        POLL,
        2,
        "(loop $again
            (drop (call $poll_oneoff (i32.const 0) (i32.const 65536) (i32.const 1024) (i32.const 131000)))
            (i64.store (i32.const 131008) (i64.add (i64.load (i32.const 131008)) (i64.const 1)))
            (br $again))",
    );
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "poll", 1, &wat).unwrap();
    let mut slices = 0u64;
    while domain.fuel_used() < 1_000_000 {
        assert_eq!(domain.run(1_000), RunOutcome::Preempted);
        slices += 1;
    }
    // Each call costs 1,024 x 2 x SUBSCRIPTION (scan and events) and more:
    // the domain got through about one call per 40 slices, not one a slice.
    let calls = u64::from_le_bytes(domain.memory_bytes()[131008..131016].try_into().unwrap());
    assert_eq!(slices, 1_000);
    assert!(
        (20..=30).contains(&calls),
        "{calls} calls in {slices} slices"
    );
}

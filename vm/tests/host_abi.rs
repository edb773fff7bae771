//! Every host call of the `amber` and WASI modules, including bad pointers.

mod common;

use common::*;
use vm::abi::StatusCode;
use vm::{DomainStatus, RunOutcome, Scheduler, new_engine};

/// A module that imports `imports`, runs `body` in `_start`, and has data at 0.
fn module(imports: &str, body: &str) -> String {
    format!(
        r#"(module
            {imports}
            (import "env" "memory" (memory 1 4))
            (data (i32.const 0) "hello, amber")
            (func (export "_start") {body}))"#
    )
}

fn run_alone(wat: &str) -> (DomainStatus, Vec<String>, Vec<u8>) {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, wat).expect("domain opens");
    let status = run_to_end(&mut domain, &platform);
    (
        status,
        platform.lines(),
        domain.memory_bytes()[..256].to_vec(),
    )
}

#[test]
fn log_prints_a_line() {
    let wat = module(
        r#"(import "amber" "log" (func $log (param i32 i32 i32)))"#,
        "(call $log (i32.const 3) (i32.const 0) (i32.const 12))",
    );
    let (status, lines, _) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(lines, ["[app] log: hello, amber"]);
}

#[test]
fn a_huge_log_message_is_cut_and_printing_costs_fuel() {
    // A 16 MiB log once held the console (and every domain) for seconds.
    // The memory is printable ('x'), so each byte prints as one.
    let wat = module(
        r#"(import "amber" "log" (func $log (param i32 i32 i32)))"#,
        "(memory.fill (i32.const 0) (i32.const 0x78) (i32.const 65536))
         (call $log (i32.const 3) (i32.const 0) (i32.const 65536))",
    );
    let (status, lines, _) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0].len(),
        "[app] log: ".len() + vm::abi::MAX_OUTPUT_BYTES_PER_CALL
    );
    assert_eq!(lines[1], "[app] log: (log message cut: 61440 more bytes)");
    // Logging without end: a slice ends after about a slice's worth of bytes.
    let endless = module(
        r#"(import "amber" "log" (func $log (param i32 i32 i32)))"#,
        "(memory.fill (i32.const 0) (i32.const 0x78) (i32.const 4096))
         (loop $again (call $log (i32.const 3) (i32.const 0) (i32.const 4096)) (br $again))",
    );
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, &endless).unwrap();
    assert_eq!(domain.run(10_000), RunOutcome::Preempted);
    let calls = platform.lines().len();
    assert!(
        (2..=4).contains(&calls),
        "{calls} calls of 4096 bytes in one slice"
    );
}

#[test]
fn log_with_a_bad_pointer_traps_with_the_reason() {
    let wat = module(
        r#"(import "amber" "log" (func $log (param i32 i32 i32)))"#,
        "(call $log (i32.const 3) (i32.const 65530) (i32.const 100))",
    );
    let (status, _, _) = run_alone(&wat);
    let reason = trap_reason(&status);
    assert!(
        reason.contains("log: pointer 0xfffa with length 100"),
        "{reason}"
    );
}

#[test]
fn now_random_and_self_id_write_their_results() {
    let wat = module(
        r#"(import "amber" "now" (func $now (result i64)))
           (import "amber" "random" (func $random (param i32 i32)))
           (import "amber" "self_id" (func $self_id (param i32)))"#,
        "(i64.store (i32.const 32) (call $now))
         (call $random (i32.const 48) (i32.const 4))
         (call $self_id (i32.const 64))",
    );
    let (status, _, memory) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    assert_eq!(&memory[32..40], &0u64.to_le_bytes());
    assert_eq!(&memory[48..52], &[7, 38, 69, 100]);
    assert_eq!(&memory[64..80], &[1u8; 16]);
}

#[test]
fn random_and_self_id_with_bad_pointers_trap() {
    for body in [
        "(call $random (i32.const 65535) (i32.const 2))",
        "(call $self_id (i32.const 65530))",
        "(call $self_id (i32.const -1))",
    ] {
        let wat = module(
            r#"(import "amber" "random" (func $random (param i32 i32)))
               (import "amber" "self_id" (func $self_id (param i32)))"#,
            body,
        );
        let (status, _, _) = run_alone(&wat);
        assert!(trap_reason(&status).contains("outside the 65536-byte memory"));
    }
}

#[test]
fn exit_ends_with_its_code() {
    let wat = module(
        r#"(import "amber" "exit" (func $exit (param i32)))"#,
        "(call $exit (i32.const 7)) unreachable",
    );
    assert_eq!(run_alone(&wat).0, DomainStatus::Exited(7));
}

#[test]
fn sleep_waits_for_the_clock() {
    let wat = module(
        r#"(import "amber" "sleep" (func $sleep (param i64)))
           (import "amber" "now" (func $now (result i64)))"#,
        "(call $sleep (i64.const 50000000))
         (i64.store (i32.const 32) (call $now))",
    );
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, &wat).unwrap();
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), vm::Wake::At(50_000_000));
    platform.advance_ns(49_000_000);
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    platform.advance_ns(1_000_000);
    assert_eq!(
        domain.run(10_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(&domain.memory_bytes()[32..40], &50_000_000u64.to_le_bytes());
}

#[test]
fn yield_gives_way_once() {
    let wat = module(
        r#"(import "amber" "yield" (func $yield))"#,
        "(call $yield) (i32.store (i32.const 32) (i32.const 1))",
    );
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, &wat).unwrap();
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), vm::Wake::Now);
    assert_eq!(
        domain.run(10_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
}

#[test]
fn checkpoint_commits_and_returns_ok() {
    let wat = module(
        r#"(import "amber" "checkpoint" (func $checkpoint (result i32)))"#,
        "(i32.store (i32.const 32) (i32.const 99))
         (i32.store (i32.const 36) (call $checkpoint))",
    );
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, &wat).unwrap();
    assert_eq!(domain.record().commits, 1);
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    assert_eq!(domain.record().commits, 2);
    // The commit it asked for is paid from the next slices (at least
    // vm's price of a commit), then it finishes.
    let mut slices = 0;
    let outcome = loop {
        slices += 1;
        match domain.run(10_000) {
            RunOutcome::Preempted if slices < 100 => continue,
            outcome => break outcome,
        }
    };
    assert_eq!(outcome, RunOutcome::Halted(DomainStatus::Exited(0)));
    assert!(
        slices > 5,
        "a commit costs more than five slices, paid in {slices}"
    );
    assert_eq!(&domain.memory_bytes()[36..40], &0i32.to_le_bytes());
}

const MESSENGER_IMPORTS: &str = r#"
    (import "amber" "send" (func $send (param i32 i32 i32 i32) (result i32)))
    (import "amber" "recv" (func $recv (param i32 i32 i32 i64) (result i32)))"#;

#[test]
fn send_and_recv_carry_a_message_and_its_sender() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    // "kv" waits for one message; the sender sends "hello" to "kv".
    let receiver = module(
        MESSENGER_IMPORTS,
        "(i32.store (i32.const 32) (call $recv (i32.const 100) (i32.const 64) (i32.const 200) (i64.const -1)))",
    );
    let sender = module(
        MESSENGER_IMPORTS,
        r#"(i32.store (i32.const 64) (call $send (i32.const 16) (i32.const 2) (i32.const 0) (i32.const 5)))
           (i32.store (i32.const 68) (call $send (i32.const 16) (i32.const 1) (i32.const 0) (i32.const 5)))
           (i32.store (i32.const 72) (call $send (i32.const 18) (i32.const 32) (i32.const 0) (i32.const 2)))"#,
    )
    .replace(
        r#""hello, amber""#,
        r#""hello, amber\00\00\00\00kv03030303030303030303030303030303""#,
    );
    let mut scheduler = Scheduler::new(10_000);
    scheduler
        .add(open(&engine, &platform, "kv", 2, &receiver).unwrap(), ())
        .unwrap();
    scheduler
        .add(open(&engine, &platform, "client", 3, &sender).unwrap(), ())
        .unwrap();
    run_rounds(&mut scheduler, &platform, 10);
    assert!(scheduler.is_finished());
    let kv = scheduler.domain("kv").unwrap();
    assert_eq!(&kv.memory_bytes()[32..36], &5i32.to_le_bytes());
    assert_eq!(&kv.memory_bytes()[100..105], b"hello");
    assert_eq!(&kv.memory_bytes()[200..216], &[3u8; 16]);
    let client = scheduler.domain("client").unwrap();
    assert_eq!(
        &client.memory_bytes()[64..68],
        &StatusCode::Ok.code().to_le_bytes()
    );
    assert_eq!(
        &client.memory_bytes()[68..72],
        &StatusCode::NoSuchDomain.code().to_le_bytes()
    );
    assert_eq!(
        &client.memory_bytes()[72..76],
        &StatusCode::Ok.code().to_le_bytes()
    );
    let mailbox = &client.record().mailbox;
    assert_eq!(
        mailbox.len(),
        1,
        "the message to its own ID waits, committed"
    );
    assert_eq!(mailbox[0].bytes, b"he");
}

#[test]
fn recv_times_out_and_reports_small_buffers() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let wat = module(
        MESSENGER_IMPORTS,
        "(i32.store (i32.const 32) (call $recv (i32.const 100) (i32.const 64) (i32.const 200) (i64.const 3000000)))
         (i32.store (i32.const 36) (call $recv (i32.const 100) (i32.const 2) (i32.const 200) (i64.const -1)))",
    );
    let mut domain = open(&engine, &platform, "kv", 2, &wat).unwrap();
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    platform.advance_ns(3_000_000);
    assert_eq!(domain.run(10_000), RunOutcome::Waiting);
    assert_eq!(domain.wake(), vm::Wake::OnMessage);
    domain.deliver(vm::MailboxMessage {
        from: vm::DomainId::from_le_bytes([9; 16]),
        bytes: b"long".to_vec(),
    });
    assert_eq!(
        domain.run(10_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    assert_eq!(
        &domain.memory_bytes()[32..36],
        &StatusCode::Timeout.negated().to_le_bytes()
    );
    assert_eq!(
        &domain.memory_bytes()[36..40],
        &StatusCode::BufferTooSmall.negated().to_le_bytes()
    );
}

#[test]
fn send_of_an_oversized_message_is_refused_and_bad_buffers_trap() {
    let too_large = module(
        MESSENGER_IMPORTS,
        "(i32.store (i32.const 32) (call $send (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 65537)))",
    )
    .replace("(memory 1 4)", "(memory 2 4)");
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, &too_large).unwrap();
    assert_eq!(run_to_end(&mut domain, &platform), DomainStatus::Exited(0));
    assert_eq!(
        &domain.memory_bytes()[32..36],
        &StatusCode::TooLarge.code().to_le_bytes()
    );
    for body in [
        "(drop (call $send (i32.const 65535) (i32.const 2) (i32.const 0) (i32.const 1)))",
        "(drop (call $send (i32.const 0) (i32.const 2) (i32.const 65535) (i32.const 8)))",
        "(drop (call $recv (i32.const 65535) (i32.const 8) (i32.const 0) (i64.const 0)))",
        "(drop (call $recv (i32.const 0) (i32.const 8) (i32.const 65530) (i64.const 0)))",
    ] {
        let (status, _, _) = run_alone(&module(MESSENGER_IMPORTS, body));
        assert!(trap_reason(&status).contains("outside"), "{body}");
    }
}

#[test]
fn a_flood_of_large_messages_is_refused_by_bytes_before_it_fills_the_heap() {
    // 256 messages of 64 KiB (16 MiB, rewritten with every message) once
    // exhausted the kernel heap: the mailbox is bounded by bytes too.
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "kv", 2, &module("", "")).unwrap();
    let large = || vm::MailboxMessage {
        from: vm::DomainId::from_le_bytes([9; 16]),
        bytes: vec![7; vm::abi::MAX_MESSAGE_BYTES],
    };
    let accepted = (0..vm::abi::MAX_MAILBOX_MESSAGES)
        .take_while(|_| domain.deliver(large()) == StatusCode::Ok)
        .count();
    assert_eq!(
        accepted,
        vm::abi::MAX_MAILBOX_BYTES / vm::abi::MAX_MESSAGE_BYTES
    );
    assert_eq!(domain.deliver(large()), StatusCode::MailboxFull);
    let queued: usize = domain.record().mailbox.iter().map(|m| m.bytes.len()).sum();
    assert!(queued <= vm::abi::MAX_MAILBOX_BYTES);
    // Small messages still fit until the count limit.
    let mut small = open(&engine, &platform, "small", 3, &module("", "")).unwrap();
    let message = || vm::MailboxMessage {
        from: vm::DomainId::from_le_bytes([9; 16]),
        bytes: vec![1; 16],
    };
    for _ in 0..vm::abi::MAX_MAILBOX_MESSAGES {
        assert_eq!(small.deliver(message()), StatusCode::Ok);
    }
    assert_eq!(small.deliver(message()), StatusCode::MailboxFull);
}

const WASI_IMPORTS: &str = r#"
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
    (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
    (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
    (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))"#;

#[test]
fn fd_write_prints_lines_to_stdout_and_stderr() {
    // iovec at 64: {0, 7} then {7, 5}: "hello, " + "amber", then a newline.
    let wat = module(
        WASI_IMPORTS,
        r#"(i32.store (i32.const 64) (i32.const 0)) (i32.store (i32.const 68) (i32.const 7))
           (i32.store (i32.const 72) (i32.const 7)) (i32.store (i32.const 76) (i32.const 5))
           (i32.store8 (i32.const 90) (i32.const 10))
           (i32.store (i32.const 80) (i32.const 90)) (i32.store (i32.const 84) (i32.const 1))
           (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 3) (i32.const 96)))
           (drop (call $fd_write (i32.const 2) (i32.const 64) (i32.const 1) (i32.const 100)))
           (i32.store (i32.const 104) (call $fd_write (i32.const 5) (i32.const 64) (i32.const 1) (i32.const 100)))
           (call $proc_exit (i32.const 3))"#,
    );
    let (status, lines, memory) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(3));
    assert_eq!(lines, ["[app] out: hello, amber", "[app] err: hello, "]);
    assert_eq!(&memory[96..100], &13u32.to_le_bytes());
    assert_eq!(&memory[104..108], &vm::abi::errno::BADF.to_le_bytes());
}

#[test]
fn fd_write_writes_at_most_the_per_call_limit_and_says_so() {
    // One iovec {0, 65536}: the whole memory page.
    let wat = module(
        WASI_IMPORTS,
        r#"(i32.store (i32.const 64) (i32.const 0)) (i32.store (i32.const 68) (i32.const 65536))
           (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 96)))"#,
    );
    let (status, _, memory) = run_alone(&wat);
    assert_eq!(status, DomainStatus::Exited(0));
    let written = u32::from_le_bytes(memory[96..100].try_into().unwrap());
    assert_eq!(written as usize, vm::abi::MAX_OUTPUT_BYTES_PER_CALL);
}

#[test]
fn fd_write_with_a_bad_iovec_traps() {
    let wat = module(
        WASI_IMPORTS,
        r#"(i32.store (i32.const 64) (i32.const 65000)) (i32.store (i32.const 68) (i32.const 1000))
           (drop (call $fd_write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 96)))"#,
    );
    assert!(trap_reason(&run_alone(&wat).0).contains("fd_write: pointer 0xfde8"));
    let wat = module(
        WASI_IMPORTS,
        "(drop (call $fd_write (i32.const 1) (i32.const 65532) (i32.const 1) (i32.const 96)))",
    );
    assert!(trap_reason(&run_alone(&wat).0).contains("fd_write"));
}

#[test]
fn clock_random_args_and_environ_answer() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let wat = module(
        WASI_IMPORTS,
        r#"(drop (call $clock_time_get (i32.const 1) (i64.const 0) (i32.const 32)))
           (i32.store (i32.const 40) (call $clock_time_get (i32.const 9) (i64.const 0) (i32.const 32)))
           (drop (call $random_get (i32.const 44) (i32.const 2)))
           (drop (call $args_sizes_get (i32.const 48) (i32.const 52)))
           (drop (call $args_get (i32.const 56) (i32.const 128)))
           (drop (call $environ_sizes_get (i32.const 64) (i32.const 68)))
           (drop (call $environ_get (i32.const 72) (i32.const 160)))
           (i32.store (i32.const 76) (call $path_open (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
           (i32.store (i32.const 80) (call $fd_prestat_get (i32.const 3) (i32.const 84)))"#,
    );
    let mut record = record("app", 1, wasm(&wat));
    record.args = vec!["-v".into()];
    record.environment = vec!["A=1".into()];
    platform.advance_ns(1234);
    let storage = Box::new(vm::MemoryStorage::new(record));
    let mut domain = open_with(&engine, &platform, storage).unwrap();
    assert_eq!(run_to_end(&mut domain, &platform), DomainStatus::Exited(0));
    let memory = domain.memory_bytes();
    assert_eq!(
        &memory[32..40],
        &0u64.to_le_bytes(),
        "domain clock starts at 0"
    );
    assert_eq!(&memory[40..44], &vm::abi::errno::INVAL.to_le_bytes());
    assert_eq!(&memory[44..46], &[7, 38]);
    assert_eq!(&memory[48..56], &[2, 0, 0, 0, 7, 0, 0, 0]);
    assert_eq!(&memory[56..64], &[128, 0, 0, 0, 132, 0, 0, 0]);
    assert_eq!(&memory[128..135], b"app\0-v\0");
    assert_eq!(&memory[64..72], &[1, 0, 0, 0, 4, 0, 0, 0]);
    assert_eq!(&memory[72..76], &160u32.to_le_bytes());
    assert_eq!(&memory[160..164], b"A=1\0");
    assert_eq!(&memory[76..80], &vm::abi::errno::NOSYS.to_le_bytes());
    assert_eq!(&memory[80..84], &vm::abi::errno::BADF.to_le_bytes());
}

#[test]
fn poll_oneoff_sleeps_on_a_clock_subscription_and_sched_yield_yields() {
    // A relative clock subscription of 20 ms at 256 (userdata 0x55), events at 320.
    let wat = module(
        WASI_IMPORTS,
        r#"(i64.store (i32.const 256) (i64.const 0x55))
           (i32.store8 (i32.const 264) (i32.const 0))
           (i32.store (i32.const 272) (i32.const 1))
           (i64.store (i32.const 280) (i64.const 20000000))
           (i32.store (i32.const 32) (call $sched_yield))
           (i32.store (i32.const 36) (call $poll_oneoff (i32.const 256) (i32.const 320) (i32.const 1) (i32.const 40)))
           (i32.store (i32.const 44) (call $poll_oneoff (i32.const 256) (i32.const 320) (i32.const 0) (i32.const 40)))"#,
    );
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut domain = open(&engine, &platform, "app", 1, &wat).unwrap();
    assert_eq!(domain.run(10_000), RunOutcome::Waiting, "sched_yield");
    assert_eq!(domain.run(10_000), RunOutcome::Waiting, "poll_oneoff");
    assert_eq!(domain.wake(), vm::Wake::At(20_000_000));
    platform.advance_ns(20_000_000);
    assert_eq!(
        domain.run(10_000),
        RunOutcome::Halted(DomainStatus::Exited(0))
    );
    let memory = domain.memory_bytes();
    assert_eq!(&memory[32..40], &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&memory[40..44], &1u32.to_le_bytes());
    assert_eq!(&memory[320..328], &0x55u64.to_le_bytes());
    assert_eq!(&memory[44..48], &vm::abi::errno::INVAL.to_le_bytes());
}

#[test]
fn poll_oneoff_with_bad_subscriptions_traps() {
    let wat = module(
        WASI_IMPORTS,
        "(drop (call $poll_oneoff (i32.const 65500) (i32.const 0) (i32.const 1) (i32.const 40)))",
    );
    assert!(trap_reason(&run_alone(&wat).0).contains("poll_oneoff"));
}

/// The import of `import` in the text format, with `params` and `results`.
fn import_text(import: &vm::abi::Import, params: &[vm::abi::ValueType]) -> String {
    let list = |types: &[vm::abi::ValueType]| {
        types
            .iter()
            .map(|value_type| value_type.name())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"(import "{}" "{}" (func (param {}) (result {})))"#,
        import.module,
        import.name,
        list(params),
        list(import.results)
    )
}

#[test]
fn the_vm_defines_exactly_the_abi_imports() {
    let defined = vm::defined_imports().expect("the host functions link");
    let mut unique = defined.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), defined.len(), "defined twice: {defined:?}");
    for (module, name) in &defined {
        assert!(
            vm::abi::find_import(module, name).is_some(),
            "the vm defines {module}.{name}, which abi::IMPORTS lacks"
        );
    }
    for import in vm::abi::IMPORTS {
        assert!(
            defined.contains(&(import.module, import.name)),
            "abi::IMPORTS lists {import}, which the vm does not define"
        );
    }
}

#[test]
fn the_vm_defines_every_abi_import_with_its_signature() {
    // The names are the same both ways (the test above), so a module that
    // imports every function with abi's signature opening, and one with any
    // signature changed being refused, makes the signatures the same too.
    let engine = new_engine();
    let platform = TestPlatform::new();
    let every_import: String = vm::abi::IMPORTS
        .iter()
        .map(|import| import_text(import, import.params))
        .collect();
    if let Err(error) = open(&engine, &platform, "abi", 1, &module(&every_import, "")) {
        panic!("a module importing every abi import does not open: {error}");
    }
    for import in vm::abi::IMPORTS {
        let mut params = import.params.to_vec();
        params.push(vm::abi::ValueType::I64);
        let wrong = import_text(import, &params);
        let opened = open(&engine, &platform, "abi", 1, &module(&wrong, ""));
        assert!(
            matches!(opened, Err(vm::Error::Instantiation(_))),
            "{import} with an extra i64 parameter: {opened:?}"
        );
    }
}

//! Traps end only their own domain, with a clear reason; fuel is shared fairly.

mod common;

use common::*;
use vm::{DomainStatus, Error, Scheduler, new_engine};

fn trapping(body: &str) -> String {
    format!(
        r#"(module
            (import "env" "memory" (memory 1 2))
            (table 1 funcref)
            (func $recurse (param i32) (result i32)
                (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
            (func (export "_start") {body}))"#
    )
}

const BUSY: &str = r#"(module
    (import "env" "memory" (memory 1 1))
    (func (export "_start") (local $i i64)
        (loop $again
            (local.set $i (i64.add (local.get $i) (i64.const 1)))
            (i64.store (i32.const 0) (local.get $i))
            (br $again))))"#;

#[test]
fn each_trap_ends_its_domain_only_and_names_the_cause() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let cases = [
        (
            "oob",
            "(drop (i32.load (i32.const 70000)))",
            "out of bounds memory access",
        ),
        ("unreachable", "unreachable", "unreachable"),
        (
            "null",
            "(call_indirect (i32.const 0))",
            "wasm trap: indirect call to an uninitialized table element",
        ),
        (
            "recursion",
            "(drop (call $recurse (i32.const 0)))",
            "call stack exhausted",
        ),
        (
            "grow",
            // memory.grow beyond the maximum returns -1 (Wasm spec 4.4.7);
            // the guest then gives up, as Rust's allocator does.
            "(if (i32.eq (memory.grow (i32.const 5)) (i32.const -1)) (then unreachable))",
            "unreachable",
        ),
    ];
    let mut scheduler = Scheduler::new(10_000);
    scheduler
        .add(open(&engine, &platform, "busy", 100, BUSY).unwrap(), ())
        .unwrap();
    for (index, (name, body, _)) in cases.iter().enumerate() {
        let domain = open(&engine, &platform, name, index as u8 + 1, &trapping(body)).unwrap();
        scheduler.add(domain, ()).unwrap();
    }
    run_rounds(&mut scheduler, &platform, 200);
    for (name, _, expected) in cases {
        let status = scheduler.domain(name).unwrap().status();
        let reason = trap_reason(&status);
        assert!(reason.contains(expected), "{name}: {reason}");
        assert_eq!(
            scheduler.domain(name).unwrap().record().status,
            status,
            "{name}: the trap is recorded in the image"
        );
    }
    let busy = scheduler.domain("busy").unwrap();
    assert_eq!(busy.status(), DomainStatus::Running);
    assert!(busy.fuel_used() > 100_000);
    assert!(
        platform
            .lines()
            .iter()
            .any(|line| line.starts_with("[oob] log: trapped: wasm trap: out of bounds")),
        "{:?}",
        platform.lines()
    );
}

#[test]
fn bad_modules_are_refused_with_a_reason() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let storage = vm::MemoryStorage::new(record("junk", 1, b"\0asm\x01\0\0\0junk".to_vec()));
    let error = open_with(&engine, &platform, Box::new(storage)).unwrap_err();
    assert!(matches!(error, Error::InvalidModule(_)), "{error}");
    let cases = [
        (
            r#"(module (memory 1) (func (export "_start")))"#,
            Error::MemoryNotImported,
        ),
        (
            r#"(module (import "env" "memory" (memory 1)) (func $s) (start $s) (func (export "_start")))"#,
            Error::StartSection,
        ),
        (
            r#"(module (import "env" "memory" (memory 1)))"#,
            Error::MissingEntry,
        ),
        (
            r#"(module (import "env" "memory" (memory 1)) (import "x" "y" (func)) (func (export "_start")))"#,
            Error::UnknownImport {
                module: "x".into(),
                name: "y".into(),
            },
        ),
    ];
    for (wat, expected) in cases {
        let error = open(&engine, &platform, "bad", 1, wat).unwrap_err();
        assert_eq!(error, expected);
    }
}

#[test]
fn two_busy_domains_get_fuel_within_ten_percent() {
    let engine = new_engine();
    let platform = TestPlatform::new();
    let mut scheduler = Scheduler::new(10_000);
    scheduler
        .add(open(&engine, &platform, "a", 1, BUSY).unwrap(), ())
        .unwrap();
    scheduler
        .add(open(&engine, &platform, "b", 2, BUSY).unwrap(), ())
        .unwrap();
    run_rounds(&mut scheduler, &platform, 50);
    let a = scheduler.domain("a").unwrap().fuel_used() as f64;
    let b = scheduler.domain("b").unwrap().fuel_used() as f64;
    assert!(a > 400_000.0 && b > 400_000.0, "{a} {b}");
    assert!((a - b).abs() / a.max(b) < 0.10, "{a} {b}");
}

#[test]
fn a_bulk_instruction_costing_more_than_a_slice_still_completes() {
    // memory.fill costs one fuel unit per 64 bytes: 4 MiB needs 65,536,
    // far more than a 1,000-fuel slice. The domain must still get through
    // it (and the others keep their turns), not run out of fuel forever.
    let engine = new_engine();
    let platform = TestPlatform::new();
    let wat = r#"(module
        (import "env" "memory" (memory 64 64))
        (func (export "_start")
            (memory.fill (i32.const 0) (i32.const 7) (i32.const 4194304))))"#;
    let mut domain = open(&engine, &platform, "filler", 1, wat).expect("domain opens");
    let mut status = None;
    for _ in 0..1_000 {
        if let vm::RunOutcome::Halted(ended) = domain.run(1_000) {
            status = Some(ended);
            break;
        }
    }
    assert_eq!(status, Some(DomainStatus::Exited(0)));
    assert!(
        domain.memory_bytes()[..4194304]
            .iter()
            .all(|&byte| byte == 7)
    );
}

#[test]
fn a_module_over_the_limit_is_refused_before_it_is_read() {
    // A 40 MiB module once exhausted the kernel heap at boot.
    let engine = new_engine();
    let platform = TestPlatform::new();
    let oversized = vec![0u8; vm::MAX_MODULE_BYTES + 1];
    let image = persist::Image::create(
        persist::MemoryDevice::new(4096),
        persist::NewDomain {
            id: vm::DomainId(1),
            name: "oversized",
            module: &oversized,
            memory_pages: 1,
            memory_max_pages: 1,
            args: Vec::new(),
            env: Vec::new(),
            network: Default::default(),
        },
    )
    .unwrap();
    let error =
        open_with(&engine, &platform, Box::new(vm::PersistStorage::new(image))).unwrap_err();
    let expected = Error::ModuleTooLarge {
        len_bytes: oversized.len() as u64,
    };
    assert_eq!(error, expected);
    assert!(
        error.to_string().contains("more than the 8388608"),
        "{error}"
    );
    // Any other storage is checked too, after loading.
    let storage = vm::MemoryStorage::new(record("oversized", 1, oversized));
    let error = open_with(&engine, &platform, Box::new(storage)).unwrap_err();
    assert_eq!(error, expected);
}

#[test]
fn a_module_of_too_many_functions_is_refused_at_compilation() {
    // 999,000 empty functions (4 MB) once took more than the kernel heap to
    // compile; wasmi's strict limits allow 10,000.
    let engine = new_engine();
    let platform = TestPlatform::new();
    let wat = format!(
        r#"(module (import "env" "memory" (memory 1 1)) {} (func (export "_start")))"#,
        "(func)".repeat(20_000)
    );
    let error = open(&engine, &platform, "many", 1, &wat).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidModule(reason) if reason.contains("function")),
        "{error}"
    );
}

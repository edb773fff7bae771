//! Unit tests of the module rewrites on small hand-written modules.

use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

use super::{export_mutable_globals, global_export_name, import_memory, validate};

fn wat(text: &str) -> Vec<u8> {
    match wat::parse_str(text) {
        Ok(bytes) => bytes,
        Err(error) => panic!("test module does not parse: {error}"),
    }
}

/// Every import as (module, name, type).
fn imports(module: &[u8]) -> Vec<(String, String, TypeRef)> {
    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Ok(Payload::ImportSection(reader)) = payload {
            for import in reader.into_imports() {
                let import = import.expect("import parses");
                imports.push((import.module.to_owned(), import.name.to_owned(), import.ty));
            }
        }
    }
    imports
}

/// Every export as (name, kind, index).
fn exports(module: &[u8]) -> Vec<(String, ExternalKind, u32)> {
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Ok(Payload::ExportSection(reader)) = payload {
            for export in reader {
                let export = export.expect("export parses");
                exports.push((export.name.to_owned(), export.kind, export.index));
            }
        }
    }
    exports
}

fn has_memory_section(module: &[u8]) -> bool {
    Parser::new(0)
        .parse_all(module)
        .any(|payload| matches!(payload, Ok(Payload::MemorySection(_))))
}

fn data_segments(module: &[u8]) -> Vec<Vec<u8>> {
    let mut segments = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Ok(Payload::DataSection(reader)) = payload {
            for data in reader {
                segments.push(data.expect("data parses").data.to_vec());
            }
        }
    }
    segments
}

const DEFINES_MEMORY: &str = r#"
    (module
      (import "amber" "log" (func $log (param i32 i32 i32)))
      (import "amber" "base" (global $base i32))
      (memory (export "memory") 2 10)
      (data (i32.const 16) "hello")
      (func (export "_start")
        (i32.store (i32.const 0) (global.get $base))
        (call $log (i32.const 0) (i32.const 16) (i32.const 5))))
"#;

#[test]
fn import_memory_turns_the_defined_memory_into_an_import_with_the_same_limits() {
    let input = wat(DEFINES_MEMORY);
    let output = import_memory(&input).expect("rewrite succeeds");
    validate(&output).expect("output is valid");

    assert!(!has_memory_section(&output));
    let imports = imports(&output);
    assert_eq!(imports.len(), 3);
    // Existing imports keep their order, so function and global indices hold.
    assert_eq!(
        (imports[0].0.as_str(), imports[0].1.as_str()),
        ("amber", "log")
    );
    assert_eq!(
        (imports[1].0.as_str(), imports[1].1.as_str()),
        ("amber", "base")
    );
    let (module, name, TypeRef::Memory(memory)) = &imports[2] else {
        panic!("last import is not a memory: {:?}", imports[2]);
    };
    assert_eq!((module.as_str(), name.as_str()), ("env", "memory"));
    assert_eq!((memory.initial, memory.maximum), (2, Some(10)));
    assert!(!memory.memory64 && !memory.shared);

    // The memory export and the data segment still refer to memory 0.
    assert!(exports(&output).contains(&("memory".to_owned(), ExternalKind::Memory, 0)));
    assert_eq!(data_segments(&output), vec![b"hello".to_vec()]);
}

#[test]
fn import_memory_adds_an_import_section_when_the_module_has_none() {
    let input = wat(r#"
        (module
          (type $unit (func))
          (memory 1)
          (func (export "f") (type $unit) (drop (i32.load (i32.const 0)))))
    "#);
    let output = import_memory(&input).expect("rewrite succeeds");
    let imports = imports(&output);
    assert_eq!(imports.len(), 1);
    let TypeRef::Memory(memory) = imports[0].2 else {
        panic!("the import is not a memory");
    };
    assert_eq!((memory.initial, memory.maximum), (1, None));
}

#[test]
fn import_memory_keeps_a_module_that_already_imports_its_memory() {
    let input = wat(r#"(module (import "env" "memory" (memory 1 4)))"#);
    assert_eq!(import_memory(&input).expect("no rewrite needed"), input);
}

#[test]
fn import_memory_keeps_a_module_without_memory() {
    let input = wat(r#"(module (func (export "f")))"#);
    assert_eq!(import_memory(&input).expect("no rewrite needed"), input);
}

#[test]
fn import_memory_refuses_two_memories() {
    let input = wat(r#"(module (import "env" "memory" (memory 1)) (memory 1))"#);
    let error = import_memory(&input).expect_err("two memories are refused");
    assert!(format!("{error:#}").contains("2 memories"), "{error:#}");
}

#[test]
fn rewrites_refuse_invalid_bytes() {
    let garbage = b"\0asm\x01\0\0\0\x05\xff";
    assert!(import_memory(garbage).is_err());
    assert!(export_mutable_globals(garbage).is_err());
    assert!(import_memory(b"not wasm at all").is_err());
}

const GLOBALS: &str = r#"
    (module
      (import "env" "memory" (memory 1))
      (import "env" "imported" (global $imported (mut i32)))
      (global $stack_pointer (mut i32) (i32.const 65536))
      (global $constant i32 (i32.const 7))
      (global $state (mut i64) (i64.const 0))
      (func (export "_start") (global.set $state (i64.const 1)))
      (start 0))
"#;

#[test]
fn export_mutable_globals_exports_each_defined_mutable_global_by_index() {
    let input = wat(GLOBALS);
    let output = export_mutable_globals(&input).expect("rewrite succeeds");
    validate(&output).expect("output is valid");

    let exports = exports(&output);
    assert_eq!(
        exports,
        vec![
            ("_start".to_owned(), ExternalKind::Func, 0),
            (global_export_name(1), ExternalKind::Global, 1),
            (global_export_name(3), ExternalKind::Global, 3),
        ]
    );
    assert_eq!(global_export_name(3), "amber.global.3");
}

#[test]
fn export_mutable_globals_adds_an_export_section_when_the_module_has_none() {
    let input = wat(r#"
        (module
          (memory 1)
          (global (mut i32) (i32.const 0))
          (func)
          (data (i32.const 0) "x"))
    "#);
    let output = export_mutable_globals(&input).expect("rewrite succeeds");
    assert_eq!(
        exports(&output),
        vec![(global_export_name(0), ExternalKind::Global, 0)]
    );
}

#[test]
fn export_mutable_globals_is_idempotent() {
    let once = export_mutable_globals(&wat(GLOBALS)).expect("first rewrite");
    let twice = export_mutable_globals(&once).expect("second rewrite");
    assert_eq!(exports(&once), exports(&twice));
}

#[test]
fn export_mutable_globals_refuses_a_clashing_export_name() {
    let input = wat(r#"
        (module
          (global (mut i32) (i32.const 0))
          (func (export "amber.global.0")))
    "#);
    let error = export_mutable_globals(&input).expect_err("name clash is refused");
    assert!(format!("{error:#}").contains("amber.global.0"), "{error:#}");
}

#[test]
fn the_two_rewrites_compose() {
    let input = wat(r#"
        (module
          (memory 1 2)
          (global (mut i32) (i32.const 1024))
          (func (export "_start")))
    "#);
    let output =
        export_mutable_globals(&import_memory(&input).expect("import")).expect("export globals");
    assert_eq!(imports(&output).len(), 1);
    assert!(exports(&output).contains(&(global_export_name(0), ExternalKind::Global, 0)));
}

mod never_panic {
    //! Property tests: any bytes in, an error or a valid module out, no panic.

    use proptest::prelude::*;

    use super::{DEFINES_MEMORY, GLOBALS, wat};
    use crate::wasm_rewrite::{export_mutable_globals, import_memory, validate};

    /// Checks both rewrites on `bytes`: no panic, and any output is valid.
    fn check(bytes: &[u8]) {
        for rewritten in [import_memory(bytes), export_mutable_globals(bytes)]
            .into_iter()
            .flatten()
        {
            assert!(validate(&rewritten).is_ok());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            check(&bytes);
        }

        #[test]
        fn valid_modules_with_corrupted_bytes(
            corruptions in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            is_globals_module in any::<bool>(),
        ) {
            let mut bytes = wat(if is_globals_module { GLOBALS } else { DEFINES_MEMORY });
            for (index, value) in corruptions {
                let position = index.index(bytes.len());
                bytes[position] = value;
            }
            check(&bytes);
        }
    }
}

//! The built apps have the module shape guest-sdk/README.md promises the vm.
//!
//! Running them is the vm's business (vm tests and the host runner); this checks
//! what `cargo xtask app build` produced: valid, memory imported, no start
//! section, `_start` and the asyncify exports, every mutable global exported,
//! and only imports from the ABI with the ABI's signatures. That last check
//! is what ties guest-sdk's `extern "C"` declarations, which must spell each
//! import's name literally, to the one list in the abi crate the vm is
//! tested against too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use wasmparser::{ExternalKind, Parser, Payload, TypeRef, ValType, Validator};
use xtask::app::{APPS, AppKind, build_apps};
use xtask::wasm_rewrite::global_export_name;

const ASYNCIFY_EXPORTS: &[(&str, &str)] = &[
    ("asyncify_start_unwind", "[i32] -> []"),
    ("asyncify_stop_unwind", "[] -> []"),
    ("asyncify_start_rewind", "[i32] -> []"),
    ("asyncify_stop_rewind", "[] -> []"),
    ("asyncify_get_state", "[] -> [i32]"),
];

/// The apps' memory maximum in 64 KiB pages (apps/.cargo/config.toml).
const MAX_MEMORY_PAGES: u64 = 1024;
const BIGMEM_MAX_MEMORY_PAGES: u64 = 16384;

/// What a test needs to know about one built module.
#[derive(Debug)]
struct Inspected {
    name: &'static str,
    kind: AppKind,
    /// (module, name) -> signature, for function imports.
    function_imports: BTreeMap<(String, String), String>,
    /// (module, name, initial pages, maximum pages) for memory imports.
    memory_imports: Vec<(String, String, u64, Option<u64>)>,
    other_imports: Vec<String>,
    defined_memory_count: u32,
    has_start_section: bool,
    /// export name -> (kind, index)
    exports: BTreeMap<String, (ExternalKind, u32)>,
    /// export name -> signature, for function exports.
    function_export_types: BTreeMap<String, String>,
    /// Indices of the mutable globals the module defines.
    defined_mutable_globals: Vec<u32>,
}

fn signature(function_type: &wasmparser::FuncType) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "[{}] -> [{}]",
        list(function_type.params()),
        list(function_type.results())
    )
}

fn inspect(name: &'static str, kind: AppKind, module: &[u8]) -> Inspected {
    let types = match Validator::new().validate_all(module) {
        Ok(types) => types,
        Err(error) => panic!("{name}.wasm is not valid: {error}"),
    };
    let types = types.as_ref();
    let function_type = |function_index: u32| {
        signature(types[types.core_function_at(function_index)].unwrap_func())
    };

    let mut inspected = Inspected {
        name,
        kind,
        function_imports: BTreeMap::new(),
        memory_imports: Vec::new(),
        other_imports: Vec::new(),
        defined_memory_count: 0,
        has_start_section: false,
        exports: BTreeMap::new(),
        function_export_types: BTreeMap::new(),
        defined_mutable_globals: Vec::new(),
    };
    let mut imported_function_count = 0u32;
    let mut imported_global_count = 0u32;
    for payload in Parser::new(0).parse_all(module) {
        match payload.expect("a validated module parses") {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.expect("a validated import parses");
                    let key = (import.module.to_owned(), import.name.to_owned());
                    match import.ty {
                        TypeRef::Func(_) => {
                            inspected
                                .function_imports
                                .insert(key, function_type(imported_function_count));
                            imported_function_count += 1;
                        }
                        TypeRef::Memory(memory) => inspected.memory_imports.push((
                            key.0,
                            key.1,
                            memory.initial,
                            memory.maximum,
                        )),
                        TypeRef::Global(_) => {
                            imported_global_count += 1;
                            inspected.other_imports.push(format!("{}.{}", key.0, key.1));
                        }
                        _ => inspected.other_imports.push(format!("{}.{}", key.0, key.1)),
                    }
                }
            }
            Payload::MemorySection(reader) => inspected.defined_memory_count += reader.count(),
            Payload::StartSection { .. } => inspected.has_start_section = true,
            Payload::GlobalSection(reader) => {
                for (defined_index, global) in (0u32..).zip(reader) {
                    if global.expect("a validated global parses").ty.mutable {
                        inspected
                            .defined_mutable_globals
                            .push(imported_global_count + defined_index);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.expect("a validated export parses");
                    if export.kind == ExternalKind::Func {
                        inspected
                            .function_export_types
                            .insert(export.name.to_owned(), function_type(export.index));
                    }
                    inspected
                        .exports
                        .insert(export.name.to_owned(), (export.kind, export.index));
                }
            }
            _ => {}
        }
    }
    inspected
}

/// Builds every app once for all tests in this file.
fn built_apps() -> &'static [Inspected] {
    static BUILT: OnceLock<Vec<Inspected>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let paths: Vec<PathBuf> = match build_apps(&[]) {
            Ok(paths) => paths,
            Err(error) => panic!("building the apps failed: {error:#}"),
        };
        assert_eq!(paths.len(), APPS.len());
        APPS.iter()
            .zip(paths)
            .map(|(app, path)| {
                assert!(path.ends_with(format!("{}.wasm", app.name)), "{path:?}");
                let module = std::fs::read(&path).expect("a built app can be read");
                inspect(app.name, app.kind, &module)
            })
            .collect()
    })
}

#[test]
fn every_app_imports_its_one_memory_and_has_no_start_section() {
    for app in built_apps() {
        assert_eq!(app.defined_memory_count, 0, "{} defines a memory", app.name);
        assert_eq!(
            app.memory_imports.len(),
            1,
            "{}: {:?}",
            app.name,
            app.memory_imports
        );
        let (module, name, initial_pages, maximum_pages) = &app.memory_imports[0];
        assert_eq!(
            (module.as_str(), name.as_str()),
            (abi::MEMORY_MODULE, abi::MEMORY_NAME),
            "{}",
            app.name
        );
        assert!(*initial_pages >= 1, "{}", app.name);
        // bigmem exists to be larger than RAM: its build.rs allows 1 GiB.
        let expected_maximum = if app.name == "bigmem" {
            BIGMEM_MAX_MEMORY_PAGES
        } else {
            MAX_MEMORY_PAGES
        };
        assert_eq!(*maximum_pages, Some(expected_maximum), "{}", app.name);
        assert!(!app.has_start_section, "{} has a start section", app.name);
        assert!(
            app.other_imports.is_empty(),
            "{}: {:?}",
            app.name,
            app.other_imports
        );
    }
}

#[test]
fn every_app_exports_its_entry_and_the_asyncify_functions() {
    for app in built_apps() {
        assert_eq!(
            app.function_export_types.get("_start").map(String::as_str),
            Some("[] -> []"),
            "{}",
            app.name
        );
        for (export, expected) in ASYNCIFY_EXPORTS {
            assert_eq!(
                app.function_export_types.get(*export).map(String::as_str),
                Some(*expected),
                "{}: {export}",
                app.name
            );
        }
    }
}

#[test]
fn every_mutable_global_is_exported_by_index() {
    for app in built_apps() {
        // At least rustc's __stack_pointer and asyncify's state and data.
        assert!(
            app.defined_mutable_globals.len() >= 3,
            "{}: {:?}",
            app.name,
            app.defined_mutable_globals
        );
        for &global_index in &app.defined_mutable_globals {
            assert_eq!(
                app.exports.get(&global_export_name(global_index)),
                Some(&(ExternalKind::Global, global_index)),
                "{}: global {global_index}",
                app.name
            );
        }
    }
}

#[test]
fn apps_import_only_the_abi_with_its_signatures() {
    for app in built_apps() {
        for ((module, name), found) in &app.function_imports {
            let Some(import) = abi::find_import(module, name) else {
                panic!(
                    "{} imports {module}.{name}, which abi::IMPORTS (what the vm provides) lacks",
                    app.name
                );
            };
            assert_eq!(
                found,
                &import.signature().to_string(),
                "{} imports {module}.{name}",
                app.name
            );
            if import.module == abi::AMBER_MODULE {
                assert_eq!(app.kind, AppKind::Amber, "{}", app.name);
            }
        }
    }
}

#[test]
fn apps_use_the_imports_their_job_needs() {
    let imports_of = |wanted: &str| -> Vec<String> {
        let app = built_apps()
            .iter()
            .find(|app| app.name == wanted)
            .expect("the app was built");
        app.function_imports
            .keys()
            .map(|(module, name)| format!("{module}.{name}"))
            .collect()
    };
    assert!(imports_of("hello").contains(&"wasi_snapshot_preview1.fd_write".to_owned()));
    let counter = imports_of("counter");
    assert!(counter.contains(&"amber.sleep".to_owned()), "{counter:?}");
    assert!(counter.contains(&"amber.log".to_owned()), "{counter:?}");
    let kv = imports_of("kv");
    assert!(kv.contains(&"amber.recv".to_owned()), "{kv:?}");
    assert!(kv.contains(&"amber.send".to_owned()), "{kv:?}");
}

#[test]
fn an_unknown_app_name_is_an_error_naming_the_apps() {
    let error = build_apps(&["no-such-app"]).expect_err("unknown names are refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("no-such-app") && message.contains("counter"),
        "{message}"
    );
}

#[test]
fn every_app_compiles_within_the_domain_engines_limits() {
    // The engine enforces wasmi's strict limits and the vm a module size
    // limit against hostile modules; the real apps must stay well inside.
    let engine = vm::new_engine();
    for app in built_apps() {
        let path = xtask::paths::apps_dir().join(format!("{}.wasm", app.name));
        let module = std::fs::read(&path).expect("a built app can be read");
        assert!(module.len() <= vm::MAX_MODULE_BYTES, "{}", app.name);
        if let Err(error) = vm::wasmi::Module::new(&engine, &module[..]) {
            panic!("{} does not compile for a domain: {error}", app.name);
        }
    }
}

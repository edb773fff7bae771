//! The apps archive xtask writes holds what `image new` would put in images.

use std::path::PathBuf;

use persist::NetworkDeclaration;
use persist::archive::Archive;
use serde_json::json;
use xtask::app::network_declaration;
use xtask::archive::AppToArchive;
use xtask::image::{self, MemoryLimits};

fn temp_dir(test: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("xtask-archive-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[test]
fn an_archive_holds_each_module_as_image_new_prepares_it() {
    let directory = temp_dir("round-trip");
    let defines = directory.join("defines.wasm");
    let unbounded = directory.join("unbounded.wasm");
    std::fs::write(
        &defines,
        wat::parse_str(r#"(module (memory 2 8) (func (export "_start")))"#).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &unbounded,
        wat::parse_str(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#)
            .unwrap(),
    )
    .unwrap();
    let output = directory.join("apps.img");
    let listening = NetworkDeclaration {
        listen: vec![6379, 80],
        durable_replies: true,
    };
    xtask::archive::write(
        &[
            AppToArchive {
                name: "a",
                path: &defines,
                network: listening.clone(),
            },
            AppToArchive {
                name: "b",
                path: &unbounded,
                network: NetworkDeclaration::default(),
            },
        ],
        &output,
    )
    .unwrap();

    let entries = xtask::archive::entries(&output).unwrap();
    let limits: Vec<(&str, u64, u64)> = entries
        .iter()
        .map(|entry| {
            (
                entry.name.as_str(),
                entry.memory_pages,
                entry.memory_max_pages,
            )
        })
        .collect();
    // Without a maximum of its own a module gets 64 MiB, as with image new.
    assert_eq!(limits, [("a", 2, 8), ("b", 1, 1024)]);
    // Each entry carries the network its app declares.
    assert_eq!(entries[0].network, listening);
    assert_eq!(entries[1].network, NetworkDeclaration::default());

    let mut archive = Archive::open(persist::FileDevice::open(&output).unwrap()).unwrap();
    for (name, path) in [("a", &defines), ("b", &unbounded)] {
        let module = archive.read_module(name).unwrap().unwrap();
        assert_eq!(module, image::prepare_module(path, None).unwrap().module);
    }
    // The module that defined its memory imports it now.
    let module = archive.read_module("a").unwrap().unwrap();
    assert_eq!(
        image::memory_limits(&module).unwrap(),
        Some(MemoryLimits {
            initial_pages: 2,
            max_pages: Some(8)
        })
    );
    assert!(xtask::wasm_rewrite::validate(&module).is_ok());
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn a_file_that_is_no_archive_is_named() {
    let directory = temp_dir("garbage");
    let path = directory.join("garbage.img");
    std::fs::write(&path, vec![0x55u8; 8192]).unwrap();
    let error = format!("{:#}", xtask::archive::entries(&path).unwrap_err());
    assert!(error.contains("is not a usable apps archive"), "{error}");
    assert!(error.contains("bad magic"), "{error}");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn cargo_toml_declares_an_apps_network() {
    // `cargo metadata` gives `metadata: null` to a package without any.
    assert_eq!(
        network_declaration("kv", &json!(null)).unwrap(),
        NetworkDeclaration::default()
    );
    assert_eq!(
        network_declaration("kv", &json!({"other-tool": {"x": 1}})).unwrap(),
        NetworkDeclaration::default()
    );
    assert_eq!(
        network_declaration(
            "kv",
            &json!({"amber": {"listen": [6379, 80], "durable-replies": true}})
        )
        .unwrap(),
        NetworkDeclaration {
            listen: vec![6379, 80],
            durable_replies: true,
        }
    );
    assert_eq!(
        network_declaration("kv", &json!({"amber": {"listen": [6379]}})).unwrap(),
        NetworkDeclaration {
            listen: vec![6379],
            durable_replies: false,
        }
    );
}

#[test]
fn bad_cargo_toml_declarations_are_refused_naming_the_app() {
    for (amber, words) in [
        (json!({"listen": [0]}), "`listen` of kv holds 0, not a port"),
        (
            json!({"listen": [65536]}),
            "`listen` of kv holds 65536, not a port",
        ),
        (
            json!({"listen": ["http"]}),
            "`listen` of kv holds \"http\", not a port",
        ),
        (
            json!({"listen": 6379}),
            "`listen` of kv is not a list of ports",
        ),
        (
            json!({"listen": [80, 80]}),
            "`listen` of kv: listen port 80 declared twice",
        ),
        (
            json!({"listen": [1, 2, 3, 4, 5, 6, 7, 8, 9]}),
            "kv declares 9 listen ports (at most 8 allowed)",
        ),
        (
            json!({"durable-replies": "yes"}),
            "`durable-replies` of kv is not true or false",
        ),
        (
            json!({"durable_replies": true}),
            "[package.metadata.amber] of kv has an unknown key `durable_replies`",
        ),
        (
            json!([6379]),
            "[package.metadata.amber] of kv is not a table",
        ),
    ] {
        let error = network_declaration("kv", &json!({ "amber": amber })).unwrap_err();
        let error = format!("{error:#}");
        assert!(error.contains(words), "{amber}: {error}");
    }
}

#[test]
fn every_app_of_the_apps_workspace_has_a_declaration() {
    // Whatever the apps declare, cargo metadata reads it and it is valid.
    let networks = xtask::app::declared_networks().unwrap();
    for app in xtask::app::APPS {
        let network = networks
            .get(app.name)
            .unwrap_or_else(|| panic!("{}", app.name));
        assert!(
            persist::check_listen(&network.listen).is_ok(),
            "{}",
            app.name
        );
    }
}

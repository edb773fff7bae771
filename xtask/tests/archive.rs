//! The apps archive xtask writes holds what `image new` would put in images.

use std::path::PathBuf;

use persist::archive::Archive;
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
    xtask::archive::write(&[("a", &defines), ("b", &unbounded)], &output).unwrap();

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

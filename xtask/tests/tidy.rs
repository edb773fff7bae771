//! Tidy checks reviewers would otherwise nag about: taglines and unsafe.

use std::path::{Path, PathBuf};

use xtask::paths::workspace_root;

/// Every Rust source file under `directory`, skipping build output.
fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(directory) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "fuzz" && !name.to_string_lossy().starts_with('.') {
                files.extend(rust_files(&path));
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn source_directories() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut directories: Vec<PathBuf> = [
        "abi/src",
        "kernel/src",
        "kernel/core/src",
        "persist/src",
        "vm/src",
        "vm/host/src",
        "xtask/src",
        "tests/src",
        "guest-sdk/src",
    ]
    .iter()
    .map(|directory| root.join(directory))
    .collect();
    if let Ok(entries) = std::fs::read_dir(root.join("apps")) {
        directories.extend(entries.flatten().map(|entry| entry.path().join("src")));
    }
    directories
}

#[test]
fn every_module_opens_with_a_short_tagline() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for directory in source_directories() {
        for file in rust_files(&directory) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let first = text
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("");
            checked += 1;
            if first.starts_with("#![doc = include_str!") {
                continue; // the crate README is the crate doc
            }
            if !first.starts_with("//!") {
                problems.push(format!(
                    "{}: does not open with a //! tagline",
                    file.display()
                ));
            } else if first.chars().count() > 84 {
                problems.push(format!(
                    "{}: tagline longer than 80 characters",
                    file.display()
                ));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} files found: is the root right?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The compiler keeps unsafe code in the kernel's arch, memory and drivers
/// modules: the crate root denies `unsafe_code`, which sees `unsafe` blocks,
/// functions, impls and `#[unsafe(...)]` attributes alike, and only those
/// three module declarations allow it. This test checks that the lint is in
/// place and that no other module is let off.
#[test]
fn kernel_unsafe_stays_in_arch_memory_and_drivers() {
    unsafe_code_is_allowed_only_on(
        "kernel/src/main.rs",
        "kernel/src",
        &["pub mod arch;", "pub mod drivers;", "pub mod memory;"],
    );
}

/// vm-host's page protection (mmap, mprotect, the SIGSEGV handler) is the
/// host's only unsafe code, in one module.
#[test]
fn vm_host_unsafe_stays_in_protection() {
    unsafe_code_is_allowed_only_on(
        "vm/host/src/lib.rs",
        "vm/host/src",
        &["pub mod protection;"],
    );
}

/// The crate root at `root` denies `unsafe_code` and lets off exactly the
/// module declarations `modules`, each saying why; no file under `sources`
/// other than the root overrides the lint.
fn unsafe_code_is_allowed_only_on(root: &str, sources: &str, modules: &[&str]) {
    let root = workspace_root().join(root);
    let text = std::fs::read_to_string(&root).unwrap_or_default();
    assert!(
        text.lines()
            .any(|line| line.trim() == "#![deny(unsafe_code)]"),
        "{}: the crate root must deny unsafe_code",
        root.display()
    );
    // Attributes may span lines (rustfmt wraps long ones): gather each
    // `#[allow(...)]` whole, then note the item it applies to.
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut allowed = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if !(line.starts_with("#[allow(") || line.starts_with("#[expect(")) {
            index += 1;
            continue;
        }
        let start = index;
        let mut attribute = String::from(line);
        while !lines[index].ends_with(")]") && index + 1 < lines.len() {
            index += 1;
            attribute.push_str(lines[index]);
        }
        index += 1;
        if attribute.contains("unsafe_code") {
            assert!(
                attribute.contains("reason = "),
                "{}:{}: an allow of unsafe_code says why",
                root.display(),
                start + 1
            );
            allowed.push(lines.get(index).copied().unwrap_or("").to_string());
        }
    }
    assert_eq!(
        allowed,
        modules,
        "{}: unsafe_code is allowed on exactly {modules:?}",
        root.display()
    );
    for file in rust_files(&workspace_root().join(sources)) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            let is_override = line.contains("allow(unsafe_code")
                || line.contains("expect(unsafe_code")
                || line.contains("warn(unsafe_code");
            assert!(
                file == root || !is_override,
                "{}:{}: only the crate root may allow unsafe_code",
                file.display(),
                number + 1
            );
        }
    }
}

#[test]
fn host_crates_forbid_unsafe_code() {
    let root = workspace_root();
    for crate_root in [
        "abi/src/lib.rs",
        "persist/src/lib.rs",
        "vm/src/lib.rs",
        "kernel/core/src/lib.rs",
        "xtask/src/lib.rs",
        "xtask/src/main.rs",
        "tests/src/lib.rs",
    ] {
        let text = std::fs::read_to_string(root.join(crate_root)).unwrap_or_default();
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{crate_root} does not forbid unsafe code"
        );
    }
}

/// The repo stands on its own: no tracked file points at documents beside
/// it (a reader of the repo alone could not follow such a reference), so
/// facts the code relies on live in the repo's own docs.
#[test]
fn nothing_refers_to_files_outside_the_repo() {
    let root = workspace_root();
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files runs in the workspace");
    assert!(output.status.success(), "git ls-files failed");
    // Spelled in two halves so that this file does not match itself.
    let outside = ["../", "shared"].concat();
    let mut offenders = Vec::new();
    for name in output.stdout.split(|&byte| byte == 0) {
        let name = String::from_utf8_lossy(name);
        if name.is_empty() || name.starts_with("third_party/") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(name.as_ref())) else {
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if line.contains(&outside) {
                offenders.push(format!("{name}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these lines refer to files outside the repo:\n{}",
        offenders.join("\n")
    );
}

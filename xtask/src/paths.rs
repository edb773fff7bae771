//! Where things live: the workspace root and everything under target/amber.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    // xtask/ sits directly under the root; CARGO_MANIFEST_DIR is fixed at
    // compile time, so this works from any current directory.
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// `target/amber`: every artefact a user looks for (kernel, apps, disks, bench).
pub fn amber_dir() -> PathBuf {
    workspace_root().join("target").join("amber")
}

/// The bootable kernel ELF.
pub fn kernel_elf() -> PathBuf {
    amber_dir().join("kernel.elf")
}

/// Built, asyncified apps: `target/amber/apps/NAME.wasm`.
pub fn apps_dir() -> PathBuf {
    amber_dir().join("apps")
}

/// The apps archive disk (`cargo xtask app archive`): every app, for `spawn`.
pub fn apps_archive() -> PathBuf {
    amber_dir().join("apps-archive.img")
}

/// Domain images `cargo xtask run` boots.
pub fn disks_dir() -> PathBuf {
    amber_dir().join("disks")
}

/// Benchmark reports.
pub fn bench_dir() -> PathBuf {
    amber_dir().join("bench")
}

/// A name no other file of this process or another one has: the process
/// ID, a per-process count and the clock.
pub fn unique_name(stem: &str, extension: &str) -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!(
        "{stem}-{}-{count}-{nanos:08x}.{extension}",
        std::process::id()
    )
}

//! Checks for the outside tools Amber needs, each naming how to install it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The nightly toolchain that builds the kernel (stable builds everything else).
///
/// The kernel needs `-Z build-std` and a custom target JSON (hard-float SSE, so
/// that wasmi's tail-call dispatch works); both are nightly-only. This date was
/// checked on our machines (../shared/FACTS.md); it ships no wasm32 std, which is
/// why it is not the workspace toolchain.
pub const KERNEL_TOOLCHAIN: &str = "nightly-2026-05-19";

/// Finds `program` on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// The QEMU binary, or an error naming the install command.
pub fn qemu() -> Result<PathBuf> {
    find_program("qemu-system-x86_64").context(
        "qemu-system-x86_64 is not installed: run `sudo apt-get update && sudo apt-get install -y qemu-system-x86`",
    )
}

/// binaryen's `wasm-opt`, or an error naming the install command.
pub fn wasm_opt() -> Result<PathBuf> {
    find_program("wasm-opt").context(
        "wasm-opt (binaryen) is not installed: run `sudo apt-get update && sudo apt-get install -y binaryen`",
    )
}

/// Makes sure the kernel's nightly toolchain with `rust-src` is installed,
/// installing it through rustup when it is missing.
pub fn ensure_kernel_toolchain() -> Result<()> {
    let has_rust_src = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            KERNEL_TOOLCHAIN,
        ])
        .stderr(Stdio::null())
        .output()
        .map(|output| {
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("rust-src")
        })
        .context("rustup is not installed: see https://rustup.rs")?;
    if has_rust_src {
        return Ok(());
    }
    eprintln!("installing the kernel toolchain {KERNEL_TOOLCHAIN} with rust-src (once)...");
    let status = Command::new("rustup")
        .args([
            "toolchain",
            "install",
            KERNEL_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy",
        ])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup toolchain install {KERNEL_TOOLCHAIN}` failed");
    }
    Ok(())
}

/// Whether KVM can be used: /dev/kvm exists and this user may open it.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

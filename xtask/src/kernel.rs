//! Building the kernel ELF (pinned nightly, custom target) and the Limine ISO.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::paths;
use crate::tools::{self, KERNEL_TOOLCHAIN};

#[derive(Debug, Args)]
pub struct BuildArgs {}

#[derive(Debug, Args)]
pub struct IsoArgs {
    /// Where to write the ISO.
    #[arg(short, long, default_value = "target/amber/amber.iso")]
    pub output: PathBuf,
}

/// `cargo xtask build`.
pub fn build_command(_args: &BuildArgs) -> Result<()> {
    let elf = build_kernel()?;
    println!("kernel: {}", elf.display());
    Ok(())
}

/// Runs cargo for the kernel with the kernel's toolchain and target, with
/// `arguments` after the common ones (`build`, `clippy`...).
pub fn kernel_cargo(subcommand: &str) -> Result<Command> {
    tools::ensure_kernel_toolchain()?;
    let root = paths::workspace_root();
    let mut command = Command::new("rustup");
    command
        .current_dir(&root)
        .args(["run", KERNEL_TOOLCHAIN, "cargo", subcommand])
        .args(["--package", "kernel", "--release"])
        .arg("--target")
        .arg(root.join("kernel").join("x86_64-amber.json"))
        .args([
            "-Z",
            "build-std=core,alloc",
            "-Z",
            "build-std-features=compiler-builtins-mem",
            "-Z",
            "json-target-spec",
        ])
        .arg("--target-dir")
        .arg(kernel_target_dir());
    // The stable toolchain running xtask exports these; they must not leak
    // into the nightly build.
    for variable in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(variable);
    }
    Ok(command)
}

/// The kernel has its own target directory: its build scripts are compiled by
/// another rustc than the host crates', and sharing would rebuild both each time.
fn kernel_target_dir() -> PathBuf {
    paths::workspace_root().join("target").join("kernel")
}

/// Builds the kernel and copies it to target/amber/kernel.elf.
pub fn build_kernel() -> Result<PathBuf> {
    let status = kernel_cargo("build")?
        .status()
        .context("running cargo for the kernel")?;
    if !status.success() {
        bail!("building the kernel failed");
    }
    let built = kernel_target_dir()
        .join("x86_64-amber")
        .join("release")
        .join("kernel");
    let elf = paths::kernel_elf();
    std::fs::create_dir_all(paths::amber_dir())?;
    std::fs::copy(&built, &elf)
        .with_context(|| format!("copying {} to {}", built.display(), elf.display()))?;
    Ok(elf)
}

/// The Limine files an ISO needs, relative to LIMINE_DIR.
const LIMINE_FILES: [&str; 4] = [
    "limine-bios.sys",
    "limine-bios-cd.bin",
    "limine-uefi-cd.bin",
    "BOOTX64.EFI",
];

/// `cargo xtask iso`: a BIOS+UEFI bootable ISO with Limine, when its binaries
/// are present (they cannot be downloaded on our machines).
pub fn iso(args: &IsoArgs) -> Result<()> {
    let Some(limine_dir) = std::env::var_os("LIMINE_DIR").map(PathBuf::from) else {
        bail!(
            "LIMINE_DIR is not set. Point it at a directory with Limine's binaries ({} and the \
             `limine` tool), e.g. a checkout of https://github.com/limine-bootloader/limine \
             branch v9.x-binary built with `make`. Without Limine, boot with \
             `cargo xtask run` (PVH through qemu -kernel).",
            LIMINE_FILES.join(", ")
        );
    };
    let missing: Vec<&str> = LIMINE_FILES
        .iter()
        .copied()
        .filter(|file| !limine_dir.join(file).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "LIMINE_DIR={} lacks {}",
            limine_dir.display(),
            missing.join(", ")
        );
    }
    let xorriso = tools::find_program("xorriso")
        .context("xorriso is not installed: run `sudo apt-get install -y xorriso`")?;
    let elf = build_kernel()?;
    let root = paths::amber_dir().join("iso-root");
    let boot = root.join("boot").join("limine");
    let efi = root.join("EFI").join("BOOT");
    std::fs::create_dir_all(&boot)?;
    std::fs::create_dir_all(&efi)?;
    std::fs::copy(&elf, root.join("boot").join("kernel.elf"))?;
    std::fs::write(
        boot.join("limine.conf"),
        "timeout: 0\n\n/Amber\n    protocol: limine\n    kernel_path: boot():/boot/kernel.elf\n",
    )?;
    for file in &LIMINE_FILES[..3] {
        std::fs::copy(limine_dir.join(file), boot.join(file))?;
    }
    std::fs::copy(limine_dir.join("BOOTX64.EFI"), efi.join("BOOTX64.EFI"))?;
    let output = paths::workspace_root().join(&args.output);
    run_checked(
        Command::new(xorriso)
            .args(["-as", "mkisofs", "-R", "-r", "-J"])
            .args(["-b", "boot/limine/limine-bios-cd.bin"])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
            .args(["-hfsplus", "-apm-block-size", "2048"])
            .args(["--efi-boot", "boot/limine/limine-uefi-cd.bin"])
            .args([
                "-efi-boot-part",
                "--efi-boot-image",
                "--protective-msdos-label",
            ])
            .arg(&root)
            .arg("-o")
            .arg(&output),
    )?;
    run_checked(
        Command::new(limine_dir.join("limine"))
            .arg("bios-install")
            .arg(&output),
    )?;
    println!("iso: {}", output.display());
    Ok(())
}

fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", command.get_program());
    }
    Ok(())
}

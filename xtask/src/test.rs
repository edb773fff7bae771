//! `cargo xtask test`: lints, host tests, no_std builds and the QEMU tests.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::tools::{self, Need};
use crate::{app, kernel, paths};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip building the kernel and the QEMU tests (host crates only).
    #[arg(long)]
    pub no_qemu: bool,
}

pub fn test(args: &TestArgs) -> Result<()> {
    // The host tests build the apps, so binaryen is needed without QEMU too.
    let needs: &[Need] = if args.no_qemu {
        &[Need::Binaryen, Need::WorkspaceToolchain]
    } else {
        &tools::EVERYTHING
    };
    tools::make_sure_of(needs)?;
    let root = paths::workspace_root();
    step("format", cargo().args(["fmt", "--all", "--check"]))?;
    step(
        "clippy (host crates)",
        cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    step(
        "format (apps)",
        app::apps_cargo()?.args(["fmt", "--all", "--check"]),
    )?;
    step(
        "clippy (apps)",
        app::apps_cargo()?.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "host tests of kv-proto, redis-core, httpd-core and guest-sdk",
        app::apps_cargo()?
            .args([
                "test",
                "--package",
                "kv-proto",
                "--package",
                "redis-core",
                "--package",
                "httpd-core",
                "--package",
                "guest-sdk",
                "--target",
            ])
            .arg(app::host_target()?),
    )?;
    step(
        "no_std build of abi, persist, vm and kernel-core",
        cargo().args([
            "build",
            "--package",
            "abi",
            "--package",
            "persist",
            "--package",
            "vm",
            "--package",
            "kernel-core",
            "--no-default-features",
            "--target",
            "x86_64-unknown-none",
        ]),
    )?;
    if !args.no_qemu {
        step(
            "clippy (kernel)",
            kernel::kernel_cargo("clippy")?.args(["--", "-D", "warnings"]),
        )?;
        println!("==> build kernel");
        kernel::build_kernel()?;
    }
    let mut host_tests = cargo();
    host_tests.current_dir(&root).arg("test");
    if args.no_qemu {
        host_tests.args(["--workspace", "--exclude", "tests", "--exclude", "kernel"]);
    }
    step("tests", &mut host_tests)?;
    println!("==> all tests passed");
    Ok(())
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(paths::workspace_root());
    command
}

fn step(name: &str, command: &mut Command) -> Result<()> {
    println!("==> {name}");
    let status = command
        .status()
        .with_context(|| format!("running {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

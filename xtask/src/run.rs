//! `cargo xtask run`: build and boot Amber with the console on this terminal.

use anyhow::{Context, Result};
use clap::Args;

use crate::kernel;
use crate::qemu::{Accel, Console, QemuConfig};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Kernel command line (e.g. `test=panic`).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Accelerator; default KVM when a probe boot under KVM works, TCG otherwise.
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let kernel = kernel::build_kernel()?;
    let config = QemuConfig {
        accel: args
            .accel
            .unwrap_or_else(|| Accel::default_for_run(&kernel)),
        kernel,
        memory_mib: args.memory,
        append: args.append.clone(),
        console: Console::Terminal,
        disks: Vec::new(),
    };
    eprintln!(
        "booting Amber ({:?}, {} MiB); `shutdown` powers off, Ctrl-A x quits QEMU",
        config.accel, config.memory_mib
    );
    let status = config.command()?.status().context("starting QEMU")?;
    if !status.success() {
        anyhow::bail!("QEMU exited with {status}");
    }
    Ok(())
}

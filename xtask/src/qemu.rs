//! QEMU command lines for Amber: machine, memory, accelerator, disks, exit device.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::ValueEnum;

use crate::tools;

/// I/O port of QEMU's isa-debug-exit device; the kernel writes its failure code
/// there (kernel/src/arch/x86_64/qemu.rs has the same number).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// QEMU's exit status after the kernel reported a failure (a fault or a panic):
/// isa-debug-exit turns the written value v into (v << 1) | 1, and the kernel
/// writes 0x31.
pub const FAILURE_EXIT_STATUS: i32 = (0x31 << 1) | 1;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation: slower per instruction, but on nested
    /// virtualisation it boots faster than KVM, and it needs nothing.
    Tcg,
}

impl Accel {
    /// The accelerator `cargo xtask run` uses without `--accel`: KVM when
    /// it works, TCG otherwise.
    ///
    /// "Works" is tested, not assumed: /dev/kvm must open and `kernel` must
    /// boot under KVM and power off (`test=boot`) within 20 s. On our
    /// nested-virtualisation machines KVM stops the kernel with "KVM internal
    /// error, emulation failure" at its first SSE instruction with a memory
    /// operand, so there the probe fails in a fraction of a second.
    pub fn default_for_run(kernel: &Path) -> Accel {
        if tools::kvm_usable() && kvm_boots(kernel) {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }
}

/// Boots `kernel` under KVM with `test=boot` and reports whether it powered
/// off cleanly in time.
fn kvm_boots(kernel: &Path) -> bool {
    let config = QemuConfig {
        kernel: kernel.to_path_buf(),
        memory_mib: 128,
        append: "test=boot".into(),
        accel: Accel::Kvm,
        console: Console::Stdio,
        disks: Vec::new(),
    };
    let Ok(mut command) = config.command() else {
        return false;
    };
    let Ok(mut child) = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    wait_or_kill(&mut child, Duration::from_secs(20)).is_some_and(|status| status.success())
}

/// Waits up to `timeout` for QEMU to exit; kills it if it has not (or if
/// waiting fails) and returns None then.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Where the guest's serial port goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`: serial on this terminal, QEMU's monitor behind Ctrl-A c.
    Terminal,
    /// Serial on stdin/stdout only (for programs that drive the console).
    Stdio,
}

/// One QEMU instance's configuration.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub kernel: PathBuf,
    pub memory_mib: u32,
    pub append: String,
    pub accel: Accel,
    pub console: Console,
    /// Raw disk images, each attached as a virtio-blk PCI device.
    pub disks: Vec<PathBuf>,
}

impl QemuConfig {
    /// The default for tests: the built kernel, 256 MiB, TCG, stdio console.
    pub fn for_tests() -> QemuConfig {
        QemuConfig {
            kernel: crate::paths::kernel_elf(),
            memory_mib: 256,
            append: String::new(),
            accel: Accel::Tcg,
            console: Console::Stdio,
            disks: Vec::new(),
        }
    }

    /// The QEMU command for this configuration.
    pub fn command(&self) -> Result<Command> {
        let mut command = Command::new(tools::qemu()?);
        command
            .args(["-machine", "q35", "-no-reboot"])
            .arg("-m")
            .arg(format!("{}M", self.memory_mib))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-device")
            .arg(format!(
                "isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"
            ));
        if !self.append.is_empty() {
            command.arg("-append").arg(&self.append);
        }
        match self.accel {
            Accel::Kvm => command.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => command.args(["-accel", "tcg"]),
        };
        match self.console {
            Console::Terminal => command.arg("-nographic"),
            Console::Stdio => {
                command.args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            }
        };
        for (index, disk) in self.disks.iter().enumerate() {
            command
                .arg("-drive")
                .arg(format!(
                    "file={},if=none,id=disk{index},format=raw",
                    disk.display()
                ))
                .arg("-device")
                .arg(format!("virtio-blk-pci,drive=disk{index}"));
        }
        Ok(command)
    }
}

//! What Amber needs from this machine, made sure of before anything builds.
//!
//! [`make_sure_of`] is the one place that checks the outside programs (QEMU,
//! binaryen; a person installs those) and installs through rustup the Rust
//! targets and components that are missing. rustup installs the targets and
//! components of rust-toolchain.toml only when it installs that toolchain
//! itself, never into one that was already there, so a machine that had
//! 1.95.0 before it cloned Amber lacks `x86_64-unknown-none` and the wasm
//! targets until xtask adds them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::paths;

/// The nightly toolchain that builds the kernel (stable builds everything else).
///
/// The kernel needs `-Z build-std` and a custom target JSON (hard-float SSE, so
/// that wasmi's tail-call dispatch works); both are nightly-only. This date was
/// checked to build the kernel; it ships no wasm32 std, which is why it is not
/// the workspace toolchain.
pub const KERNEL_TOOLCHAIN: &str = "nightly-2026-05-19";

/// The targets of the workspace toolchain (rust-toolchain.toml lists the same;
/// a test checks): the no_std build of persist and vm, and the two app kinds.
pub const WORKSPACE_TARGETS: [&str; 3] = [
    "x86_64-unknown-none",
    "wasm32-unknown-unknown",
    "wasm32-wasip1",
];

/// The components of the workspace toolchain (as in rust-toolchain.toml).
pub const WORKSPACE_COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// The components of the kernel's toolchain: `-Z build-std` compiles core and
/// alloc from rust-src, and `cargo xtask test` runs clippy on the kernel.
pub const KERNEL_COMPONENTS: [&str; 2] = ["rust-src", "clippy"];

/// Something a command needs from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `qemu-system-x86_64`, to boot the kernel.
    Qemu,
    /// binaryen's `wasm-opt`, which asyncifies the apps.
    Binaryen,
    /// The workspace toolchain with [`WORKSPACE_TARGETS`] and
    /// [`WORKSPACE_COMPONENTS`].
    WorkspaceToolchain,
    /// [`KERNEL_TOOLCHAIN`] with [`KERNEL_COMPONENTS`].
    KernelToolchain,
}

/// What `run`, `test`, `migrate` and the QEMU benchmarks need: all of it.
pub const EVERYTHING: [Need; 4] = [
    Need::Qemu,
    Need::Binaryen,
    Need::WorkspaceToolchain,
    Need::KernelToolchain,
];

/// A program from the distribution, which xtask cannot install itself.
struct Program {
    need: Need,
    binary: &'static str,
    /// The Debian/Ubuntu package that has it.
    package: &'static str,
}

const PROGRAMS: [Program; 2] = [
    Program {
        need: Need::Qemu,
        binary: "qemu-system-x86_64",
        package: "qemu-system-x86",
    },
    Program {
        need: Need::Binaryen,
        binary: "wasm-opt",
        package: "binaryen",
    },
];

/// Makes sure of every need before anything is built: first the programs
/// (all missing ones in one error with the command that installs them, so
/// nobody waits a minute of compiling to learn binaryen is missing), then
/// each toolchain with one rustup query, installing only what it lacks.
pub fn make_sure_of(needs: &[Need]) -> Result<()> {
    let missing: Vec<&Program> = PROGRAMS
        .iter()
        .filter(|program| needs.contains(&program.need) && find_program(program.binary).is_none())
        .collect();
    if !missing.is_empty() {
        let binaries: Vec<&str> = missing.iter().map(|program| program.binary).collect();
        let packages: Vec<&str> = missing.iter().map(|program| program.package).collect();
        bail!(
            "{} not installed: run `sudo apt-get update && sudo apt-get install -y {}`",
            binaries.join(" and "),
            packages.join(" ")
        );
    }
    if needs.contains(&Need::WorkspaceToolchain) {
        make_sure_of_toolchain(&Toolchain {
            name: None,
            targets: &WORKSPACE_TARGETS,
            components: &WORKSPACE_COMPONENTS,
        })?;
    }
    if needs.contains(&Need::KernelToolchain) {
        make_sure_of_toolchain(&Toolchain {
            name: Some(KERNEL_TOOLCHAIN),
            targets: &[],
            components: &KERNEL_COMPONENTS,
        })?;
    }
    Ok(())
}

/// Makes sure the kernel's nightly toolchain with its components is
/// installed (what every kernel cargo command needs).
pub fn ensure_kernel_toolchain() -> Result<()> {
    make_sure_of(&[Need::KernelToolchain])
}

/// A rustup toolchain and what must be installed in it.
struct Toolchain {
    /// `None` for the workspace toolchain: the one rustup picks in the
    /// workspace (rust-toolchain.toml, or RUSTUP_TOOLCHAIN, which rustup
    /// sets for xtask), so it is always the one cargo builds with.
    name: Option<&'static str>,
    targets: &'static [&'static str],
    components: &'static [&'static str],
}

impl Toolchain {
    fn describe(&self) -> String {
        match self.name {
            Some(name) => format!("toolchain {name}"),
            None => std::env::var("RUSTUP_TOOLCHAIN").map_or_else(
                |_| "the workspace toolchain".into(),
                |name| format!("toolchain {name}"),
            ),
        }
    }

    /// `rustup ARGUMENTS [--toolchain NAME]` in the workspace root.
    fn rustup(&self, arguments: &[&str]) -> Command {
        let mut command = Command::new("rustup");
        command.current_dir(paths::workspace_root()).args(arguments);
        if let Some(name) = self.name {
            command.args(["--toolchain", name]);
        }
        command
    }
}

/// Installs what `toolchain` lacks, after one `rustup component list
/// --installed` (local and fast: it reads the toolchain's manifest).
fn make_sure_of_toolchain(toolchain: &Toolchain) -> Result<()> {
    let listed = toolchain
        .rustup(&["component", "list", "--installed"])
        .output()
        .context("rustup is not installed: see https://rustup.rs")?;
    if !listed.status.success() {
        let Some(name) = toolchain.name else {
            bail!(
                "rustup cannot list {}'s components: {}",
                toolchain.describe(),
                String::from_utf8_lossy(&listed.stderr).trim()
            );
        };
        // Not installed at all: one command installs it with everything.
        eprintln!(
            "installing the toolchain {name} with {} (once)...",
            toolchain.components.join(", ")
        );
        let mut install = Command::new("rustup");
        install
            .args(["toolchain", "install", name, "--profile", "minimal"])
            .args(["--component", &toolchain.components.join(",")]);
        for target in toolchain.targets {
            install.args(["--target", target]);
        }
        return run_rustup(&mut install);
    }
    let installed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let (targets, components) = missing(&installed, toolchain.targets, toolchain.components);
    if !targets.is_empty() {
        eprintln!(
            "installing the target{} {} for {} (once)...",
            if targets.len() == 1 { "" } else { "s" },
            targets.join(", "),
            toolchain.describe()
        );
        run_rustup(toolchain.rustup(&["target", "add"]).args(&targets))?;
    }
    if !components.is_empty() {
        eprintln!(
            "installing the component{} {} for {} (once)...",
            if components.len() == 1 { "" } else { "s" },
            components.join(", "),
            toolchain.describe()
        );
        run_rustup(toolchain.rustup(&["component", "add"]).args(&components))?;
    }
    Ok(())
}

/// The targets and components missing from `installed`, the output of
/// `rustup component list --installed`: one line per component, a target's
/// standard library as `rust-std-TARGET`, host tools as `NAME-HOST`
/// (`clippy-x86_64-unknown-linux-gnu`) and `rust-src` bare.
fn missing<'a>(
    installed: &str,
    targets: &[&'a str],
    components: &[&'a str],
) -> (Vec<&'a str>, Vec<&'a str>) {
    let lines: Vec<&str> = installed.lines().map(str::trim).collect();
    let has_target = |target: &str| {
        lines
            .iter()
            .any(|line| line.strip_prefix("rust-std-") == Some(target))
    };
    let has_component = |component: &str| {
        lines.iter().any(|line| {
            *line == component
                || line
                    .strip_prefix(component)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
    };
    (
        targets
            .iter()
            .copied()
            .filter(|target| !has_target(target))
            .collect(),
        components
            .iter()
            .copied()
            .filter(|component| !has_component(component))
            .collect(),
    )
}

fn run_rustup(command: &mut Command) -> Result<()> {
    let status = command.status().context("running rustup")?;
    if !status.success() {
        let arguments: Vec<String> = command
            .get_args()
            .map(|argument| argument.to_string_lossy().into_owned())
            .collect();
        bail!("`rustup {}` failed ({status})", arguments.join(" "));
    }
    Ok(())
}

/// Finds `program` on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// The program of `need`, or an error naming the command that installs it.
fn program(need: Need) -> Result<PathBuf> {
    make_sure_of(&[need])?;
    PROGRAMS
        .iter()
        .find(|program| program.need == need)
        .and_then(|program| find_program(program.binary))
        .context("a program that was just found went missing")
}

/// The QEMU binary, or an error naming the install command.
pub fn qemu() -> Result<PathBuf> {
    program(Need::Qemu)
}

/// binaryen's `wasm-opt`, or an error naming the install command.
pub fn wasm_opt() -> Result<PathBuf> {
    program(Need::Binaryen)
}

/// Whether KVM can be used: /dev/kvm exists and this user may open it.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The quoted strings of the `key = [...]` line of a rust-toolchain.toml.
    fn toolchain_file_list(text: &str, key: &str) -> Vec<String> {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix(key)?.trim().strip_prefix('='))
            .flat_map(|list| {
                list.split('"')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The workspace's rust-toolchain.toml.
    fn toolchain_file() -> Result<String> {
        let path: &Path = &paths::workspace_root().join("rust-toolchain.toml");
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }

    #[test]
    fn the_lists_are_those_of_rust_toolchain_toml() -> Result<()> {
        let text = toolchain_file()?;
        let mut targets = toolchain_file_list(&text, "targets");
        let mut components = toolchain_file_list(&text, "components");
        targets.sort();
        components.sort();
        let mut expected_targets = WORKSPACE_TARGETS.map(String::from).to_vec();
        let mut expected_components = WORKSPACE_COMPONENTS.map(String::from).to_vec();
        expected_targets.sort();
        expected_components.sort();
        assert_eq!(targets, expected_targets);
        assert_eq!(components, expected_components);
        Ok(())
    }

    #[test]
    fn only_what_is_not_listed_is_missing() {
        let installed = "cargo-x86_64-unknown-linux-gnu\n\
                         clippy-x86_64-unknown-linux-gnu\n\
                         rust-src\n\
                         rust-std-wasm32-wasip1\n\
                         rust-std-x86_64-unknown-linux-gnu\n\
                         rustc-x86_64-unknown-linux-gnu\n";
        let (targets, components) = missing(
            installed,
            &WORKSPACE_TARGETS,
            &["rustfmt", "clippy", "rust-src"],
        );
        assert_eq!(targets, ["x86_64-unknown-none", "wasm32-unknown-unknown"]);
        // `rustc-...` does not count as `rust-src`, nor `rust-std-...`.
        assert_eq!(components, ["rustfmt"]);
        let (targets, components) = missing("rustc-x86_64-unknown-linux-gnu\n", &[], &["rust"]);
        assert!(targets.is_empty());
        assert_eq!(components, ["rust"]);
    }
}

//! `cargo xtask app`: build wasm apps into target/amber/apps.
//!
//! One app goes through four steps (guest-sdk/README.md, "Module shape"):
//! 1. cargo builds it in the apps workspace (wasm32-unknown-unknown, or
//!    wasm32-wasip1 for WASI apps), with a memory the linker defines;
//! 2. [`wasm_rewrite::import_memory`] turns that memory into the import
//!    `("env", "memory")` (not `--import-memory`, whose start function would
//!    zero `.bss` again at every restore);
//! 3. `wasm-opt -O --asyncify` instruments the calls that can reach one of
//!    `abi::blocking_imports` (see [`asyncify_imports`]), so the vm can
//!    unwind and rewind the stack there;
//! 4. [`wasm_rewrite::export_mutable_globals`] exports every mutable global as
//!    `amber.global.N`. It must run after wasm-opt, which renames globals and
//!    adds `__asyncify_state` and `__asyncify_data`.
//!
//! An app's network comes from its Cargo.toml ([`network_declaration`]):
//!
//! ```toml
//! [package.metadata.amber]
//! listen = [6379]          # TCP ports, in socket order (fd 3, 4, ...)
//! durable-replies = true   # replies wait for the commit that made them
//! ```
//!
//! Absent, the app declares no ports and immediate replies. The apps
//! archive carries the declaration into every domain `spawn` makes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use persist::NetworkDeclaration;

use crate::{paths, tools, wasm_rewrite};

/// The imports inside which the vm may suspend a domain, as `wasm-opt
/// --asyncify` takes them (`amber.sleep,amber.yield,...`): the blocking
/// imports of the abi crate, the one list the vm also follows.
pub fn asyncify_imports() -> String {
    abi::blocking_imports()
        .map(|import| import.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Which kind of wasm program an app is, and so which target it builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// Uses guest-sdk and the `amber` imports (`wasm32-unknown-unknown`).
    Amber,
    /// Plain std Rust through WASI (`wasm32-wasip1`).
    Wasi,
}

impl AppKind {
    /// The rustc target triple apps of this kind build for.
    pub fn target(self) -> &'static str {
        match self {
            Self::Amber => "wasm32-unknown-unknown",
            Self::Wasi => "wasm32-wasip1",
        }
    }
}

/// One app of the apps workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    /// The crate name, which is also the name of the built module.
    pub name: &'static str,
    pub kind: AppKind,
}

/// Every app `cargo xtask app build` knows, in build order.
pub const APPS: &[App] = &[
    App {
        name: "hello",
        kind: AppKind::Wasi,
    },
    App {
        name: "counter",
        kind: AppKind::Amber,
    },
    App {
        name: "kv",
        kind: AppKind::Amber,
    },
    App {
        name: "kvclient",
        kind: AppKind::Amber,
    },
    App {
        name: "life",
        kind: AppKind::Amber,
    },
    App {
        name: "bigmem",
        kind: AppKind::Wasi,
    },
    App {
        name: "numbers",
        kind: AppKind::Amber,
    },
    App {
        name: "tally",
        kind: AppKind::Amber,
    },
    App {
        name: "ping",
        kind: AppKind::Amber,
    },
    App {
        name: "pong",
        kind: AppKind::Amber,
    },
    App {
        name: "redis",
        kind: AppKind::Amber,
    },
    App {
        name: "httpd",
        kind: AppKind::Amber,
    },
    App {
        name: "webstd",
        kind: AppKind::Wasi,
    },
    App {
        name: "tcpping",
        kind: AppKind::Amber,
    },
];

/// App subcommands.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Build apps into target/amber/apps/NAME.wasm (all of them without NAME).
    Build(BuildArgs),
    /// List the apps and what kind each is.
    List,
    /// Build apps (all of them without NAME) and pack them into the apps
    /// archive disk target/amber/apps-archive.img, for the console's `spawn`.
    Archive(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Apps to build; all when none is given.
    pub names: Vec<String>,
}

pub fn run(command: AppCommand) -> Result<()> {
    match command {
        AppCommand::Build(args) => {
            let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
            for built in build_apps_with_sizes(&names)? {
                println!(
                    "{:<9} {:>7} bytes linked -> {:>7} bytes after wasm-opt -O --asyncify ({:+.0}%)  {}{}",
                    built.name,
                    built.linked_len_bytes,
                    built.final_len_bytes,
                    growth_percent(built.linked_len_bytes, built.final_len_bytes),
                    built.path.display(),
                    network_text(&built.network),
                );
            }
            Ok(())
        }
        AppCommand::Archive(args) => {
            let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
            let path = crate::archive::build(&names)?;
            for entry in crate::archive::entries(&path)? {
                println!(
                    "{:<9} {:>7} bytes, memory {} to {} pages of 64 KiB{}",
                    entry.name,
                    entry.len_bytes,
                    entry.memory_pages,
                    entry.memory_max_pages,
                    network_text(&entry.network)
                );
            }
            println!("apps archive: {}", path.display());
            Ok(())
        }
        AppCommand::List => {
            for app in APPS {
                println!("{:<9} {}", app.name, app.kind.target());
            }
            Ok(())
        }
    }
}

/// Builds the apps called `names` (all apps when empty) and returns the paths
/// of their finished modules, `target/amber/apps/NAME.wasm`, in that order.
pub fn build_apps(names: &[&str]) -> Result<Vec<PathBuf>> {
    Ok(build_apps_with_sizes(names)?
        .into_iter()
        .map(|built| built.path)
        .collect())
}

/// A finished app module and what the build did to its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltApp {
    pub name: &'static str,
    pub path: PathBuf,
    /// Size of the module as the linker wrote it.
    pub linked_len_bytes: usize,
    /// Size after asyncify and the rewrites.
    pub final_len_bytes: usize,
    /// What its Cargo.toml declares of its network.
    pub network: NetworkDeclaration,
}

/// `, listens on 6379, 80, durable replies`, or nothing for an app without
/// a network.
pub fn network_text(network: &NetworkDeclaration) -> String {
    let mut text = String::new();
    if !network.listen.is_empty() {
        let ports: Vec<String> = network.listen.iter().map(u16::to_string).collect();
        text.push_str(&format!(", listens on {}", ports.join(", ")));
    }
    if network.durable_replies {
        text.push_str(", durable replies");
    }
    text
}

/// The keys `[package.metadata.amber]` may hold.
const AMBER_METADATA_KEYS: &[&str] = &["listen", "durable-replies"];

/// What the package metadata of `app` (the `metadata` of its package in
/// `cargo metadata`, `null` when it has none) declares of its network:
/// `[package.metadata.amber]`'s `listen` (TCP ports, at most
/// [`abi::MAX_LISTEN_PORTS`], each 1 to 65535 and once) and
/// `durable-replies` (a boolean). An unknown key is refused rather than
/// ignored, so a misspelt `durable_replies` never goes unnoticed.
pub fn network_declaration(app: &str, metadata: &serde_json::Value) -> Result<NetworkDeclaration> {
    let Some(amber) = metadata.get("amber") else {
        return Ok(NetworkDeclaration::default());
    };
    let table = amber
        .as_object()
        .with_context(|| format!("[package.metadata.amber] of {app} is not a table"))?;
    if let Some(key) = table
        .keys()
        .find(|key| !AMBER_METADATA_KEYS.contains(&key.as_str()))
    {
        bail!(
            "[package.metadata.amber] of {app} has an unknown key `{key}` (known: {})",
            AMBER_METADATA_KEYS.join(", ")
        );
    }
    let listen = match table.get("listen") {
        None => Vec::new(),
        Some(listen) => {
            let ports = listen
                .as_array()
                .with_context(|| format!("`listen` of {app} is not a list of ports"))?;
            if ports.len() > abi::MAX_LISTEN_PORTS {
                bail!(
                    "{app} declares {} listen ports (at most {} allowed)",
                    ports.len(),
                    abi::MAX_LISTEN_PORTS
                );
            }
            ports
                .iter()
                .map(|port| {
                    port.as_u64()
                        .and_then(|port| u16::try_from(port).ok())
                        .filter(|port| *port != 0)
                        .with_context(|| {
                            format!("`listen` of {app} holds {port}, not a port (1 to 65535)")
                        })
                })
                .collect::<Result<Vec<u16>>>()?
        }
    };
    persist::check_listen(&listen).with_context(|| format!("`listen` of {app}"))?;
    let durable_replies = match table.get("durable-replies") {
        None => false,
        Some(value) => value
            .as_bool()
            .with_context(|| format!("`durable-replies` of {app} is not true or false"))?,
    };
    Ok(NetworkDeclaration {
        listen,
        durable_replies,
    })
}

/// Every package of the apps workspace and its network declaration, read
/// from `cargo metadata` (no dependencies resolved).
pub fn declared_networks() -> Result<BTreeMap<String, NetworkDeclaration>> {
    let output = apps_cargo()?
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata in the apps workspace")?;
    if !output.status.success() {
        bail!(
            "cargo metadata in the apps workspace failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let workspace: serde_json::Value = serde_json::from_slice(&output.stdout)
        .context("reading the apps workspace's cargo metadata")?;
    let packages = workspace["packages"]
        .as_array()
        .context("the apps workspace's cargo metadata lists no packages")?;
    packages
        .iter()
        .map(|package| {
            let name = package["name"]
                .as_str()
                .context("a package without a name in cargo metadata")?;
            Ok((
                name.to_owned(),
                network_declaration(name, &package["metadata"])?,
            ))
        })
        .collect()
}

/// [`build_apps`], also reporting the module sizes.
pub fn build_apps_with_sizes(names: &[&str]) -> Result<Vec<BuiltApp>> {
    let apps = select_apps(names)?;
    // Read first: a bad declaration is refused before anything builds.
    let networks = declared_networks()?;
    let wasm_opt = tools::wasm_opt()?;
    for kind in [AppKind::Wasi, AppKind::Amber] {
        let crates: Vec<&str> = apps
            .iter()
            .filter(|app| app.kind == kind)
            .map(|app| app.name)
            .collect();
        if !crates.is_empty() {
            cargo_build(kind, &crates)?;
        }
    }
    let output_dir = paths::apps_dir();
    std::fs::create_dir_all(&output_dir)
        .with_context(|| format!("creating {}", output_dir.display()))?;
    apps.iter()
        .map(|app| {
            let mut built = finish_app(app, &wasm_opt, &output_dir)?;
            built.network = networks.get(app.name).cloned().unwrap_or_default();
            Ok(built)
        })
        .collect()
}

/// The apps workspace (`apps/`).
pub fn apps_workspace() -> PathBuf {
    paths::workspace_root().join("apps")
}

fn select_apps(names: &[&str]) -> Result<Vec<App>> {
    if names.is_empty() {
        return Ok(APPS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            APPS.iter()
                .find(|app| app.name == *name)
                .copied()
                .with_context(|| {
                    let known: Vec<&str> = APPS.iter().map(|app| app.name).collect();
                    format!("no app called `{name}` (apps: {})", known.join(", "))
                })
        })
        .collect()
}

/// Where the apps workspace puts its build output.
fn apps_target_dir() -> PathBuf {
    apps_workspace().join("target")
}

/// A cargo command in the apps workspace, with both wasm targets installed.
///
/// `cargo xtask test` uses it for the apps' fmt, clippy and host tests.
pub fn apps_cargo() -> Result<Command> {
    for kind in [AppKind::Amber, AppKind::Wasi] {
        ensure_rust_target(kind.target())?;
    }
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(apps_workspace());
    // The apps' link flags live in apps/.cargo/config.toml; any RUSTFLAGS of the
    // caller would replace them. A CARGO_TARGET_DIR meant for the root
    // workspace does not belong here: the apps build in apps/target.
    for variable in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(variable);
    }
    Ok(command)
}

/// The target triple of this machine (`rustc -vV`), for the apps' host tests.
pub fn host_target() -> Result<String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host target")
}

fn cargo_build(kind: AppKind, crates: &[&str]) -> Result<()> {
    let mut command = apps_cargo()?;
    command
        .args(["build", "--release", "--target", kind.target()])
        .arg("--target-dir")
        .arg(apps_target_dir());
    for name in crates {
        command.args(["--package", name]);
    }
    let status = command
        .status()
        .context("running cargo in the apps workspace")?;
    if !status.success() {
        bail!(
            "building {} for {} failed ({status})",
            crates.join(", "),
            kind.target()
        );
    }
    Ok(())
}

/// Installs the rustc target with rustup when it is missing.
///
/// rust-toolchain.toml lists the wasm targets, but rustup adds them only when
/// it installs the toolchain itself, not to a toolchain that was already there.
fn ensure_rust_target(target: &str) -> Result<()> {
    let Ok(output) = Command::new("rustup")
        .current_dir(apps_workspace())
        .args(["target", "list", "--installed"])
        .output()
    else {
        // No rustup: cargo will say clearly if the target is missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.trim() == target)
    {
        return Ok(());
    }
    eprintln!("installing the rust target {target} (once)...");
    let status = Command::new("rustup")
        .current_dir(apps_workspace())
        .args(["target", "add", target])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup target add {target}` failed");
    }
    Ok(())
}

/// Steps 2 to 4 for one linked app; writes `output_dir/NAME.wasm`.
fn finish_app(app: &App, wasm_opt: &Path, output_dir: &Path) -> Result<BuiltApp> {
    let release_dir = apps_target_dir().join(app.kind.target()).join("release");
    let linked_path = release_dir.join(format!("{}.wasm", app.name));
    let linked = std::fs::read(&linked_path)
        .with_context(|| format!("reading the linked app {}", linked_path.display()))?;

    let with_imported_memory = wasm_rewrite::import_memory(&linked)
        .with_context(|| format!("importing the memory of {}", app.name))?;
    let asyncified = asyncify(app.name, &with_imported_memory, wasm_opt, &release_dir)?;
    let finished = wasm_rewrite::export_mutable_globals(&asyncified)
        .with_context(|| format!("exporting the mutable globals of {}", app.name))?;
    if has_start_section(&finished)? {
        bail!(
            "{} has a start section, which would run again at every restore",
            app.name
        );
    }

    // Write and rename, so that a concurrent build or a running domain never
    // reads a half-written module.
    let path = output_dir.join(format!("{}.wasm", app.name));
    let partial_path = output_dir.join(paths::unique_name(app.name, "wasm.partial"));
    std::fs::write(&partial_path, &finished)
        .with_context(|| format!("writing {}", partial_path.display()))?;
    std::fs::rename(&partial_path, &path)
        .with_context(|| format!("renaming {} to {}", partial_path.display(), path.display()))?;
    Ok(BuiltApp {
        name: app.name,
        path,
        linked_len_bytes: linked.len(),
        final_len_bytes: finished.len(),
        network: NetworkDeclaration::default(),
    })
}

/// Runs `wasm-opt -O --asyncify` over `module`, through files in `work_dir`.
///
/// The files have names of their own ([`paths::unique_name`]), so two
/// builds at once, in two processes or two threads of one, do not collide,
/// and are removed afterwards.
fn asyncify(name: &str, module: &[u8], wasm_opt: &Path, work_dir: &Path) -> Result<Vec<u8>> {
    let input = work_dir.join(paths::unique_name(name, "imported-memory.wasm"));
    let output = work_dir.join(paths::unique_name(name, "asyncified.wasm"));
    std::fs::write(&input, module).with_context(|| format!("writing {}", input.display()))?;
    let status = Command::new(wasm_opt)
        .arg(&input)
        .args(["-O", "--asyncify"])
        .arg(format!(
            "--pass-arg=asyncify-imports@{}",
            asyncify_imports()
        ))
        .arg("-o")
        .arg(&output)
        .status()
        .with_context(|| format!("running {}", wasm_opt.display()))?;
    if !status.success() {
        bail!("wasm-opt --asyncify failed on {name} ({status})");
    }
    let asyncified =
        std::fs::read(&output).with_context(|| format!("reading {}", output.display()))?;
    for work_file in [&input, &output] {
        // Leftovers are harmless; failing to remove one is not worth an error.
        let _ = std::fs::remove_file(work_file);
    }
    Ok(asyncified)
}

/// Whether `module` has a start section.
fn has_start_section(module: &[u8]) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::StartSection { .. } = payload.context("parsing a built app")? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How much larger `after` is than `before`, in percent.
fn growth_percent(before: usize, after: usize) -> f64 {
    if before == 0 {
        return 0.0;
    }
    (after as f64 / before as f64 - 1.0) * 100.0
}

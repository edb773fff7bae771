//! The apps archive disk: every built app in one image for `spawn APP`.
//!
//! The format is `persist::archive`'s; each module goes through
//! [`image::prepare_module`], as for `image new`, so a domain the kernel
//! spawns from the archive gets the module and memory limits an image made
//! by `cargo xtask image new` would have, and the network its Cargo.toml
//! declares ([`app::network_declaration`]), as `image new --listen` would.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use persist::archive::{self, Archive, Entry, NewEntry};
use persist::{FileDevice, NetworkDeclaration};

use crate::{app, image, paths};

/// Builds the apps called `names` (every app when empty) and packs them into
/// `target/amber/apps-archive.img`; returns its path.
pub fn build(names: &[&str]) -> Result<PathBuf> {
    let built = app::build_apps_with_sizes(names)?;
    let apps: Vec<AppToArchive<'_>> = built
        .iter()
        .map(|app| AppToArchive {
            name: app.name,
            path: &app.path,
            network: app.network.clone(),
        })
        .collect();
    let output = paths::apps_archive();
    write(&apps, &output)?;
    Ok(output)
}

/// One built app for [`write()`].
#[derive(Debug, Clone)]
pub struct AppToArchive<'a> {
    /// The name `spawn` takes.
    pub name: &'a str,
    /// The built module.
    pub path: &'a Path,
    /// Its listen ports and durable replies.
    pub network: NetworkDeclaration,
}

/// Packs the modules `apps` into an archive at `output`, written beside it
/// and renamed into place so that a running QEMU never sees half of one.
pub fn write(apps: &[AppToArchive<'_>], output: &Path) -> Result<()> {
    let prepared = apps
        .iter()
        .map(|app| {
            image::prepare_module(app.path, None).with_context(|| format!("archiving {}", app.name))
        })
        .collect::<Result<Vec<_>>>()?;
    let entries: Vec<NewEntry<'_>> = apps
        .iter()
        .zip(&prepared)
        .map(|(app, module)| NewEntry {
            name: app.name,
            module: &module.module,
            memory_pages: module.memory_pages,
            memory_max_pages: module.memory_max_pages,
            listen: &app.network.listen,
            durable_replies: app.network.durable_replies,
        })
        .collect();
    let bytes = archive::encode(&entries).context("encoding the apps archive")?;
    if let Some(parent) = output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let partial = output.with_file_name(paths::unique_name(
        &output
            .file_name()
            .map_or_else(|| "archive".into(), |name| name.to_string_lossy()),
        "partial",
    ));
    std::fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, output)
        .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))
}

/// The entries of the archive at `path`, checked as the kernel checks them.
pub fn entries(path: &Path) -> Result<Vec<Entry>> {
    let device = FileDevice::open(path).with_context(|| format!("opening {}", path.display()))?;
    let archive = Archive::open(device)
        .with_context(|| format!("{} is not a usable apps archive", path.display()))?;
    Ok(archive.entries().to_vec())
}

//! `spawn APP [NAME]`: a new domain from the apps archive, on a spare disk.
//!
//! The archive (`persist::archive`, packed by `cargo xtask app archive`)
//! holds each app's finished module and its memory limits, as `cargo xtask
//! image new` would put them in an image. Spawning formats the first spare
//! disk with `persist::Image::create`, the call `image new` makes, and runs
//! the domain; from then on the disk is a domain image like any other, so
//! the domain resumes from it after a reboot.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use persist::archive::{Archive, Entry as ArchiveEntry};
use persist::{BLOCK_SIZE, BlockDevice, Image, NewDomain};
use vm::Platform;

use super::{DomainError, Domains, check_heap_room};
use crate::drivers::virtio_blk::VirtioDisk;

const MIB: u64 = 1024 * 1024;

/// What `spawn` made.
#[derive(Debug, Clone)]
pub struct Spawned {
    pub name: String,
    pub app: String,
    pub disk_index: usize,
    /// Set when the disk is smaller than a commit of all the domain's
    /// memory may need: it pauses if the disk fills.
    pub small_disk: Option<SmallDisk>,
}

/// What `spawn` found in its checks.
struct SpawnPlan {
    entry: ArchiveEntry,
    disk_index: usize,
    disk_blocks: u64,
}

/// A spare smaller than the default image size for an app.
#[derive(Debug, Clone, Copy)]
pub struct SmallDisk {
    pub disk_mib: u64,
    pub wanted_mib: u64,
}

impl Domains {
    /// Keeps the apps archive found on disk `disk_index` for `spawn`, or
    /// refuses it with one line when it is damaged or a second one.
    pub(super) fn keep_archive(&mut self, disk_index: usize, disk: VirtioDisk) {
        if let Some(kept) = &self.archive {
            let reason = format!(
                "a second apps archive (disk {} is the one in use)",
                kept.device().info().index
            );
            return self.refuse(disk_index, "", reason);
        }
        match Archive::open(disk) {
            Ok(archive) => {
                let names: Vec<&str> = archive
                    .entries()
                    .iter()
                    .map(|entry| entry.name.as_str())
                    .collect();
                log::info!(
                    "disk {disk_index}: apps archive of {} apps for spawn: {}",
                    names.len(),
                    names.join(", ")
                );
                self.archive = Some(archive);
            }
            Err(error) => self.refuse(disk_index, "", format!("apps archive: {error}")),
        }
    }

    /// The apps `spawn` can start, in archive order (none without an archive).
    pub fn app_names(&self) -> Vec<String> {
        self.archive.as_ref().map_or_else(Vec::new, |archive| {
            archive
                .entries()
                .iter()
                .map(|entry| entry.name.clone())
                .collect()
        })
    }

    /// Every check `spawn` makes before it takes the spare: the app is in
    /// the archive and fits a domain and the heap, the name is free, and
    /// the first spare can hold an image.
    fn check_spawn(&self, app: &str, name: &str) -> Result<SpawnPlan, DomainError> {
        let Some(archive) = &self.archive else {
            return Err(DomainError::NoArchive);
        };
        let Some(entry) = archive.find(app).cloned() else {
            return Err(DomainError::NoSuchApp {
                app: app.into(),
                apps: self.app_names().join(", "),
            });
        };
        persist::check_name(name).map_err(DomainError::InvalidName)?;
        if self.table.find(name).is_some() {
            return Err(DomainError::NameTaken {
                name: name.into(),
                app: app.into(),
            });
        }
        if entry.len_bytes > vm::MAX_MODULE_BYTES as u64 {
            return Err(DomainError::ModuleTooLarge {
                app: app.into(),
                len_bytes: entry.len_bytes,
            });
        }
        check_heap_room(entry.len_bytes).map_err(|reason| DomainError::AppTooLarge {
            app: app.into(),
            reason: Box::new(reason),
        })?;
        let Some(spare) = self.spares.first() else {
            return Err(DomainError::NoSpare);
        };
        let disk_index = spare.info().index;
        let disk_blocks = spare.block_count();
        if !(persist::MIN_IMAGE_BLOCKS..=persist::MAX_IMAGE_BLOCKS).contains(&disk_blocks) {
            return Err(DomainError::SpareSize {
                disk_index,
                blocks: disk_blocks,
                min_blocks: persist::MIN_IMAGE_BLOCKS,
                max_blocks: persist::MAX_IMAGE_BLOCKS,
            });
        }
        Ok(SpawnPlan {
            entry,
            disk_index,
            disk_blocks,
        })
    }

    /// `spawn APP [NAME]`: formats the first spare disk as a new image of
    /// app `app` from the archive, named `name` (default: the app's name),
    /// and runs it. Every check that can fail comes before the spare is
    /// taken, so a refused spawn leaves the spare a spare.
    pub fn spawn(&mut self, app: &str, name: Option<&str>) -> Result<Spawned, DomainError> {
        let name = name.unwrap_or(app);
        let SpawnPlan {
            entry,
            disk_index,
            disk_blocks,
        } = self.check_spawn(app, name)?;
        let module = match self
            .archive
            .as_mut()
            .and_then(|archive| archive.read_module(app))
        {
            Some(Ok(module)) => module,
            Some(Err(error)) => return Err(DomainError::Archive(error)),
            None => return Err(DomainError::NoAppModule { app: app.into() }),
        };

        let disk = self.spares.remove(0);
        let mut id = [0u8; 16];
        self.platform.fill_random(&mut id);
        let image = Image::create(
            disk,
            NewDomain {
                id: persist::DomainId::from_le_bytes(id),
                name,
                module: &module,
                memory_pages: entry.memory_pages,
                memory_max_pages: entry.memory_max_pages,
                args: Vec::new(),
                env: Vec::new(),
                // The ports and durable replies the app's Cargo.toml declares.
                network: entry.network.clone(),
            },
        )
        .map_err(|error| DomainError::Format {
            disk_index,
            name: name.into(),
            error,
        })?;
        drop(module);
        self.adopt(image, None)
            .map_err(|reason| DomainError::CannotRun {
                name: name.into(),
                disk_index,
                reason: Box::new(reason),
            })?;
        let wanted_blocks = persist::default_block_count(entry.memory_max_pages, entry.len_bytes);
        Ok(Spawned {
            name: name.into(),
            app: app.into(),
            disk_index,
            small_disk: (disk_blocks < wanted_blocks).then(|| SmallDisk {
                disk_mib: disk_blocks * BLOCK_SIZE as u64 / MIB,
                wanted_mib: wanted_blocks * BLOCK_SIZE as u64 / MIB,
            }),
        })
    }
}

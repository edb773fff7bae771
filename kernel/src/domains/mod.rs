//! Domains in the kernel: one per disk, run round robin, committed periodically.
//!
//! Every disk holding a domain image becomes a domain; blank disks are spares
//! (for spawn and migration); the apps archive disk is kept for `spawn`
//! (`spawn.rs`); a disk that is none of these is refused with a console line
//! (and a `ps` row saying why) while the others run. Domains run in fuel
//! slices through `vm::Scheduler` and are checkpointed every `checkpoint-ms`
//! (boot argument, default 1000), on `checkpoint`, on `stop` and on
//! `shutdown`. A domain whose commit finds its disk full is paused: out of
//! the rotation, its last commit intact, until `start NAME` retries the
//! commit. A domain whose disk went out of service (a request timed out, a
//! write or a flush failed: `virtio_blk::Failure`) is paused for good, with
//! one line naming the domain, the disk and the failure; a reboot on a
//! healthy disk resumes it from its last commit.
//!
//! The table (`table.rs`) holds one entry per domain with its typed state;
//! the scheduler keeps each running domain with its table key. Operations
//! return typed results and `DomainError`s; the console words them.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use persist::archive::Archive;
use persist::{DomainId, Image};
use vm::wasmi::Engine;
use vm::{CompiledModule, Domain, PersistStorage, Platform, Scheduler};

use crate::drivers::virtio_blk::VirtioDisk;
use crate::memory::heap;
use crate::memory::window_backing::WindowBacking;
use platform::KernelPlatform;

mod boot;
mod checkpoint;
mod error;
mod fork;
mod images;
mod lifecycle;
mod logs;
pub mod platform;
mod rollback;
mod snapshots;
mod spawn;
mod table;

pub use checkpoint::{CheckpointReport, CommitTiming};
pub use error::DomainError;
pub use fork::Forked;
pub use lifecycle::Started;
pub use rollback::{RollbackError, RolledBack};
pub use snapshots::{RolledBackTo, SnapshotTaken};
pub use spawn::Spawned;
pub use table::{DomainKey, State};

/// Default time between periodic checkpoints.
pub const DEFAULT_CHECKPOINT_MS: u64 = 1000;

/// How long `shutdown` lets domains in the middle of a computation run on to
/// reach a safe point before it powers off without their latest state.
const SHUTDOWN_GRACE_NS: u64 = 2_000_000_000;

/// Kernel heap a module takes while it is read, compiled and instantiated,
/// as a multiple of its size: the read buffer doubles as it grows, and wasmi
/// keeps its own copy of data and code. A rough bound, kept generous.
const MODULE_HEAP_FACTOR: u64 = 4;

/// A domain as the kernel holds it: its storage is its disk's image, which
/// the kernel reaches typed (migration reads and marks it).
pub type KernelDomain = Domain<PersistStorage<VirtioDisk>>;

/// Refuses a module the kernel heap has no room for: running out of heap
/// stops the kernel, and every domain with it.
fn check_heap_room(module_bytes: u64) -> Result<(), DomainError> {
    let stats = heap::stats();
    let free_bytes = stats.size_bytes.saturating_sub(stats.allocated_bytes);
    let needed_bytes = module_bytes.saturating_mul(MODULE_HEAP_FACTOR);
    if needed_bytes > free_bytes {
        return Err(DomainError::HeapTooSmall {
            module_bytes,
            needed_kib: needed_bytes / 1024,
            free_kib: free_bytes / 1024,
        });
    }
    Ok(())
}

/// Every domain the kernel knows, the scheduler that runs them, and the
/// spare disks.
pub struct Domains {
    engine: Engine,
    platform: Arc<KernelPlatform>,
    /// The running (and ended) domains, each with its table key.
    scheduler: Scheduler<DomainKey, PersistStorage<VirtioDisk>>,
    table: table::Table,
    spares: Vec<VirtioDisk>,
    /// Disks whose newest commit is damaged over an intact one, by disk
    /// index, kept for the operator's `rollback` (`rollback.rs`).
    damaged: Vec<(usize, VirtioDisk)>,
    /// The apps archive `spawn` takes modules from, if a disk holds one.
    archive: Option<Archive<VirtioDisk>>,
    checkpoint_interval_ns: u64,
    next_checkpoint_ns: u64,
}

impl core::fmt::Debug for Domains {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Domains")
            .field("scheduled", &self.scheduler.len())
            .field("table", &self.table.iter().count())
            .field("spares", &self.spares.len())
            .finish()
    }
}

/// One `ps` row: what the console prints for a domain or refused disk.
#[derive(Debug, Clone)]
pub struct Row {
    /// Empty for a refused disk.
    pub name: alloc::string::String,
    /// The top 32 bits of the domain's ID (none for a refused disk).
    pub id_prefix: Option<u32>,
    pub disk_index: usize,
    pub state: State,
    /// Figures of an opened domain (none for parked copies, refused disks).
    pub usage: Option<Usage>,
}

/// What a disk holds, for `disks`.
#[derive(Debug, Clone)]
pub enum DiskUse {
    /// A table entry's: a domain (its name and state), a parked copy, or a
    /// refused disk (the domain's name when the image gives one, and why).
    Entry {
        name: alloc::string::String,
        state: State,
    },
    /// Blank, kept for `spawn` and incoming migrations.
    Spare,
    /// The apps archive `spawn` takes modules from.
    AppsArchive,
    /// Nothing the kernel keeps (a spare whose formatting failed, or a
    /// domain that moved to another disk's entry).
    Unused,
}

/// What an incoming domain's name or ID is taken by ([`Domains::clash`]).
#[derive(Debug, Clone)]
pub enum Taken {
    /// A domain of that name, in this state.
    Name { state: State },
    /// A domain of that ID, under this name, in this state.
    Id {
        name: alloc::string::String,
        state: State,
    },
}

/// A domain's figures in `ps`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub resident_pages: u64,
    pub stored_pages: Option<u64>,
    pub commits: u64,
    pub fuel_used: u64,
}

/// Totals for `stats`.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub running: usize,
    /// In the rotation but not running: exited, trapped, killed, or a
    /// tombstone opened at boot.
    pub ended: usize,
    pub stopped: usize,
    pub paused: usize,
    pub spares: usize,
    pub fuel_used: u64,
    pub checkpoint_interval_ms: u64,
}

impl Domains {
    fn open_image(
        &self,
        image: Image<VirtioDisk>,
        compiled: Option<CompiledModule>,
    ) -> Result<KernelDomain, DomainError> {
        let pager_disk = image.device().pager_disk();
        if compiled.is_none() {
            check_heap_room(image.stats().module_len_bytes)?;
        }
        let platform: Arc<dyn Platform> = self.platform.clone();
        Domain::open_compiled(
            &self.engine,
            platform,
            PersistStorage::new(image),
            Box::new(WindowBacking::new(Some(pager_disk))),
            compiled,
        )
        .map_err(DomainError::Open)
    }

    /// Compiles a module ahead of [`Domains::adopt`] (an incoming
    /// migration's, while its pages are still arriving).
    pub fn compile(&self, module: &[u8]) -> Result<CompiledModule, DomainError> {
        check_heap_room(module.len() as u64)?;
        CompiledModule::new(&self.engine, module).map_err(DomainError::Open)
    }

    /// The opened domain of `entry`, if it has one (not a parked copy or
    /// a refused disk).
    fn domain_of<'a>(&'a self, entry: &'a table::Entry) -> Option<&'a KernelDomain> {
        match &entry.body {
            table::Body::Scheduled => self.scheduler.domain(&entry.name),
            table::Body::Held(domain) => Some(&**domain),
            table::Body::Parked(_) | table::Body::Empty => None,
        }
    }

    /// The ID of `entry`'s domain or parked copy (none for a refused disk).
    fn id_of(&self, entry: &table::Entry) -> Option<DomainId> {
        match &entry.body {
            table::Body::Parked(image) => Some(image.metadata().id),
            _ => self.domain_of(entry).map(|domain| domain.id()),
        }
    }

    /// The domain an incoming one called `name` with ID `id` would clash
    /// with: any the table knows (running, stopped, paused, migrating,
    /// moved away, parked, ended); a refused disk has neither name nor ID.
    pub fn clash(&self, name: &str, id: DomainId) -> Option<Taken> {
        self.table.iter().find_map(|(_, entry)| {
            if entry.is_named(name) {
                return Some(Taken::Name {
                    state: entry.state.clone(),
                });
            }
            (self.id_of(entry) == Some(id)).then(|| Taken::Id {
                name: entry.name.clone(),
                state: entry.state.clone(),
            })
        })
    }

    /// One row per domain for `ps`, in the order the table learned of them.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (_, entry) in self.table.iter() {
            let domain = self.domain_of(entry);
            let id = self.id_of(entry);
            rows.push(Row {
                name: entry.name.clone(),
                id_prefix: id.map(|id| (id.0 >> 96) as u32),
                disk_index: entry.disk_index,
                state: entry.state.clone(),
                usage: domain.map(|domain| Usage {
                    resident_pages: domain.resident_pages(),
                    stored_pages: domain.stored_pages(),
                    commits: domain.record().commits,
                    fuel_used: domain.fuel_used(),
                }),
            });
        }
        rows
    }

    /// What disk `disk_index` holds.
    pub fn disk_use(&self, disk_index: usize) -> DiskUse {
        let entry = self
            .table
            .iter()
            .map(|(_, entry)| entry)
            .filter(|entry| entry.disk_index == disk_index)
            .last();
        if let Some(entry) = entry {
            return DiskUse::Entry {
                name: entry.name.clone(),
                state: entry.state.clone(),
            };
        }
        if self
            .spares
            .iter()
            .any(|spare| spare.info().index == disk_index)
        {
            return DiskUse::Spare;
        }
        let archive_disk = self
            .archive
            .as_ref()
            .map(|archive| archive.device().info().index);
        if archive_disk == Some(disk_index) {
            return DiskUse::AppsArchive;
        }
        DiskUse::Unused
    }

    /// Totals for `stats`.
    pub fn summary(&self) -> Summary {
        let running = self.table.count(|state| *state == State::Running);
        Summary {
            running,
            ended: self.scheduler.len() - running,
            stopped: self
                .table
                .count(|state| matches!(state, State::Stopped | State::Migrating)),
            paused: self
                .table
                .count(|state| matches!(state, State::Paused(_) | State::DiskFailed(_))),
            spares: self.spares.len(),
            fuel_used: self.scheduler.domains().map(Domain::fuel_used).sum(),
            checkpoint_interval_ms: self.checkpoint_interval_ns / 1_000_000,
        }
    }
}

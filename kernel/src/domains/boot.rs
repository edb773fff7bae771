//! At boot: what each disk holds, and the domains, spares and archive on them.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use persist::archive;
use persist::migrate::{self, Ownership};
use persist::{BLOCK_SIZE, BlockDevice, Image};
use vm::{DEFAULT_FUEL_SLICE, Scheduler};

use super::Domains;
use super::platform::KernelPlatform;
use super::table::{Body, Entry, State, Table};
use crate::arch::timer;
use crate::drivers::virtio_blk::{self, VirtioDisk};
use crate::println;

/// What a disk holds, by its first blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskKind {
    /// The first two blocks (where superblocks go) are all zeros: a spare.
    Blank,
    /// It starts with the apps archive's magic (damaged or not).
    AppsArchive,
    /// Anything else: a domain image, or a disk to refuse.
    Other,
}

fn disk_kind(disk: &mut VirtioDisk) -> Result<DiskKind, persist::DeviceError> {
    let mut block = [0u8; BLOCK_SIZE];
    for index in 0..2.min(disk.block_count()) {
        disk.read_block(index, &mut block)?;
        if index == 0 && archive::has_magic(&block) {
            return Ok(DiskKind::AppsArchive);
        }
        if block.iter().any(|&byte| byte != 0) {
            return Ok(DiskKind::Other);
        }
    }
    Ok(DiskKind::Blank)
}

/// The one console line of a refused disk: `disk N: refused: REASON`, then
/// the domain's name when the image gives one.
pub(super) struct RefusalLine<'a>(pub usize, pub &'a str, pub &'a str);

impl core::fmt::Display for RefusalLine<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let RefusalLine(disk_index, name, reason) = *self;
        write!(formatter, "disk {disk_index}: refused: {reason}")?;
        if !name.is_empty() {
            write!(formatter, " (the image of domain {name})")?;
        }
        Ok(())
    }
}

impl Domains {
    /// Probes the disks and opens every domain on them.
    pub fn load(checkpoint_interval_ms: u64) -> Domains {
        let platform = Arc::new(KernelPlatform::new());
        let checkpoint_interval_ns = checkpoint_interval_ms.max(1) * 1_000_000;
        let mut domains = Domains {
            engine: vm::new_engine(),
            platform,
            scheduler: Scheduler::new(DEFAULT_FUEL_SLICE),
            table: Table::default(),
            spares: Vec::new(),
            damaged: Vec::new(),
            archive: None,
            checkpoint_interval_ns,
            next_checkpoint_ns: timer::uptime_ns() + checkpoint_interval_ns,
        };
        for disk in virtio_blk::probe_disks() {
            domains.load_disk(disk);
        }
        domains
    }

    pub(super) fn load_disk(&mut self, mut disk: VirtioDisk) {
        let disk_index = disk.info().index;
        match disk_kind(&mut disk) {
            Ok(DiskKind::Blank) => {
                log::info!("disk {disk_index}: blank, kept as a spare");
                self.spares.push(disk);
                return;
            }
            Ok(DiskKind::AppsArchive) => {
                self.keep_archive(disk_index, disk);
                return;
            }
            Ok(DiskKind::Other) => {}
            Err(error) => {
                return self.refuse(
                    disk_index,
                    "",
                    format!("cannot read its first blocks: {error}"),
                );
            }
        }
        let started_ns = timer::uptime_ns();
        let image = match Image::try_open(disk) {
            Ok(image) => image,
            Err(unopened) => return self.refuse_unopened(disk_index, unopened),
        };
        let name = image.metadata().name.clone();
        let Some(image) = self.resolve_at_boot(disk_index, image) else {
            return;
        };
        match self.open_image(image, None) {
            Ok(domain) => {
                let elapsed_us = (timer::uptime_ns() - started_ns) / 1000;
                log::info!(
                    "disk {disk_index}: {} opened in {elapsed_us} us ({} pages resident)",
                    domain.name(),
                    domain.resident_pages()
                );
                self.admit(disk_index, domain);
            }
            Err(reason) => self.refuse(disk_index, &name, reason.to_string()),
        }
    }

    /// Says once why disk `disk_index` holds no domain, naming the domain
    /// (`name`, empty when the image could not be read that far), and keeps
    /// the disk in the table as refused with its reason, for `ps` and
    /// `disks`.
    pub(super) fn refuse(&mut self, disk_index: usize, name: &str, reason: String) {
        println!("{}", RefusalLine(disk_index, name, &reason));
        self.table.insert(Entry {
            name: String::from(name),
            disk_index,
            state: State::Refused(reason),
            body: Body::Empty,
        });
    }

    /// What a migration record on an image means at boot: an image to open
    /// as a domain (its own, or a tombstone, which never runs), or nothing
    /// when the image is an incomplete incoming copy (blanked into a spare)
    /// or a parked one (kept until its source answers).
    fn resolve_at_boot(
        &mut self,
        disk_index: usize,
        image: Image<VirtioDisk>,
    ) -> Option<Image<VirtioDisk>> {
        let name = image.metadata().name.clone();
        match migrate::ownership(image.metadata()) {
            Ownership::Owner | Ownership::HandedOver { .. } => Some(image),
            Ownership::Incomplete { .. } => {
                match migrate::discard(image) {
                    Ok(disk) => {
                        println!(
                            "disk {disk_index}: an incomplete incoming copy of {name}: \
                             discarded, a spare again"
                        );
                        self.spares.push(disk);
                    }
                    Err(error) => println!(
                        "disk {disk_index}: an incomplete incoming copy of {name} \
                         cannot be discarded: {error}"
                    ),
                }
                None
            }
            Ownership::Parked { source, .. } => {
                println!(
                    "disk {disk_index}: {name} is a complete incoming copy: asking {source} \
                     whether it handed the domain over"
                );
                self.park(disk_index, image);
                None
            }
        }
    }
}

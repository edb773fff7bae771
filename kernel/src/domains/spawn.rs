//! `spawn APP [NAME]`: a new domain from the apps archive, on a spare disk.
//!
//! The archive (`persist::archive`, packed by `cargo xtask app archive`)
//! holds each app's finished module and its memory limits, as `cargo xtask
//! image new` would put them in an image. Spawning formats the first spare
//! disk with `persist::Image::create`, the call `image new` makes, and runs
//! the domain; from then on the disk is a domain image like any other, so
//! the domain resumes from it after a reboot.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use persist::archive::Archive;
use persist::{BLOCK_SIZE, BlockDevice, Image, MAX_NAME_LEN, NewDomain};
use vm::Platform;

use super::{Domains, check_heap_room};
use crate::drivers::virtio_blk::VirtioDisk;
use crate::println;

const MIB: u64 = 1024 * 1024;

impl Domains {
    /// Keeps the apps archive found on disk `disk_index` for `spawn`, or
    /// refuses it with one line when it is damaged or a second one.
    pub(super) fn keep_archive(&mut self, disk_index: usize, disk: VirtioDisk) {
        if let Some(kept) = &self.archive {
            println!(
                "disk {disk_index}: refused: a second apps archive (disk {} is the one in use)",
                kept.device().info().index
            );
            return;
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
            Err(error) => println!("disk {disk_index}: refused: apps archive: {error}"),
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

    /// Whether any domain here is called `name`: running, stopped, paused,
    /// moved away or a parked incoming copy.
    fn has_name(&self, name: &str) -> bool {
        self.scheduler.domain(name).is_some()
            || self
                .stopped
                .iter()
                .chain(&self.paused)
                .chain(&self.moved)
                .any(|entry| entry.domain.name() == name)
            || self
                .parked
                .iter()
                .any(|parked| parked.image.metadata().name == name)
    }

    /// `spawn APP [NAME]`: formats the first spare disk as a new image of
    /// app `app` from the archive, named `name` (default: the app's name),
    /// and runs it. Every check that can fail comes before the spare is
    /// taken, so a refused spawn leaves the spare a spare.
    pub fn spawn(&mut self, app: &str, name: Option<&str>) -> Result<String, String> {
        let name = name.unwrap_or(app);
        let Some(archive) = &self.archive else {
            return Err(String::from(
                "no apps archive disk (`cargo xtask run` attaches one; \
                 `cargo xtask app archive` builds it)",
            ));
        };
        let Some(entry) = archive.find(app).cloned() else {
            return Err(format!(
                "no app '{app}' in the apps archive; it holds: {}",
                self.app_names().join(", ")
            ));
        };
        if name.len() > MAX_NAME_LEN {
            return Err(format!("a name is at most {MAX_NAME_LEN} bytes"));
        }
        if self.has_name(name) {
            return Err(format!(
                "a domain named '{name}' exists already (see ps): `spawn {app} OTHER-NAME`"
            ));
        }
        if entry.len_bytes > vm::MAX_MODULE_BYTES as u64 {
            return Err(format!(
                "{app}'s module is {} bytes, more than the {} a domain's module may have",
                entry.len_bytes,
                vm::MAX_MODULE_BYTES
            ));
        }
        check_heap_room(entry.len_bytes).map_err(|reason| format!("{app}: {reason}"))?;
        let Some(spare) = self.spares.first() else {
            return Err(String::from(
                "no spare disk left: every disk holds a domain (attach a blank disk and reboot)",
            ));
        };
        let disk_index = spare.info().index;
        let disk_blocks = spare.block_count();
        if !(persist::MIN_IMAGE_BLOCKS..=persist::MAX_IMAGE_BLOCKS).contains(&disk_blocks) {
            return Err(format!(
                "spare disk {disk_index} has {disk_blocks} blocks; an image needs {} to {}",
                persist::MIN_IMAGE_BLOCKS,
                persist::MAX_IMAGE_BLOCKS
            ));
        }
        let module = match self
            .archive
            .as_mut()
            .and_then(|archive| archive.read_module(app))
        {
            Some(Ok(module)) => module,
            Some(Err(error)) => return Err(format!("apps archive: {error}")),
            None => return Err(format!("no app '{app}' in the apps archive")),
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
            },
        )
        .map_err(|error| {
            format!(
                "formatting spare disk {disk_index} for {name} failed: {error} \
                 (the disk is out of use until a reboot)"
            )
        })?;
        drop(module);
        self.adopt(image, None).map_err(|reason| {
            format!("{name}: its image is on disk {disk_index}, but it cannot run: {reason}")
        })?;
        let mut answer = format!("{name}: spawned from {app} on disk {disk_index}");
        let wanted_blocks = persist::default_block_count(entry.memory_max_pages, entry.len_bytes);
        if disk_blocks < wanted_blocks {
            answer.push_str(&format!(
                "\nnote: disk {disk_index} has {} MiB, less than the {} MiB a commit of all of \
                 {name}'s memory may need; {name} pauses if the disk fills",
                disk_blocks * BLOCK_SIZE as u64 / MIB,
                wanted_blocks * BLOCK_SIZE as u64 / MIB
            ));
        }
        Ok(answer)
    }
}

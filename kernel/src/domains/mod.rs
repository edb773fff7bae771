//! Domains in the kernel: one per disk, run round robin, committed periodically.
//!
//! Every disk holding a domain image becomes a domain; blank disks are spares
//! (for spawn and migration); the apps archive disk is kept for `spawn`
//! (`spawn.rs`); a disk that is none of these is refused with a console line
//! while the others run. Domains run in fuel slices through
//! `vm::Scheduler` and are checkpointed every `checkpoint-ms` (boot argument,
//! default 1000), on `checkpoint`, on `stop` and on `shutdown`. A domain whose
//! commit finds its disk full is paused: out of the rotation, its last commit
//! intact, until `start NAME` retries the commit.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use persist::archive::{self, Archive};
use persist::migrate::{self, Ownership, Verdict};
use persist::{BLOCK_SIZE, BlockDevice, Image};
use vm::wasmi::Engine;
use vm::{
    CompiledModule, DEFAULT_FUEL_SLICE, Domain, DomainStatus, PauseReason, PersistStorage,
    Platform, Scheduler, SchedulerEvent, Wake,
};

use crate::arch::timer;
use crate::drivers::virtio_blk::{self, VirtioDisk};
use crate::memory::heap;
use crate::memory::window_backing::WindowBacking;
use crate::println;
use platform::KernelPlatform;

pub mod platform;
mod spawn;

/// Default time between periodic checkpoints.
pub const DEFAULT_CHECKPOINT_MS: u64 = 1000;

/// How long `shutdown` lets domains in the middle of a computation run on to
/// reach a safe point before it powers off without their latest state.
const SHUTDOWN_GRACE_NS: u64 = 2_000_000_000;

/// Kernel heap a module takes while it is read, compiled and instantiated,
/// as a multiple of its size: the read buffer doubles as it grows, and wasmi
/// keeps its own copy of data and code. A rough bound, kept generous.
const MODULE_HEAP_FACTOR: u64 = 4;

/// Refuses a module the kernel heap has no room for: running out of heap
/// stops the kernel, and every domain with it.
fn check_heap_room(module_bytes: u64) -> Result<(), String> {
    let stats = heap::stats();
    let free_bytes = stats.size_bytes.saturating_sub(stats.allocated_bytes);
    let needed_bytes = module_bytes.saturating_mul(MODULE_HEAP_FACTOR);
    if needed_bytes > free_bytes {
        return Err(format!(
            "its {module_bytes}-byte module needs about {} KiB of kernel heap; {} KiB are free",
            needed_bytes / 1024,
            free_bytes / 1024
        ));
    }
    Ok(())
}

/// One domain and the disk it lives on.
#[derive(Debug)]
struct Entry {
    disk_index: usize,
    domain: Domain,
}

/// A complete incoming copy waiting for its source's word.
#[derive(Debug)]
pub struct ParkedCopy {
    pub disk_index: usize,
    pub image: Image<VirtioDisk>,
}

/// Every domain the kernel knows, and the spare disks.
pub struct Domains {
    engine: Engine,
    platform: Arc<KernelPlatform>,
    scheduler: Scheduler,
    /// Disk index of each domain in the scheduler, in scheduler order.
    scheduled_disks: Vec<usize>,
    stopped: Vec<Entry>,
    /// Held out of the rotation by a pause (a full disk), not ended.
    paused: Vec<Entry>,
    /// Handed over to another machine while this one ran.
    moved: Vec<Entry>,
    parked: Vec<ParkedCopy>,
    spares: Vec<VirtioDisk>,
    /// The apps archive `spawn` takes modules from, if a disk holds one.
    archive: Option<Archive<VirtioDisk>>,
    checkpoint_interval_ns: u64,
    next_checkpoint_ns: u64,
}

impl core::fmt::Debug for Domains {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Domains")
            .field("scheduled", &self.scheduler.domains().len())
            .field("stopped", &self.stopped.len())
            .field("paused", &self.paused.len())
            .field("spares", &self.spares.len())
            .finish()
    }
}

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

/// How a status reads on the console.
pub fn describe(status: &DomainStatus) -> String {
    match status {
        DomainStatus::Running => "running".into(),
        DomainStatus::Stopped => "stopped".into(),
        DomainStatus::Exited(code) => format!("exited({code})"),
        DomainStatus::Trapped(reason) => format!("trapped: {reason}"),
        DomainStatus::MovedAway => "moved away".into(),
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
            scheduled_disks: Vec::new(),
            stopped: Vec::new(),
            paused: Vec::new(),
            moved: Vec::new(),
            parked: Vec::new(),
            spares: Vec::new(),
            archive: None,
            checkpoint_interval_ns,
            next_checkpoint_ns: timer::uptime_ns() + checkpoint_interval_ns,
        };
        for mut disk in virtio_blk::probe_disks() {
            let disk_index = disk.info().index;
            match disk_kind(&mut disk) {
                Ok(DiskKind::Blank) => {
                    log::info!("disk {disk_index}: blank, kept as a spare");
                    domains.spares.push(disk);
                    continue;
                }
                Ok(DiskKind::AppsArchive) => {
                    domains.keep_archive(disk_index, disk);
                    continue;
                }
                Ok(DiskKind::Other) => {}
                Err(error) => {
                    println!("disk {disk_index}: refused: {error}");
                    continue;
                }
            }
            let started_ns = timer::uptime_ns();
            let image = match Image::open(disk) {
                Ok(image) => image,
                Err(error) => {
                    println!("disk {disk_index}: refused: {error}");
                    continue;
                }
            };
            let Some(image) = domains.resolve_at_boot(disk_index, image) else {
                continue;
            };
            match domains.open_image(image, None) {
                Ok(domain) => {
                    let elapsed_us = (timer::uptime_ns() - started_ns) / 1000;
                    log::info!(
                        "disk {disk_index}: {} opened in {elapsed_us} us ({} pages resident)",
                        domain.name(),
                        domain.resident_pages()
                    );
                    domains.admit(Entry { disk_index, domain });
                }
                Err(reason) => println!("disk {disk_index}: refused: {reason}"),
            }
        }
        domains
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

    /// Keeps a complete incoming copy until its source answers.
    pub fn park(&mut self, disk_index: usize, image: Image<VirtioDisk>) {
        self.parked.push(ParkedCopy { disk_index, image });
    }

    /// Parked copies, for the migration code to resolve.
    pub fn parked_mut(&mut self) -> &mut Vec<ParkedCopy> {
        &mut self.parked
    }

    fn open_image(
        &self,
        image: Image<VirtioDisk>,
        compiled: Option<CompiledModule>,
    ) -> Result<Domain, String> {
        let pager_disk = image.device().pager_disk();
        if compiled.is_none() {
            check_heap_room(image.stats().module_len_bytes)?;
        }
        let platform: Arc<dyn Platform> = self.platform.clone();
        Domain::open_compiled(
            &self.engine,
            platform,
            Box::new(PersistStorage::new(image)),
            Box::new(WindowBacking::new(Some(pager_disk))),
            compiled,
        )
        .map_err(|error| format!("{error}"))
    }

    /// Compiles a module ahead of [`Domains::adopt`] (an incoming
    /// migration's, while its pages are still arriving).
    pub fn compile(&self, module: &[u8]) -> Result<CompiledModule, String> {
        check_heap_room(module.len() as u64)?;
        CompiledModule::new(&self.engine, module).map_err(|error| format!("{error}"))
    }

    /// Puts a freshly opened domain where its status says it belongs.
    fn admit(&mut self, entry: Entry) {
        let status = entry.domain.status();
        log::info!(
            "disk {}: domain {} ({})",
            entry.disk_index,
            entry.domain.name(),
            describe(&status)
        );
        if status == DomainStatus::Stopped {
            self.stopped.push(entry);
            return;
        }
        let name = String::from(entry.domain.name());
        match self.scheduler.add(entry.domain) {
            Ok(()) => self.scheduled_disks.push(entry.disk_index),
            Err(error) => println!("disk {}: refused {name}: {error}", entry.disk_index),
        }
    }

    /// A fresh migration identity (random: two machines never pick the same).
    pub fn new_migration_id(&self) -> persist::migrate::MigrationId {
        let mut bytes = [0u8; 16];
        self.platform.fill_random(&mut bytes);
        u128::from_le_bytes(bytes)
    }

    /// Whether domain `name` is in the rotation and has not ended.
    pub fn is_running(&self, name: &str) -> bool {
        self.scheduler
            .domain(name)
            .is_some_and(|domain| domain.status() == DomainStatus::Running)
    }

    /// The image of domain `name`, running or stopped.
    pub fn image_of(&mut self, name: &str) -> Result<&mut Image<VirtioDisk>, String> {
        let domain = if self.scheduler.domain(name).is_some() {
            self.scheduler.domain_mut(name)
        } else {
            self.stopped
                .iter_mut()
                .find(|entry| entry.domain.name() == name)
                .map(|entry| &mut entry.domain)
        };
        let domain = domain.ok_or_else(|| format!("no domain named '{name}' (see ps)"))?;
        domain
            .image_mut()
            .and_then(|image| image.downcast_mut::<Image<VirtioDisk>>())
            .ok_or_else(|| format!("{name} has no disk image"))
    }

    /// Sets aside a stopped domain that another machine owns now: its image
    /// here holds the hand-over record and never runs again, but answers
    /// the target's questions after a reconnect.
    pub fn mark_moved(&mut self, name: &str) {
        if let Some(position) = self
            .stopped
            .iter()
            .position(|entry| entry.domain.name() == name)
        {
            let entry = self.stopped.remove(position);
            self.moved.push(entry);
        }
    }

    /// Takes a spare disk (for an incoming migration).
    pub fn take_spare(&mut self) -> Option<VirtioDisk> {
        if self.spares.is_empty() {
            return None;
        }
        Some(self.spares.remove(0))
    }

    /// Gives back a spare disk, blank again.
    pub fn return_spare(&mut self, disk: VirtioDisk) {
        self.spares.push(disk);
    }

    /// Runs the domain of an image that just became this machine's (an
    /// incoming migration); returns its name. `compiled` is its module,
    /// when compiled already ([`Domains::compile`]).
    pub fn adopt(
        &mut self,
        image: Image<VirtioDisk>,
        compiled: Option<CompiledModule>,
    ) -> Result<String, String> {
        let disk_index = image.device().info().index;
        let domain = self.open_image(image, compiled)?;
        let name = String::from(domain.name());
        let is_stopped = domain.status() == DomainStatus::Stopped;
        self.admit(Entry { disk_index, domain });
        if is_stopped {
            self.start(&name)?;
        }
        Ok(name)
    }

    /// The source's answer to a parked copy's question, from every image
    /// here (see `persist::migrate::answer_query`).
    pub fn answer_query(
        &mut self,
        migration_id: persist::migrate::MigrationId,
        domain_id: persist::DomainId,
    ) -> Verdict {
        let mut metadata = Vec::new();
        let domains = self
            .scheduler
            .domains_mut()
            .iter_mut()
            .chain(self.stopped.iter_mut().map(|entry| &mut entry.domain))
            .chain(self.paused.iter_mut().map(|entry| &mut entry.domain))
            .chain(self.moved.iter_mut().map(|entry| &mut entry.domain));
        for domain in domains {
            if let Some(image) = domain
                .image_mut()
                .and_then(|image| image.downcast_mut::<Image<VirtioDisk>>())
            {
                metadata.push(image.metadata().clone());
            }
        }
        migrate::answer_query(metadata.iter(), migration_id, domain_id)
    }

    /// The first spare (blank) disk, if any.
    pub fn first_spare(&mut self) -> Option<&mut VirtioDisk> {
        self.spares.first_mut()
    }

    /// Gives every runnable domain one slice, reports domains that ended, and
    /// takes the periodic checkpoint when it is due. Returns whether any
    /// domain can run right away.
    pub fn run_round(&mut self) -> bool {
        self.run_scheduler_round();
        if timer::uptime_ns() >= self.next_checkpoint_ns {
            self.checkpoint_all();
            self.next_checkpoint_ns = timer::uptime_ns() + self.checkpoint_interval_ns;
        }
        self.scheduler.next_wake() == Some(Wake::Now)
    }

    /// Asks every domain for a checkpoint; reports failures (a full disk
    /// pauses its domain and says so once).
    fn checkpoint_all(&mut self) {
        for (name, result) in self.scheduler.checkpoint_all() {
            match result {
                Err(vm::Error::DiskFull { .. }) | Ok(_) => {}
                Err(error) => println!("[{name}] checkpoint failed: {error}"),
            }
        }
        self.hold_paused();
    }

    /// Moves domains that paused themselves (a commit found the disk full)
    /// out of the rotation, with one console line each.
    fn hold_paused(&mut self) {
        while let Some(position) = self
            .scheduler
            .domains()
            .iter()
            .position(|domain| domain.pause_reason().is_some())
        {
            let name = String::from(self.scheduler.domains()[position].name());
            let Some(domain) = self.scheduler.remove(&name) else {
                return;
            };
            let disk_index = self.scheduled_disks.remove(position);
            if domain.pause_reason() == Some(PauseReason::DiskFull) {
                println!(
                    "{name}: paused: disk full (disk {disk_index}); its last commit is intact; \
                     `start {name}` retries the commit"
                );
            }
            self.paused.push(Entry { disk_index, domain });
        }
    }

    /// `checkpoint [NAME]`: commits now, or at the domain's next safe point.
    pub fn checkpoint(&mut self, name: Option<&str>) -> Result<String, String> {
        let Some(name) = name else {
            let results = self.scheduler.checkpoint_all();
            let committed = results
                .iter()
                .filter(|(_, result)| matches!(result, Ok(true)))
                .count();
            let mut failures = String::new();
            for (name, result) in &results {
                if let Err(error) = result {
                    failures.push_str(&format!("\n{name}: checkpoint failed: {error}"));
                }
            }
            return Ok(format!(
                "{committed} of {} domains committed now, the others at their next safe point{failures}",
                results.len()
            ));
        };
        let domain = self.domain_mut(name)?;
        match domain.request_checkpoint() {
            Ok(true) => Ok(format!("{name}: committed")),
            Ok(false) => Ok(format!("{name}: will commit at its next safe point")),
            Err(error) => Err(format!("{name}: checkpoint failed: {error}")),
        }
    }

    /// `stop NAME`: commits the domain with status stopped, keeping its
    /// state, and takes it out of the rotation. A domain in the middle of a
    /// computation runs on (with the others) until its next safe point.
    pub fn stop(&mut self, name: &str) -> Result<String, String> {
        self.hold(name, Domain::stop)?;
        Ok(format!("{name}: stopped (state committed)"))
    }

    /// Pauses a domain for a migration's final round: committed at a safe
    /// point with the status running (a reboot before the hand-over runs it
    /// here again) and out of the rotation until `start`.
    ///
    /// Then it waits (a while, running the others) for the receivers of
    /// messages it sent to commit them: the copies in its outbox go with
    /// it, and could no longer be delivered again here after a power cut.
    pub fn pause_for_migration(&mut self, name: &str) -> Result<(), String> {
        self.hold(name, Domain::hold_for_migration)?;
        let Some(mut entry) = self.stopped.pop() else {
            return Err(self.unknown(name));
        };
        let deadline = timer::uptime_ns() + SHUTDOWN_GRACE_NS;
        loop {
            match self.scheduler.settle_outbox_of(&mut entry.domain) {
                Ok(true) => break,
                Ok(false) if timer::uptime_ns() < deadline => self.run_scheduler_round(),
                // The migration goes on: only a power cut here before the
                // receivers' next commits would lose the messages.
                Ok(false) => {
                    log::warn!(
                        "[migrate] {name}: {} messages it sent are not yet committed by \
                         their receivers",
                        entry.domain.outbox_len()
                    );
                    break;
                }
                Err(error) => {
                    log::warn!("[migrate] {name}: a receiver of its messages: {error}");
                    break;
                }
            }
        }
        self.stopped.push(entry);
        Ok(())
    }

    /// Commits `name` at its next safe point with `commit` and takes it out
    /// of the rotation, into the stopped list.
    fn hold(
        &mut self,
        name: &str,
        commit: fn(&mut Domain) -> Result<bool, vm::Error>,
    ) -> Result<(), String> {
        let deadline = timer::uptime_ns() + SHUTDOWN_GRACE_NS;
        loop {
            match commit(self.domain_mut(name)?) {
                Ok(true) => break,
                Ok(false) if timer::uptime_ns() < deadline => self.run_scheduler_round(),
                Ok(false) => {
                    return Err(format!(
                        "{name} did not reach a safe point within {} s; try again",
                        SHUTDOWN_GRACE_NS / 1_000_000_000
                    ));
                }
                Err(error) => return Err(format!("{name}: {error}")),
            }
        }
        let position = self
            .scheduler
            .domains()
            .iter()
            .position(|domain| domain.name() == name)
            .ok_or_else(|| self.unknown(name))?;
        let domain = self
            .scheduler
            .remove(name)
            .ok_or_else(|| self.unknown(name))?;
        let disk_index = self.scheduled_disks.remove(position);
        self.stopped.push(Entry { disk_index, domain });
        Ok(())
    }

    /// `kill NAME`: ends a running or stopped domain for good; the end is
    /// committed, so it stays ended across reboots.
    pub fn kill(&mut self, name: &str) -> Result<String, String> {
        let status = DomainStatus::Trapped(String::from("killed from the console"));
        if let Some(domain) = self.scheduler.domain_mut(name) {
            if matches!(
                domain.status(),
                DomainStatus::Exited(_) | DomainStatus::Trapped(_) | DomainStatus::MovedAway
            ) {
                return Err(format!("{name} has ended already"));
            }
            domain.stop(status);
            return Ok(format!("{name}: killed"));
        }
        let position = self
            .stopped
            .iter()
            .position(|entry| entry.domain.name() == name)
            .ok_or_else(|| format!("no domain named '{name}' (see ps)"))?;
        let mut entry = self.stopped.remove(position);
        entry.domain.stop(status);
        self.admit(entry);
        Ok(format!("{name}: killed"))
    }

    /// `start NAME`: resumes a stopped domain where it stopped, or retries
    /// the commit a paused domain waits for and runs it on if that works.
    pub fn start(&mut self, name: &str) -> Result<String, String> {
        if let Some(position) = self
            .paused
            .iter()
            .position(|entry| entry.domain.name() == name)
        {
            let mut entry = self.paused.remove(position);
            if let Err(error) = entry.domain.resume_from_pause() {
                self.paused.insert(position, entry);
                return Err(format!("{name}: still paused: {error}"));
            }
            self.admit(entry);
            return Ok(format!("{name}: committed and running again"));
        }
        let Some(position) = self
            .stopped
            .iter()
            .position(|entry| entry.domain.name() == name)
        else {
            return Err(if self.scheduler.domain(name).is_some() {
                format!("{name} is not stopped")
            } else {
                format!("no domain named '{name}' (see ps)")
            });
        };
        let mut entry = self.stopped.remove(position);
        if let Err(error) = entry.domain.resume() {
            self.stopped.insert(position, entry);
            return Err(format!("{name}: {error}"));
        }
        self.admit(entry);
        Ok(format!("{name}: started"))
    }

    fn run_scheduler_round(&mut self) {
        for event in self.scheduler.run_round() {
            match event {
                SchedulerEvent::Halted { name, status } => {
                    // The vm has already printed a trap with its reason on
                    // the domain's output (`[NAME] error: trapped: ...`): a
                    // second line would report one end twice.
                    if !matches!(status, DomainStatus::Trapped(_)) {
                        println!("[{name}] {}", describe(&status));
                    }
                }
                // hold_paused says it, for pauses at periodic checkpoints too.
                SchedulerEvent::Paused { .. } => {}
            }
        }
        self.hold_paused();
    }

    fn domain_mut(&mut self, name: &str) -> Result<&mut Domain, String> {
        if self.scheduler.domain(name).is_none() {
            return Err(self.unknown(name));
        }
        self.scheduler
            .domain_mut(name)
            .ok_or_else(|| format!("no domain named '{name}'"))
    }

    fn unknown(&self, name: &str) -> String {
        if self.stopped.iter().any(|entry| entry.domain.name() == name) {
            format!("{name} is stopped")
        } else if self.paused.iter().any(|entry| entry.domain.name() == name) {
            format!("{name} is paused (see ps)")
        } else {
            format!("no domain named '{name}' (see ps)")
        }
    }

    /// One line per domain for `ps`.
    pub fn table(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.push(format!(
            "{:<12} {:<8} {:<5} {:<20} {:>9} {:>7} {:>8} {:>14}",
            "NAME", "ID", "DISK", "STATUS", "RESIDENT", "STORED", "COMMITS", "FUEL"
        ));
        let scheduled = self
            .scheduler
            .domains()
            .iter()
            .zip(self.scheduled_disks.iter().copied());
        let stopped = self
            .stopped
            .iter()
            .map(|entry| (&entry.domain, entry.disk_index));
        let paused = self
            .paused
            .iter()
            .map(|entry| (&entry.domain, entry.disk_index));
        let moved = self
            .moved
            .iter()
            .map(|entry| (&entry.domain, entry.disk_index));
        for (domain, disk_index) in scheduled.chain(stopped).chain(paused).chain(moved) {
            let id = u128::from_le_bytes(domain.id());
            let status = if self
                .moved
                .iter()
                .any(|entry| core::ptr::eq(&entry.domain, domain))
            {
                describe(&DomainStatus::MovedAway)
            } else if let Some(reason) = domain.pause_reason() {
                format!("paused: {reason}")
            } else {
                describe(&domain.status())
            };
            let resident_pages = domain.resident_pages();
            let stored_pages = domain
                .stored_pages()
                .map_or_else(|| String::from("-"), |pages| format!("{pages}"));
            lines.push(format!(
                "{:<12} {:<8} {:<5} {:<20} {:>9} {:>7} {:>8} {:>14}",
                domain.name(),
                format!("{:08x}", (id >> 96) as u32),
                disk_index,
                status,
                resident_pages,
                stored_pages,
                domain.record().commits,
                domain.fuel_used()
            ));
        }
        for parked in &self.parked {
            let metadata = parked.image.metadata();
            lines.push(format!(
                "{:<12} {:08x} {:<5} {:<20}",
                metadata.name,
                (metadata.id >> 96) as u32,
                parked.disk_index,
                "parked (incoming)"
            ));
        }
        lines
    }

    /// Totals for `stats`.
    pub fn summary(&self) -> String {
        let running = self
            .scheduler
            .domains()
            .iter()
            .filter(|domain| domain.status() == DomainStatus::Running)
            .count();
        let fuel: u64 = self.scheduler.domains().iter().map(Domain::fuel_used).sum();
        format!(
            "domains: {} running, {} ended, {} stopped, {} paused; spare disks: {}; fuel used: {}; checkpoint every {} ms",
            running,
            self.scheduler.domains().len() - running,
            self.stopped.len(),
            self.paused.len(),
            self.spares.len(),
            fuel,
            self.checkpoint_interval_ns / 1_000_000
        )
    }

    /// Commits every domain for shutdown: domains at a safe point commit at
    /// once; the others run on (console ignored) until they reach one, for at
    /// most SHUTDOWN_GRACE_NS. Returns the names whose latest state is lost.
    pub fn commit_for_shutdown(&mut self) -> Vec<String> {
        self.checkpoint_all();
        let deadline = timer::uptime_ns() + SHUTDOWN_GRACE_NS;
        while self.pending_checkpoints().next().is_some() && timer::uptime_ns() < deadline {
            self.run_scheduler_round();
        }
        self.pending_checkpoints().map(String::from).collect()
    }

    fn pending_checkpoints(&self) -> impl Iterator<Item = &str> {
        self.scheduler
            .domains()
            .iter()
            .filter(|domain| domain.is_checkpoint_pending())
            .map(Domain::name)
    }
}

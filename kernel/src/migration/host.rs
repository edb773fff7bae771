//! The domain table as migration's host: `Domains` methods, thinly.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;

use kernel_core::migration::{Clash, ClashKind, Counters, Event, HostError, Level, MigrationHost};
use persist::migrate::{MigrationId, Verdict};
use persist::{DomainId, Image};
use vm::CompiledModule;

use super::network::{CIPHER_NS, NETWORK_POLL_NS};
use crate::arch::timer;
use crate::domains::{DomainError, Domains, Taken};
use crate::drivers::virtio_blk::{DISK_REQUESTS, DISK_WAIT_NS, VirtioDisk};
use crate::memory::heap;
use crate::println;

impl MigrationHost for Domains {
    type Disk = VirtioDisk;
    type Compiled = CompiledModule;

    fn now_ns(&self) -> u64 {
        timer::uptime_ns()
    }

    fn counters(&self) -> Counters {
        Counters {
            now_ns: timer::uptime_ns(),
            network_poll_ns: NETWORK_POLL_NS.load(Ordering::Relaxed),
            disk_wait_ns: DISK_WAIT_NS.load(Ordering::Relaxed),
            disk_requests: DISK_REQUESTS.load(Ordering::Relaxed),
            cipher_ns: CIPHER_NS.load(Ordering::Relaxed),
        }
    }

    fn is_running(&self, name: &str) -> bool {
        Domains::is_running(self, name)
    }

    fn new_migration_id(&self) -> MigrationId {
        Domains::new_migration_id(self)
    }

    fn image_of(&mut self, name: &str) -> Result<&mut Image<VirtioDisk>, HostError> {
        Domains::image_of(self, name).map_err(host_error)
    }

    fn checkpoint(&mut self, name: &str) -> Result<(), HostError> {
        Domains::checkpoint(self, name)
            .map(drop)
            .map_err(host_error)
    }

    fn hold_for_migration(&mut self, name: &str) -> Result<(), HostError> {
        Domains::hold_for_migration(self, name).map_err(host_error)
    }

    fn mark_moved(&mut self, name: &str) {
        Domains::mark_moved(self, name);
    }

    fn start(&mut self, name: &str) -> Result<(), HostError> {
        Domains::start(self, name).map(drop).map_err(host_error)
    }

    fn take_spare(&mut self, domain_id: Option<DomainId>) -> Option<VirtioDisk> {
        Domains::take_spare(self, domain_id)
    }

    fn return_spare(&mut self, disk: VirtioDisk) {
        Domains::return_spare(self, disk);
    }

    fn compile(&self, module: &[u8]) -> Result<CompiledModule, HostError> {
        Domains::compile(self, module).map_err(host_error)
    }

    fn adopt(
        &mut self,
        image: Image<VirtioDisk>,
        compiled: Option<CompiledModule>,
    ) -> Result<String, HostError> {
        Domains::adopt(self, image, compiled).map_err(host_error)
    }

    fn park(&mut self, image: Image<VirtioDisk>) {
        let disk_index = image.device().info().index;
        Domains::park(self, disk_index, image);
    }

    fn parked_mut(&mut self, index: usize) -> Option<&mut Image<VirtioDisk>> {
        Domains::parked_mut(self).nth(index).map(|(_, image)| image)
    }

    fn unpark(&mut self, index: usize) -> Option<Image<VirtioDisk>> {
        let (key, _) = Domains::parked_mut(self).nth(index)?;
        Domains::unpark(self, key)
    }

    fn answer_query(&mut self, migration_id: MigrationId, domain_id: DomainId) -> Verdict {
        Domains::answer_query(self, migration_id, domain_id)
    }

    fn heap_room_bytes(&self) -> u64 {
        let stats = heap::stats();
        stats.size_bytes.saturating_sub(stats.allocated_bytes)
    }

    fn clash(&self, name: &str, id: DomainId) -> Option<Clash> {
        Some(match Domains::clash(self, name, id)? {
            Taken::Name { state } => Clash {
                kind: ClashKind::Name,
                name: name.into(),
                state: format!("{state}"),
            },
            Taken::Id { name, state } => Clash {
                kind: ClashKind::Id,
                name,
                state: format!("{state}"),
            },
        })
    }

    fn report(&mut self, event: Event) {
        match event.level() {
            Level::Console => println!("{event}"),
            Level::Info => log::info!("{event}"),
            Level::Warning => log::warn!("{event}"),
        }
    }
}

/// The domain table's error, in the words the console shows.
fn host_error(error: DomainError) -> HostError {
    HostError(format!("{error}"))
}

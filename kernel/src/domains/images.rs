//! Images and disks for migration: a domain's image, parked copies, spares.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;

use persist::migrate::{self, Verdict};
use persist::{DomainId, Image};
use vm::Platform;

use super::table::{Body, DomainKey, Entry, State};
use super::{DomainError, Domains};
use crate::drivers::virtio_blk::VirtioDisk;
use crate::println;

impl Domains {
    /// A fresh migration identity (random: two machines never pick the same).
    pub fn new_migration_id(&self) -> persist::migrate::MigrationId {
        let mut bytes = [0u8; 16];
        self.platform.fill_random(&mut bytes);
        u128::from_le_bytes(bytes)
    }

    /// The image of domain `name`, in the rotation or stopped.
    pub fn image_of(&mut self, name: &str) -> Result<&mut Image<VirtioDisk>, DomainError> {
        if self.scheduler.domain(name).is_some() {
            let domain = self.scheduled_mut(name)?;
            return Ok(domain.storage_mut().image_mut());
        }
        let unknown = DomainError::NoSuchDomain { name: name.into() };
        match self.held_mut(name) {
            Some(Entry {
                state: State::Stopped | State::Migrating,
                body: Body::Held(domain),
                ..
            }) => Ok(domain.storage_mut().image_mut()),
            _ => Err(unknown),
        }
    }

    /// Keeps a complete incoming copy until its source answers.
    pub fn park(&mut self, disk_index: usize, image: Image<VirtioDisk>) {
        let name = image.metadata().name.clone();
        self.table.insert(Entry {
            name,
            disk_index,
            state: State::Parked,
            body: Body::Parked(Box::new(image)),
        });
    }

    /// The parked copies and their keys, for the migration code to resolve.
    pub fn parked_mut(&mut self) -> impl Iterator<Item = (DomainKey, &mut Image<VirtioDisk>)> {
        self.table
            .iter_mut()
            .filter_map(|(key, entry)| match &mut entry.body {
                Body::Parked(image) => Some((key, &mut **image)),
                _ => None,
            })
    }

    /// Takes parked copy `key` out of the table (to adopt or discard it).
    pub fn unpark(&mut self, key: DomainKey) -> Option<Image<VirtioDisk>> {
        let entry = self.table.get_mut(key)?;
        if !matches!(entry.body, Body::Parked(_)) {
            return None;
        }
        match self.table.remove(key)?.body {
            Body::Parked(image) => Some(*image),
            _ => None,
        }
    }

    /// The source's answer to a parked copy's question, from every image
    /// here (see `persist::migrate::answer_query`).
    pub fn answer_query(
        &mut self,
        migration_id: persist::migrate::MigrationId,
        domain_id: persist::DomainId,
    ) -> Verdict {
        let mut metadata = Vec::new();
        for domain in self.scheduler.domains() {
            metadata.push(domain.storage().image().metadata().clone());
        }
        for (_, entry) in self.table.iter() {
            if let Body::Held(domain) = &entry.body {
                metadata.push(domain.storage().image().metadata().clone());
            }
        }
        migrate::answer_query(metadata.iter(), migration_id, domain_id)
    }

    /// Takes a disk to receive domain `domain_id` on: its own tombstone's,
    /// blanked, when the domain comes back to this machine (see
    /// `MigrationHost::take_spare`), or else a blank spare.
    pub fn take_spare(&mut self, domain_id: Option<DomainId>) -> Option<VirtioDisk> {
        if let Some(disk) = domain_id.and_then(|id| self.take_tombstone(id)) {
            return Some(disk);
        }
        if self.spares.is_empty() {
            return None;
        }
        Some(self.spares.remove(0))
    }

    /// Blanks the tombstone of domain `id`, if this machine holds one, and
    /// gives its disk. A disk that fails to blank stays in the table,
    /// refused with the reason.
    fn take_tombstone(&mut self, id: DomainId) -> Option<VirtioDisk> {
        let key = self.table.iter().find_map(|(key, entry)| {
            (entry.state == State::MovedAway && self.id_of(entry) == Some(id)).then_some(key)
        })?;
        let entry = self.table.remove(key)?;
        let Body::Held(domain) = entry.body else {
            return None;
        };
        let image = domain.into_storage().into_image();
        match migrate::discard(image) {
            Ok(disk) => {
                println!(
                    "[migrate] {} is coming back: its tombstone on disk {} is blanked to \
                     receive it",
                    entry.name, entry.disk_index
                );
                Some(disk)
            }
            Err(error) => {
                self.refuse(
                    entry.disk_index,
                    &entry.name,
                    format!("its tombstone could not be blanked: {error}"),
                );
                None
            }
        }
    }

    /// Gives back a spare disk, blank again.
    pub fn return_spare(&mut self, disk: VirtioDisk) {
        self.spares.push(disk);
    }

    /// The first spare (blank) disk, if any.
    pub fn first_spare(&mut self) -> Option<&mut VirtioDisk> {
        self.spares.first_mut()
    }
}

//! `fork NAME NEW [TAG]`: a new domain on a spare disk from another's state.
//!
//! The fork is written by persist (`Image::fork_to`, `Metadata::forked`):
//! the parent's pages, globals, suspension and clock (of its live state,
//! committed at a safe point first, or of one of its snapshots), a new
//! random ID, the new name, an empty mailbox and outbox, no message
//! numbers, and its generation one more than the parent's (guest-sdk's
//! `amber::generation()`, `AMBER_GENERATION` for WASI). Randomness is fresh
//! in the fork because the vm keeps none: every `random` call asks the
//! machine. A fork whose ports its running parent holds is made stopped:
//! `stop` the parent, then `start` the fork.

use alloc::boxed::Box;
use alloc::string::String;

use persist::{BlockDevice, DomainId, StoredStatus};
use vm::Platform;

use super::table::State;
use super::{DomainError, Domains, check_heap_room};
use crate::arch::timer;

/// What `fork` made.
#[derive(Debug, Clone)]
pub struct Forked {
    pub name: String,
    pub disk_index: usize,
    pub id: DomainId,
    /// The fork's generation (its parent's plus one).
    pub generation: u64,
    /// Pages copied from the parent's state.
    pub pages: u64,
    pub elapsed_us: u64,
    /// Made stopped because its running parent holds its ports.
    pub stopped_for_ports: bool,
    pub state: State,
}

impl Domains {
    /// `fork NAME NEW [TAG]`: a new domain `new` on the first spare disk,
    /// from `name`'s live state or its snapshot `tag`. Every check comes
    /// before the spare is taken.
    pub fn fork(
        &mut self,
        name: &str,
        new: &str,
        tag: Option<&str>,
    ) -> Result<Forked, DomainError> {
        persist::check_name(new).map_err(DomainError::InvalidName)?;
        if self.table.find(new).is_some() {
            return Err(DomainError::NameInUse { name: new.into() });
        }
        self.check_operable(name, "forked")?;
        let parent_runs = self.scheduler.domain(name).is_some();
        if tag.is_none() {
            self.reach_safe_point(name)?;
        }
        let image = self.image_of(name)?;
        let needed_blocks = image
            .export_block_count(tag)
            .map_err(super::snapshots::snapshot_error(name))?;
        let module_bytes = image.stats().module_len_bytes;
        let declares_ports = !image.metadata().network.listen.is_empty();
        check_heap_room(module_bytes)?;
        let Some(spare) = self.spares.first() else {
            return Err(DomainError::NoSpare);
        };
        let disk_index = spare.info().index;
        if spare.block_count() < needed_blocks {
            return Err(DomainError::SpareTooSmall {
                disk_index,
                blocks: spare.block_count(),
                needed_blocks,
            });
        }
        let stopped_for_ports = declares_ports && parent_runs;
        let status = stopped_for_ports.then_some(StoredStatus::Stopped);
        let mut id = [0u8; 16];
        self.platform.fill_random(&mut id);
        let id = DomainId::from_le_bytes(id);
        let started_ns = timer::uptime_ns();
        let spare = self.spares.remove(0);
        let parent = match self.image_of(name) {
            Ok(parent) => parent,
            Err(error) => {
                self.spares.insert(0, spare);
                return Err(error);
            }
        };
        let forked = parent
            .fork_to(tag, spare, id, new, status)
            .map_err(|error| DomainError::Format {
                disk_index,
                name: new.into(),
                error,
            })?;
        let elapsed_us = (timer::uptime_ns() - started_ns) / 1000;
        let generation = forked.metadata().generation();
        let pages = forked.stats().pages_stored;
        let domain = self
            .open_image(forked, None)
            .map_err(|reason| DomainError::CannotRun {
                name: new.into(),
                disk_index,
                reason: Box::new(reason),
            })?;
        self.admit(disk_index, domain);
        Ok(Forked {
            name: new.into(),
            disk_index,
            id,
            generation,
            pages,
            elapsed_us,
            stopped_for_ports,
            state: self.state_on_disk(disk_index),
        })
    }
}

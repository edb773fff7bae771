//! Disks whose newest commit is damaged: refused, kept, rolled back on request.
//!
//! persist never opens the older commit of such an image by itself
//! (`persist::Error::NewestCommitDamaged`). The kernel refuses the disk at
//! boot with one line that names both commits and the console command, keeps
//! the disk aside, and boots the rest. `rollback DISK` is the operator's
//! explicit word: `Image::open_rolling_back` discards the damaged commit,
//! records the rollback in the image, and the disk is then loaded as at
//! boot (so a domain on it runs, or is parked, as its state says).

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use persist::{Image, RollbackRecord, Unopened};

use super::Domains;
use super::table::State;
use crate::drivers::virtio_blk::VirtioDisk;

/// What `rollback DISK` did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The record the rollback wrote (persist always writes one).
    pub record: Option<RollbackRecord>,
    /// The sequence number of the commit that recorded the rollback.
    pub sequence: u64,
    /// The domain on the disk, as the restored commit names it.
    pub name: String,
    /// Its state once loaded again.
    pub state: State,
}

/// Why `rollback DISK` did nothing.
#[derive(Debug, Clone)]
pub enum RollbackError {
    /// The disk was not refused for a damaged newest commit.
    NotDamaged { disk_index: usize },
    /// persist refused the rollback, or it failed; the disk stays as it was.
    Image(persist::Error),
}

impl fmt::Display for RollbackError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDamaged { disk_index } => write!(
                formatter,
                "disk {disk_index} has no damaged commit to roll back past"
            ),
            Self::Image(error) => write!(formatter, "{error}"),
        }
    }
}

impl Domains {
    /// The state of what disk `disk_index` holds, once loaded.
    pub(super) fn state_on_disk(&self, disk_index: usize) -> State {
        self.table
            .iter()
            .find(|(_, entry)| entry.disk_index == disk_index)
            .map_or(State::Refused("not loaded".into()), |(_, entry)| {
                entry.state.clone()
            })
    }

    /// Refuses a disk whose image did not open, with the error's words. A
    /// disk whose newest commit is damaged over an intact one is kept for
    /// `rollback`, and its line says so.
    pub(super) fn refuse_unopened(&mut self, disk_index: usize, unopened: Unopened<VirtioDisk>) {
        let Unopened { error, device } = unopened;
        match &error {
            persist::Error::NewestCommitDamaged {
                intact_sequence, ..
            } => {
                let reason = format!(
                    "{error} (type 'rollback {disk_index}' to open commit {intact_sequence})"
                );
                self.refuse(disk_index, "", reason);
                self.damaged.push((disk_index, device));
            }
            _ => self.refuse(disk_index, "", error.to_string()),
        }
    }

    /// Rolls disk `disk_index` back past its damaged newest commit and
    /// loads it as at boot.
    pub fn roll_back(&mut self, disk_index: usize) -> Result<RolledBack, RollbackError> {
        let position = self
            .damaged
            .iter()
            .position(|(index, _)| *index == disk_index)
            .ok_or(RollbackError::NotDamaged { disk_index })?;
        let (_, disk) = self.damaged.remove(position);
        let image = match Image::open_rolling_back(disk) {
            Ok(image) => image,
            Err(unopened) => {
                self.damaged.push((disk_index, unopened.device));
                return Err(RollbackError::Image(unopened.error));
            }
        };
        let record = image.rollback_record();
        let sequence = image.sequence();
        let name = image.metadata().name.clone();
        let refused = self.table.iter().find_map(|(key, entry)| {
            (entry.disk_index == disk_index && matches!(entry.state, State::Refused(_)))
                .then_some(key)
        });
        if let Some(key) = refused {
            self.table.remove(key);
        }
        self.load_disk(image.into_device());
        let state = self.state_on_disk(disk_index);
        Ok(RolledBack {
            record,
            sequence,
            name,
            state,
        })
    }
}

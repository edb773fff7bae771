//! Named snapshots of domains: take, list, roll back to, delete.
//!
//! persist keeps the snapshots in the domain's image, sharing blocks with
//! the live state (`persist::Image::snapshot_*`). The kernel's part is the
//! safe point: a snapshot, or a deletion, is a commit of the image, so it
//! is made right after the domain has committed at a safe point and before
//! it runs again; then the image holds nothing staged and the snapshot is
//! exactly the state the domain was in. A rollback holds the domain (a
//! commit that still says running, so a power cut before the next one
//! leaves it running as it was), makes
//! the snapshot its live state in one commit (persist keeps identity and
//! messaging from the live state: `Metadata::rolled_back_to`),
//! and opens the disk again as at boot, so the domain runs on from the
//! snapshot with its listeners bound again and its old connections reset.

use alloc::string::String;
use alloc::vec::Vec;

use persist::{SnapshotId, SnapshotInfo};

use super::table::{Body, State};
use super::{DomainError, Domains, KernelDomain};
use crate::arch::{rtc, timer};

/// What `snapshot NAME [TAG]` took.
#[derive(Debug, Clone)]
pub struct SnapshotTaken {
    pub id: SnapshotId,
    pub tag: String,
    /// The commit that took it.
    pub sequence: u64,
    /// The domain's clock then, in nanoseconds.
    pub clock_ns: u64,
    /// Time spent committing the snapshot, in microseconds.
    pub elapsed_us: u64,
}

/// What `rollback NAME TAG` did.
#[derive(Debug, Clone)]
pub struct RolledBackTo {
    pub tag: String,
    /// The commit that made the snapshot the live state.
    pub sequence: u64,
    /// The domain's clock now (the snapshot's), in nanoseconds.
    pub clock_ns: u64,
    /// Its state once opened again.
    pub state: State,
}

impl Domains {
    /// `snapshot NAME [TAG]`: takes a snapshot of `name` at its next safe
    /// point (a running domain commits first; a stopped one is at its last
    /// commit). Without a tag it is called `snap-N`, the first free N.
    pub fn snapshot(
        &mut self,
        name: &str,
        tag: Option<&str>,
    ) -> Result<SnapshotTaken, DomainError> {
        self.check_operable(name, "snapshotted")?;
        self.reach_safe_point(name)?;
        let image = self.image_of(name)?;
        let tag = match tag {
            Some(tag) => String::from(tag),
            None => free_tag(image.snapshot_tags()),
        };
        let created = rtc::read_unix_time_s().unwrap_or(0);
        let started_ns = timer::uptime_ns();
        let id = image
            .snapshot_create(&tag, created)
            .map_err(snapshot_error(name))?;
        Ok(SnapshotTaken {
            id,
            tag,
            sequence: image.sequence(),
            clock_ns: image.metadata().clock_ns,
            elapsed_us: (timer::uptime_ns() - started_ns) / 1000,
        })
    }

    /// `snapshots NAME`: the domain's snapshots, oldest first.
    pub fn snapshots(&mut self, name: &str) -> Result<Vec<SnapshotInfo>, DomainError> {
        self.image_of(name)?
            .snapshots()
            .map_err(snapshot_error(name))
    }

    /// `snapshot-delete NAME TAG`: forgets a snapshot and gives back the
    /// blocks only it held, as one commit at the domain's safe point.
    pub fn snapshot_delete(&mut self, name: &str, tag: &str) -> Result<u64, DomainError> {
        self.check_operable(name, "changed")?;
        self.reach_safe_point(name)?;
        self.image_of(name)?
            .snapshot_delete(tag)
            .map(|stats| stats.sequence)
            .map_err(snapshot_error(name))
    }

    /// `rollback NAME TAG`: the domain runs on from snapshot `tag`. A
    /// running domain is committed (still as running) and taken out of the
    /// rotation first, and runs again after; a
    /// stopped one stays stopped unless the snapshot was taken running; an
    /// ended one runs again if the snapshot was. If the rollback fails the
    /// domain is opened again as it was.
    pub fn roll_back_to(&mut self, name: &str, tag: &str) -> Result<RolledBackTo, DomainError> {
        if !self
            .image_of(name)?
            .snapshot_tags()
            .any(|known| known == tag)
        {
            return Err(snapshot_error(name)(persist::Error::UnknownSnapshot {
                tag: tag.into(),
            }));
        }
        let key = self.table.key_of(name).ok_or_else(|| self.unknown(name))?;
        let state = self
            .table
            .get_mut(key)
            .map(|entry| entry.state.clone())
            .ok_or_else(|| self.unknown(name))?;
        let was_running = state == State::Running;
        match state {
            // Committed as running, so that a power cut before the rollback's
            // commit leaves it running as it was, not stopped.
            State::Running => {
                self.hold(name, KernelDomain::hold_for_migration, State::Stopped)?;
            }
            State::Stopped => {}
            State::Ended(_) => {
                let (_, domain) = self
                    .scheduler
                    .remove(name)
                    .ok_or_else(|| self.unknown(name))?;
                if let Some(entry) = self.table.get_mut(key) {
                    entry.body = Body::Held(alloc::boxed::Box::new(domain));
                }
            }
            state => {
                return Err(DomainError::NotNow {
                    name: name.into(),
                    state,
                    operation: "rolled back",
                });
            }
        }
        let Some(entry) = self.table.remove(key) else {
            return Err(self.unknown(name));
        };
        let Body::Held(domain) = entry.body else {
            return Err(self.unknown(name));
        };
        let mut image = domain.into_storage().into_image();
        // The log is the domain's, kept across the rollback: it says where
        // the domain went back to, on the clock it had before.
        let note = alloc::format!("amber: rolled back to snapshot '{tag}'");
        image.append_log(vm::log_line(image.metadata().clock_ns, "", &note).as_bytes());
        let applied = image.snapshot_apply(tag);
        let clock_ns = image.metadata().clock_ns;
        self.load_disk(image.into_device());
        let opened = self.state_on_disk(entry.disk_index);
        if opened == State::Stopped && was_running {
            self.start(name)?;
        }
        let sequence = applied.map_err(snapshot_error(name))?.sequence;
        Ok(RolledBackTo {
            tag: tag.into(),
            sequence,
            clock_ns,
            state: self.state_on_disk(entry.disk_index),
        })
    }

    /// Refuses `operation` on a domain that is neither running, stopped
    /// nor ended, naming its state (an unknown name says so).
    pub(super) fn check_operable(
        &self,
        name: &str,
        operation: &'static str,
    ) -> Result<(), DomainError> {
        let entry = self.table.find(name).ok_or_else(|| self.unknown(name))?;
        match &entry.state {
            State::Running | State::Stopped | State::Ended(_) => Ok(()),
            state => Err(DomainError::NotNow {
                name: name.into(),
                state: state.clone(),
                operation,
            }),
        }
    }

    /// Commits a running domain at a safe point (see
    /// [`Domains::commit_at_safe_point`]); a domain out of the rotation is
    /// at its last commit already.
    pub(super) fn reach_safe_point(&mut self, name: &str) -> Result<(), DomainError> {
        if self.scheduler.domain(name).is_none() {
            return Ok(());
        }
        self.commit_at_safe_point(name, KernelDomain::request_checkpoint)
    }
}

/// `snap-N` for the first N no snapshot in `taken` is called.
fn free_tag<'a>(taken: impl Iterator<Item = &'a str>) -> String {
    let taken: Vec<&str> = taken.collect();
    (1..)
        .map(|number| alloc::format!("snap-{number}"))
        .find(|tag| !taken.contains(&tag.as_str()))
        .unwrap_or_default()
}

pub(super) fn snapshot_error(name: &str) -> impl FnOnce(persist::Error) -> DomainError + '_ {
    move |error| DomainError::Snapshot {
        name: name.into(),
        error,
    }
}

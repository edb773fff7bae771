//! The domain table: one entry per domain, keyed by a stable ID, with its state.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;

use persist::Image;
use vm::{DomainStatus, PauseReason};

use super::KernelDomain;
use crate::drivers::virtio_blk::{Failure, VirtioDisk};

/// A domain's key in the table: given once per boot, never reused, and the
/// handle the scheduler keeps with the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DomainKey(u32);

/// Where a domain is in its life, as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// In the rotation, running or waiting.
    Running,
    /// Stopped by an operator, its state committed; `start` resumes it.
    Stopped,
    /// Held out of the rotation by a pause; `start` retries its commit.
    Paused(PauseReason),
    /// Held out of the rotation because its disk went out of service (a
    /// request timed out, or a write or a flush failed): nothing more can
    /// be committed on it, and its last commit is what a reboot on a
    /// healthy copy of the disk resumes from.
    DiskFailed(Failure),
    /// Held for a migration's final round, committed as running.
    Migrating,
    /// Handed over to another machine: its image holds the hand-over record.
    MovedAway,
    /// A complete incoming copy waiting for its source's word.
    Parked,
    /// Exited, trapped or killed, for good.
    Ended(DomainStatus),
    /// A disk holding something that could not be opened as a domain, and
    /// why, in plain words (the entry's name is the domain's when the image
    /// could be read that far).
    Refused(String),
}

impl State {
    /// The state of a domain the vm opened (or halted) with `status`.
    pub fn of_status(status: &DomainStatus) -> State {
        match status {
            DomainStatus::Running => State::Running,
            DomainStatus::Stopped => State::Stopped,
            DomainStatus::MovedAway => State::MovedAway,
            other => State::Ended(other.clone()),
        }
    }
}

/// How a state reads in `ps` (and in boot and end lines).
impl fmt::Display for State {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Running => write!(formatter, "running"),
            State::Stopped => write!(formatter, "stopped"),
            State::Paused(reason) => write!(formatter, "paused: {reason}"),
            State::DiskFailed(failure) => write!(formatter, "paused: disk failed: {failure}"),
            State::Migrating => write!(formatter, "migrating"),
            State::MovedAway => write!(formatter, "moved away"),
            State::Parked => write!(formatter, "parked (incoming)"),
            State::Ended(status) => write!(formatter, "{}", Ended(status)),
            State::Refused(reason) => write!(formatter, "refused: {reason}"),
        }
    }
}

/// How an ended domain's status reads.
#[derive(Debug)]
struct Ended<'a>(&'a DomainStatus);

impl fmt::Display for Ended<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            DomainStatus::Running => write!(formatter, "running"),
            DomainStatus::Stopped => write!(formatter, "stopped"),
            DomainStatus::Exited(code) => write!(formatter, "exited({code})"),
            DomainStatus::Trapped(reason) => write!(formatter, "trapped: {reason}"),
            DomainStatus::MovedAway => write!(formatter, "moved away"),
        }
    }
}

/// What an entry holds besides its state.
#[derive(Debug)]
pub(super) enum Body {
    /// The domain is in the scheduler, under this entry's key.
    Scheduled,
    /// The domain is out of the rotation (stopped, paused, migrating, moved).
    Held(Box<KernelDomain>),
    /// An incoming copy, not yet a domain.
    Parked(Box<Image<VirtioDisk>>),
    /// Nothing: a refused disk.
    Empty,
}

/// One domain (or refused disk) and the disk it lives on.
#[derive(Debug)]
pub struct Entry {
    /// The domain's name; for a refused disk, the name its image gives
    /// when it is readable that far, else empty.
    pub name: String,
    pub disk_index: usize,
    pub state: State,
    pub(super) body: Body,
}

impl Entry {
    /// Whether `name` is this entry's (a refused disk answers to no name).
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name && !matches!(self.state, State::Refused(_))
    }
}

/// Every domain the kernel knows, in the order it learned of them.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<DomainKey, Entry>,
    next_key: u32,
}

impl Table {
    /// Adds an entry under a new key.
    pub fn insert(&mut self, entry: Entry) -> DomainKey {
        let key = DomainKey(self.next_key);
        self.next_key = self.next_key.wrapping_add(1);
        self.entries.insert(key, entry);
        key
    }

    pub fn get_mut(&mut self, key: DomainKey) -> Option<&mut Entry> {
        self.entries.get_mut(&key)
    }

    pub fn remove(&mut self, key: DomainKey) -> Option<Entry> {
        self.entries.remove(&key)
    }

    /// The key of the entry called `name`.
    pub fn key_of(&self, name: &str) -> Option<DomainKey> {
        self.iter()
            .find(|(_, entry)| entry.is_named(name))
            .map(|(key, _)| key)
    }

    /// The entry called `name`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.values().find(|entry| entry.is_named(name))
    }

    pub fn iter(&self) -> impl Iterator<Item = (DomainKey, &Entry)> {
        self.entries.iter().map(|(key, entry)| (*key, entry))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (DomainKey, &mut Entry)> {
        self.entries.iter_mut().map(|(key, entry)| (*key, entry))
    }

    /// How many entries are in `state`-like states (for `stats`).
    pub fn count(&self, mut is_counted: impl FnMut(&State) -> bool) -> usize {
        self.entries
            .values()
            .filter(|entry| is_counted(&entry.state))
            .count()
    }
}

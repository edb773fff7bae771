//! Commits: periodic, on `checkpoint [NAME]`, and for shutdown.

use alloc::string::String;
use alloc::vec::Vec;

use super::{DomainError, Domains, SHUTDOWN_GRACE_NS};
use crate::arch::timer;
use crate::println;

/// When `checkpoint NAME` commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTiming {
    /// It was at a safe point: committed now.
    Now,
    /// It computes: it commits at its next safe point.
    AtNextSafePoint,
}

/// What `checkpoint` (of every domain) did.
#[derive(Debug)]
pub struct CheckpointReport {
    /// How many committed at once.
    pub committed: usize,
    /// How many were asked.
    pub asked: usize,
    /// The domains whose commit failed, with why.
    pub failures: Vec<(String, vm::Error)>,
}

impl Domains {
    /// Asks every domain for a checkpoint; reports failures (a full disk or
    /// a disk out of service pauses its domain and says so once).
    pub(super) fn checkpoint_all(&mut self) {
        for (name, result) in self.scheduler.checkpoint_all() {
            match result {
                Err(vm::Error::DiskFull { .. }) | Ok(_) => {}
                // hold_paused says it, once, naming the disk and why.
                Err(_) if self.disk_failure(&name).is_some() => {}
                Err(error) => {
                    let name = super::platform::shown_name(&name);
                    println!("[{name}] checkpoint failed: {error}");
                }
            }
        }
        self.hold_paused();
    }

    /// `checkpoint`: commits every domain now, or at its next safe point.
    pub fn checkpoint_every_domain(&mut self) -> CheckpointReport {
        let results = self.scheduler.checkpoint_all();
        let committed = results
            .iter()
            .filter(|(_, result)| matches!(result, Ok(true)))
            .count();
        let asked = results.len();
        let failures = results
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|error| (name, error)))
            .collect();
        CheckpointReport {
            committed,
            asked,
            failures,
        }
    }

    /// `checkpoint NAME`: commits now, or at the domain's next safe point.
    pub fn checkpoint(&mut self, name: &str) -> Result<CommitTiming, DomainError> {
        let domain = self.scheduled_mut(name)?;
        match domain.request_checkpoint() {
            Ok(true) => Ok(CommitTiming::Now),
            Ok(false) => Ok(CommitTiming::AtNextSafePoint),
            Err(error) => Err(DomainError::CheckpointFailed {
                name: name.into(),
                error,
            }),
        }
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
            .filter(|domain| domain.is_checkpoint_pending())
            .map(|domain| domain.name())
    }
}

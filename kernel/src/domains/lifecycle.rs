//! Lifecycle verbs: run, stop, start, kill, hold for migration, move away.

use alloc::boxed::Box;
use alloc::string::{String, ToString};

use persist::Image;
use vm::{CompiledModule, DomainStatus, PauseReason, SchedulerEvent, Wake};

use super::boot::RefusalLine;
use super::table::{Body, DomainKey, Entry, State};
use super::{DomainError, Domains, KernelDomain, SHUTDOWN_GRACE_NS};
use crate::arch::timer;
use crate::drivers::virtio_blk::{Failure, VirtioDisk};
use crate::println;

/// What `start` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A stopped domain goes on where it stopped.
    Resumed,
    /// A paused domain's commit went through; it runs again.
    Unpaused,
}

impl Domains {
    /// Puts a freshly opened (or resumed) domain where its status says it
    /// belongs: the rotation, or held stopped. Returns its key.
    pub(super) fn admit(&mut self, disk_index: usize, domain: KernelDomain) -> DomainKey {
        let state = State::of_status(&domain.status());
        let name = String::from(domain.name());
        log::info!("disk {disk_index}: domain {name} ({state})");
        if state == State::Stopped {
            let body = Body::Held(Box::new(domain));
            return self.table.insert(Entry {
                name,
                disk_index,
                state,
                body,
            });
        }
        let key = self.table.insert(Entry {
            name: name.clone(),
            disk_index,
            state,
            body: Body::Scheduled,
        });
        if let Err(error) = self.scheduler.add(domain, key) {
            let reason = error.to_string();
            println!("{}", RefusalLine(disk_index, &name, &reason));
            if let Some(entry) = self.table.get_mut(key) {
                entry.state = State::Refused(reason);
                entry.body = Body::Empty;
            }
        }
        key
    }

    /// Whether domain `name` is in the rotation and has not ended.
    pub fn is_running(&self, name: &str) -> bool {
        self.table
            .find(name)
            .is_some_and(|entry| entry.state == State::Running)
    }

    /// Sets aside a stopped domain that another machine owns now: its image
    /// here holds the hand-over record and never runs again, but answers
    /// the target's questions after a reconnect.
    pub fn mark_moved(&mut self, name: &str) {
        if let Some(entry) = self.held_mut(name)
            && matches!(entry.state, State::Stopped | State::Migrating)
        {
            entry.state = State::MovedAway;
        }
    }

    /// Runs the domain of an image that just became this machine's (an
    /// incoming migration); returns its name. `compiled` is its module,
    /// when compiled already ([`Domains::compile`]).
    pub fn adopt(
        &mut self,
        image: Image<VirtioDisk>,
        compiled: Option<CompiledModule>,
    ) -> Result<String, DomainError> {
        let disk_index = image.device().info().index;
        let domain = self.open_image(image, compiled)?;
        let name = String::from(domain.name());
        let is_stopped = domain.status() == DomainStatus::Stopped;
        self.admit(disk_index, domain);
        if is_stopped {
            self.start(&name)?;
        }
        Ok(name)
    }

    /// `stop NAME`: commits the domain with status stopped, keeping its
    /// state, and takes it out of the rotation. A domain in the middle of a
    /// computation runs on (with the others) until its next safe point.
    pub fn stop(&mut self, name: &str) -> Result<(), DomainError> {
        self.hold(name, KernelDomain::stop, State::Stopped)
    }

    /// Holds a domain for a migration's final round: committed at a safe
    /// point with the status running (a reboot before the hand-over runs it
    /// here again) and out of the rotation until `start`.
    ///
    /// Then it waits (a while, running the others) for the receivers of
    /// messages it sent to commit them: the copies in its outbox go with
    /// it, and could no longer be delivered again here after a power cut.
    pub fn hold_for_migration(&mut self, name: &str) -> Result<(), DomainError> {
        self.hold(name, KernelDomain::hold_for_migration, State::Migrating)?;
        let unknown = || DomainError::NoSuchDomain { name: name.into() };
        let key = self.table.key_of(name).ok_or_else(unknown)?;
        let entry = self.table.get_mut(key).ok_or_else(unknown)?;
        // Out of its entry while the others run, and back in below.
        let Body::Held(mut domain) = core::mem::replace(&mut entry.body, Body::Empty) else {
            return Err(unknown());
        };
        let deadline = timer::uptime_ns() + SHUTDOWN_GRACE_NS;
        loop {
            match self.scheduler.settle_outbox_of(&mut *domain) {
                Ok(true) => break,
                Ok(false) if timer::uptime_ns() < deadline => self.run_scheduler_round(),
                // The migration goes on: only a power cut here before the
                // receivers' next commits would lose the messages.
                Ok(false) => {
                    log::warn!(
                        "[migrate] {name}: {} messages it sent are not yet committed by \
                         their receivers",
                        domain.outbox_len()
                    );
                    break;
                }
                Err(error) => {
                    log::warn!("[migrate] {name}: a receiver of its messages: {error}");
                    break;
                }
            }
        }
        if let Some(entry) = self.table.get_mut(key) {
            entry.body = Body::Held(domain);
        }
        Ok(())
    }

    /// Commits `name` at its next safe point with `commit` and takes it out
    /// of the rotation, held in `state`.
    pub(super) fn hold(
        &mut self,
        name: &str,
        commit: fn(&mut KernelDomain) -> Result<bool, vm::Error>,
        state: State,
    ) -> Result<(), DomainError> {
        self.commit_at_safe_point(name, commit)?;
        self.take_out_of_rotation(name, state)
    }

    /// Runs `commit` on the scheduled domain `name` until it reports that
    /// it committed at a safe point, running the others (and it) meanwhile
    /// for at most the shutdown grace period.
    pub(super) fn commit_at_safe_point(
        &mut self,
        name: &str,
        commit: fn(&mut KernelDomain) -> Result<bool, vm::Error>,
    ) -> Result<(), DomainError> {
        let deadline = timer::uptime_ns() + SHUTDOWN_GRACE_NS;
        loop {
            match commit(self.scheduled_mut(name)?) {
                Ok(true) => return Ok(()),
                Ok(false) if timer::uptime_ns() < deadline => self.run_scheduler_round(),
                Ok(false) => {
                    return Err(DomainError::NoSafePoint {
                        name: name.into(),
                        grace_s: SHUTDOWN_GRACE_NS / 1_000_000_000,
                    });
                }
                Err(error) => {
                    return Err(DomainError::Vm {
                        name: name.into(),
                        error,
                    });
                }
            }
        }
    }

    /// Moves a scheduled domain into its entry, held in `state`.
    fn take_out_of_rotation(&mut self, name: &str, state: State) -> Result<(), DomainError> {
        let (key, domain) = self
            .scheduler
            .remove(name)
            .ok_or_else(|| self.unknown(name))?;
        let Some(entry) = self.table.get_mut(key) else {
            return Err(DomainError::NoSuchDomain { name: name.into() });
        };
        // Out of the rotation (stopped, held for a migration, paused), its
        // listeners and connections go: a resumed domain binds its ports
        // again, and its old connections read as reset.
        forget_sockets(domain.id());
        entry.state = state;
        entry.body = Body::Held(Box::new(domain));
        Ok(())
    }

    /// `kill NAME`: ends a running or stopped domain for good; the end is
    /// committed, so it stays ended across reboots.
    pub fn kill(&mut self, name: &str) -> Result<(), DomainError> {
        let status = DomainStatus::Trapped(String::from("killed from the console"));
        let key = self.table.key_of(name).ok_or_else(|| self.unknown(name))?;
        let Some(entry) = self.table.get_mut(key) else {
            return Err(self.unknown(name));
        };
        match entry.state {
            State::Running => {
                if let Some(domain) = self.scheduler.domain_mut(name) {
                    domain.end(status.clone());
                    forget_sockets(domain.id());
                }
                entry.state = State::Ended(status);
                Ok(())
            }
            State::Stopped | State::Migrating => {
                let Some(Entry {
                    disk_index,
                    body: Body::Held(mut domain),
                    ..
                }) = self.table.remove(key)
                else {
                    return Err(self.unknown(name));
                };
                domain.end(status);
                forget_sockets(domain.id());
                self.admit(disk_index, *domain);
                Ok(())
            }
            State::Ended(_) | State::MovedAway => Err(DomainError::HasEnded { name: name.into() }),
            State::DiskFailed(failure) => Err(DomainError::DiskFailed {
                name: name.into(),
                disk_index: entry.disk_index,
                failure,
            }),
            State::Paused(_) | State::Parked | State::Refused(_) => Err(self.unknown(name)),
        }
    }

    /// `start NAME`: resumes a stopped domain where it stopped, or retries
    /// the commit a paused domain waits for and runs it on if that works.
    pub fn start(&mut self, name: &str) -> Result<Started, DomainError> {
        let key = self.table.key_of(name);
        let entry = key.and_then(|key| self.table.get_mut(key));
        let Some((key, entry)) = key.zip(entry) else {
            return Err(DomainError::NoSuchDomain { name: name.into() });
        };
        let (started, result) = match (&entry.state, &mut entry.body) {
            (State::Paused(_), Body::Held(domain)) => {
                (Started::Unpaused, domain.resume_from_pause())
            }
            (State::Stopped | State::Migrating, Body::Held(domain)) => {
                (Started::Resumed, domain.resume())
            }
            (State::DiskFailed(failure), _) => {
                return Err(DomainError::DiskFailed {
                    name: name.into(),
                    disk_index: entry.disk_index,
                    failure: *failure,
                });
            }
            (_, Body::Scheduled) => return Err(DomainError::NotStopped { name: name.into() }),
            _ => return Err(DomainError::NoSuchDomain { name: name.into() }),
        };
        if let Err(error) = result {
            let name = name.into();
            return Err(match started {
                Started::Unpaused => DomainError::StillPaused { name, error },
                Started::Resumed => DomainError::Vm { name, error },
            });
        }
        if let Some(Entry {
            disk_index,
            body: Body::Held(domain),
            ..
        }) = self.table.remove(key)
        {
            self.admit(disk_index, *domain);
        }
        Ok(started)
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

    pub(super) fn run_scheduler_round(&mut self) {
        for event in self.scheduler.run_round() {
            match event {
                SchedulerEvent::Halted {
                    handle,
                    name,
                    status,
                } => {
                    // A trap on a failed disk (a page that could not be
                    // read in) is the disk's failure, not the domain's end:
                    // hold_paused pauses it with its own line below, and
                    // the end was never committed.
                    if matches!(status, DomainStatus::Trapped(_))
                        && self.disk_failure(&name).is_some()
                    {
                        continue;
                    }
                    // The vm has already printed a trap with its reason on
                    // the domain's output (`[NAME] error: trapped: ...`): a
                    // second line would report one end twice.
                    let state = State::of_status(&status);
                    if let Some(domain) = self.scheduler.domain(&name) {
                        forget_sockets(domain.id());
                    }
                    if !matches!(status, DomainStatus::Trapped(_)) {
                        let name = super::platform::shown_name(&name);
                        println!("[{name}] {state}");
                    }
                    if let Some(entry) = self.table.get_mut(handle) {
                        entry.state = state;
                    }
                }
                // hold_paused says it, for pauses at periodic checkpoints too.
                SchedulerEvent::Paused { .. } => {}
            }
        }
        self.hold_paused();
    }

    /// Moves domains that paused themselves (a commit found the disk full)
    /// and domains whose disk went out of service out of the rotation, with
    /// one console line each.
    pub(super) fn hold_paused(&mut self) {
        self.hold_failed();
        loop {
            let paused = self.scheduler.domains().find_map(|domain| {
                domain
                    .pause_reason()
                    .map(|reason| (String::from(domain.name()), reason))
            });
            let Some((name, reason)) = paused else {
                return;
            };
            if self
                .take_out_of_rotation(&name, State::Paused(reason))
                .is_err()
            {
                return;
            }
            let disk_index = self.table.find(&name).map_or(0, |entry| entry.disk_index);
            if reason == PauseReason::DiskFull {
                println!(
                    "{name}: paused: disk full (disk {disk_index}); its last commit is intact; \
                     `start {name}` retries the commit"
                );
            }
        }
    }

    /// Why the disk of domain `name`, in the rotation, is out of service,
    /// if it is.
    pub(super) fn disk_failure(&self, name: &str) -> Option<Failure> {
        let domain = self.scheduler.domain(name)?;
        domain.storage().image().device().failure()
    }

    /// Takes every domain in the rotation whose disk went out of service
    /// out of it, paused with one console line naming the domain, the disk
    /// and the failure. Its last commit is intact on the disk (a commit
    /// writes its superblock only after a flush that worked), and nothing
    /// more is tried there; the other domains run on.
    fn hold_failed(&mut self) {
        loop {
            let failed = self.scheduler.domains().find_map(|domain| {
                let failure = domain.storage().image().device().failure()?;
                Some((String::from(domain.name()), failure))
            });
            let Some((name, failure)) = failed else {
                return;
            };
            if self
                .take_out_of_rotation(&name, State::DiskFailed(failure))
                .is_err()
            {
                return;
            }
            let disk_index = self.table.find(&name).map_or(0, |entry| entry.disk_index);
            println!(
                "{name}: paused: disk {disk_index} failed: {failure}; the disk is out of service, \
                 its last commit is intact; reboot with a healthy copy of the disk to resume"
            );
        }
    }

    /// The domain `name` in the rotation, for an operation that needs it
    /// there.
    pub(super) fn scheduled_mut(&mut self, name: &str) -> Result<&mut KernelDomain, DomainError> {
        if self.scheduler.domain(name).is_none() {
            return Err(self.unknown(name));
        }
        self.scheduler
            .domain_mut(name)
            .ok_or_else(|| DomainError::NoSuchDomain { name: name.into() })
    }

    /// The entry of `name` when it holds its domain out of the rotation.
    pub(super) fn held_mut(&mut self, name: &str) -> Option<&mut Entry> {
        let key = self.table.key_of(name)?;
        self.table
            .get_mut(key)
            .filter(|entry| matches!(entry.body, Body::Held(_)))
    }

    /// Why `name` is not in the rotation.
    pub(super) fn unknown(&self, name: &str) -> DomainError {
        let name = String::from(name);
        match self.table.find(&name).map(|entry| &entry.state) {
            Some(State::Stopped | State::Migrating) => DomainError::IsStopped { name },
            Some(State::Paused(_) | State::DiskFailed(_)) => DomainError::IsPaused { name },
            _ => DomainError::NoSuchDomain { name },
        }
    }
}

/// Frees every listener and connection of the domain `id` (it left the
/// rotation or ended).
fn forget_sockets(id: vm::DomainId) {
    use vm::net::Network;
    crate::net::domain_sockets::NETWORK.forget_domain(id);
}

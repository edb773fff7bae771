//! Round-robin scheduling of many domains with a fuel slice each.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::domain::{Domain, PauseReason, RunOutcome, Wake};
use crate::error::Error;
use crate::storage::{DomainId, DomainStatus, MailboxMessage};
use abi::{MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, StatusCode};

/// Something the embedder may want to print or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerEvent {
    /// A domain exited or trapped.
    Ended { name: String, status: DomainStatus },
    /// A domain paused itself in its slice (a commit found its disk full);
    /// it stays in the rotation but does not run until resumed.
    Paused { name: String, reason: PauseReason },
}

/// Runs domains in turn, one fuel slice each per round, and carries their
/// messages. It owns no clock: `Domain::wake` says when a waiting domain wants
/// to run, and the embedder idles until the earliest (`next_wake`).
#[derive(Debug)]
pub struct Scheduler {
    domains: Vec<Domain>,
    fuel_slice: u64,
}

/// Fuel per slice: about 10 us of wasm on the 2-core development machine
/// (measured when the scheduler was written).
pub const DEFAULT_FUEL_SLICE: u64 = 10_000;

impl Scheduler {
    /// A scheduler giving each runnable domain `fuel_slice` per round.
    pub fn new(fuel_slice: u64) -> Self {
        Self {
            domains: Vec::new(),
            fuel_slice,
        }
    }

    /// Adds a domain; names and IDs must be unique.
    pub fn add(&mut self, domain: Domain) -> Result<(), Error> {
        let is_duplicate = self
            .domains
            .iter()
            .any(|other| other.name() == domain.name() || other.id() == domain.id());
        if is_duplicate {
            return Err(Error::DuplicateDomain(domain.name().into()));
        }
        self.domains.push(domain);
        let added = self.domains.len() - 1;
        for other in 0..added {
            self.redeliver_between(other, added);
            self.redeliver_between(added, other);
        }
        Ok(())
    }

    /// Asks the receivers of the messages domain `name` sent and they have
    /// not committed to commit now (or at their next blocking call), and
    /// says whether none is left. A domain about to migrate waits for this:
    /// once it runs elsewhere, it can no longer deliver again what a power
    /// cut takes from receivers here.
    pub fn settle_outbox(&mut self, name: &str) -> Result<bool, Error> {
        let index = self
            .domains
            .iter()
            .position(|domain| domain.name() == name)
            .ok_or(Error::NoSuchDomain)?;
        let mut sender = self.domains.remove(index);
        let result = self.settle_outbox_of(&mut sender);
        self.domains.insert(index, sender);
        result
    }

    /// [`Scheduler::settle_outbox`] for a domain held out of the scheduler
    /// (stopped or paused for a migration); receivers are the scheduler's.
    pub fn settle_outbox_of(&mut self, sender: &mut Domain) -> Result<bool, Error> {
        self.announce_commits();
        let from = sender.id();
        for to in sender.outbox().receivers() {
            let Some(receiver) = self.domains.iter().position(|domain| domain.id() == to) else {
                continue;
            };
            self.domains[receiver].request_checkpoint()?;
            let committed = self.domains[receiver].committed_from(from);
            sender.outbox_mut().acknowledge(to, committed);
        }
        Ok(sender.outbox().is_empty())
    }

    /// Delivers the messages in `sender`'s outbox that `receiver` has not
    /// accepted (since its last commit, as far as a power cut is
    /// concerned), in order. A receiver that cannot run keeps nothing: the
    /// messages stay in the outbox.
    fn redeliver_between(&mut self, sender: usize, receiver: usize) {
        if self.domains[receiver].wake() == Wake::Never {
            return;
        }
        self.acknowledge(sender, receiver);
        let from = self.domains[sender].id();
        let to = self.domains[receiver].id();
        let accepted = self.domains[receiver].accepted_from(from);
        let lost = self.domains[sender].outbox().after(to, accepted);
        let Some(&(first, _)) = lost.first() else {
            return;
        };
        let count = lost.len();
        for (sequence, bytes) in lost {
            let message = MailboxMessage { from, bytes };
            self.domains[receiver].accept_numbered(message, sequence, true);
        }
        let line = format!(
            "delivered again from its sender's outbox: {count} messages from {from} \
             (numbers {first} on), lost since the last commit"
        );
        self.domains[receiver].log_info(&line);
    }

    /// Asks `receiver` to commit, for the copies `sender` keeps: now if it
    /// is at a safe point (then `sender` learns of it at once), else at its
    /// next blocking call. A failed commit is left to the next checkpoint
    /// to report (the embedder's `checkpoint_all`); a full disk pauses it.
    fn ask_to_commit(&mut self, sender: usize, receiver: usize) {
        if let Ok(true) = self.domains[receiver].request_checkpoint() {
            self.acknowledge(sender, receiver);
        }
    }

    /// Drops from `sender`'s outbox what `receiver`'s last commit holds.
    fn acknowledge(&mut self, sender: usize, receiver: usize) {
        let from = self.domains[sender].id();
        let to = self.domains[receiver].id();
        let committed = self.domains[receiver].committed_from(from);
        self.domains[sender].outbox_mut().acknowledge(to, committed);
    }

    /// Tells the senders of every domain that committed since the last call
    /// what the commit holds.
    fn announce_commits(&mut self) {
        for receiver in 0..self.domains.len() {
            if self.domains[receiver].take_commit_notice() {
                self.announce_commit_of(receiver);
            }
        }
    }

    fn announce_commit_of(&mut self, receiver: usize) {
        let to = self.domains[receiver].id();
        let senders: Vec<DomainId> = self.domains[receiver]
            .record()
            .accepted
            .keys()
            .copied()
            .collect();
        for from in senders {
            if let Some(sender) = self.domains.iter().position(|domain| domain.id() == from)
                && sender != receiver
                && self.domains[sender].outbox().waiting_for(to).0 > 0
            {
                self.acknowledge(sender, receiver);
            }
        }
    }

    /// The domains, in the order they were added.
    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// The domains, mutably (for operator commands).
    pub fn domains_mut(&mut self) -> &mut [Domain] {
        &mut self.domains
    }

    /// The domain named `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|domain| domain.name() == name)
    }

    /// The domain named `name`, mutably (for operator commands).
    pub fn domain_mut(&mut self, name: &str) -> Option<&mut Domain> {
        self.domains.iter_mut().find(|domain| domain.name() == name)
    }

    /// Takes the domain named `name` out of the rotation.
    pub fn remove(&mut self, name: &str) -> Option<Domain> {
        let index = self
            .domains
            .iter()
            .position(|domain| domain.name() == name)?;
        Some(self.domains.remove(index))
    }

    /// Takes the domains out (to reopen their storage, for instance).
    pub fn into_domains(self) -> Vec<Domain> {
        self.domains
    }

    /// Gives every runnable domain one slice. Returns what ended.
    pub fn run_round(&mut self) -> Vec<SchedulerEvent> {
        let mut events = Vec::new();
        // Commits made outside a slice (checkpoints, operator commands).
        self.announce_commits();
        for index in 0..self.domains.len() {
            if self.domains[index].wake() != Wake::Now {
                continue;
            }
            let outcome = self.domains[index].run(self.fuel_slice);
            if self.domains[index].take_commit_notice() {
                self.announce_commit_of(index);
            }
            if let Some(reason) = self.domains[index].pause_reason() {
                events.push(SchedulerEvent::Paused {
                    name: self.domains[index].name().into(),
                    reason,
                });
            }
            match outcome {
                RunOutcome::Preempted | RunOutcome::Waiting => {}
                RunOutcome::Send { target, message } => {
                    let status = self.deliver(index, &target, message);
                    self.domains[index].reply_to_send(status);
                }
                RunOutcome::Ended(status) => events.push(SchedulerEvent::Ended {
                    name: self.domains[index].name().into(),
                    status,
                }),
            }
        }
        events
    }

    /// Delivers `bytes` from domain `sender` to the domain named `target`,
    /// or whose ID `target` spells as 32 hex digits (most significant
    /// first) when no name matches, numbered for exactly-once delivery.
    ///
    /// The message goes into the receiver's mailbox in memory; the sender
    /// keeps a copy in its outbox until the receiver commits (see
    /// `crate::outbox`). A sender whose copies for one receiver fill
    /// [`MAX_OUTBOX_MESSAGES`] or [`MAX_OUTBOX_BYTES`] hears `MailboxFull` until the
    /// receiver commits, which it is asked to do halfway there.
    fn deliver(&mut self, sender: usize, target: &[u8], bytes: Vec<u8>) -> StatusCode {
        let by_name = self
            .domains
            .iter()
            .position(|domain| domain.name().as_bytes() == target);
        let by_id = || {
            let id = parse_id(target)?;
            self.domains.iter().position(|domain| domain.id() == id)
        };
        let receiver = match by_name.or_else(by_id) {
            Some(receiver) if self.domains[receiver].wake() != Wake::Never => receiver,
            _ => return StatusCode::NoSuchDomain,
        };
        let from = self.domains[sender].id();
        let to = self.domains[receiver].id();
        let sequence = self.domains[sender].next_sequence_to(to);
        if sender == receiver {
            // One commit holds both the count and the mailbox: no copy.
            let status = self.domains[receiver].accept_numbered(
                MailboxMessage { from, bytes },
                sequence,
                false,
            );
            if status == StatusCode::Ok {
                self.domains[sender].note_accepted(to, sequence);
            }
            return status;
        }
        // Messages a power cut took from the receiver go first, in order.
        if self.domains[receiver].accepted_from(from) < sequence - 1 {
            self.redeliver_between(sender, receiver);
        }
        self.acknowledge(sender, receiver);
        let (waiting, waiting_bytes) = self.domains[sender].outbox().waiting_for(to);
        let bytes_with_this = waiting_bytes.saturating_add(bytes.len());
        if waiting >= MAX_OUTBOX_MESSAGES || bytes_with_this > MAX_OUTBOX_BYTES {
            self.ask_to_commit(sender, receiver);
            return StatusCode::MailboxFull;
        }
        let message = MailboxMessage {
            from,
            bytes: bytes.clone(),
        };
        let status = self.domains[receiver].accept_numbered(message, sequence, false);
        if status != StatusCode::Ok {
            return status;
        }
        self.domains[sender].note_accepted(to, sequence);
        if sequence > self.domains[receiver].committed_from(from) {
            self.domains[sender].outbox_mut().push(to, sequence, bytes);
            if waiting + 1 >= MAX_OUTBOX_MESSAGES / 2 || bytes_with_this >= MAX_OUTBOX_BYTES / 2 {
                self.ask_to_commit(sender, receiver);
            }
        }
        StatusCode::Ok
    }

    /// The earliest wake of any domain: `None` if all have ended or wait for
    /// messages nobody can send.
    pub fn next_wake(&self) -> Option<Wake> {
        let mut earliest: Option<u64> = None;
        for domain in &self.domains {
            match domain.wake() {
                Wake::Now => return Some(Wake::Now),
                Wake::At(time) => earliest = Some(earliest.map_or(time, |other| other.min(time))),
                Wake::OnMessage | Wake::Never => {}
            }
        }
        earliest.map(Wake::At)
    }

    /// Whether every domain has ended.
    pub fn is_finished(&self) -> bool {
        self.domains
            .iter()
            .all(|domain| domain.wake() == Wake::Never)
    }

    /// Asks every domain for a checkpoint. Domains at a safe point commit now
    /// (`Ok(true)`); domains mid-computation commit at their next blocking call.
    /// Paused domains are left out: their commit waits for a resume.
    pub fn checkpoint_all(&mut self) -> Vec<(String, Result<bool, Error>)> {
        self.domains
            .iter_mut()
            .filter(|domain| domain.pause_reason().is_none())
            .map(|domain| (String::from(domain.name()), domain.request_checkpoint()))
            .collect()
    }
}

/// A domain ID from its text form: 32 hex digits, most significant first.
pub fn parse_id(text: &[u8]) -> Option<DomainId> {
    if text.len() != 32 {
        return None;
    }
    let text = core::str::from_utf8(text).ok()?;
    let value = u128::from_str_radix(text, 16).ok()?;
    Some(DomainId(value))
}

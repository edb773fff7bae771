//! Round-robin scheduling of many domains with a fuel slice each.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::domain::{Arrival, Domain, PauseReason, RunOutcome, Wake};
use crate::error::Error;
use crate::storage::{DomainId, DomainStatus, MailboxMessage, Storage};
use abi::{MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, StatusCode};

/// Something the embedder may want to print or act on, with the handle it
/// added the domain with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerEvent<H = ()> {
    /// A domain stopped running in its slice: it exited or trapped (or, if
    /// it was run while stopped, it is still stopped).
    Halted {
        handle: H,
        name: String,
        status: DomainStatus,
    },
    /// A domain paused itself in its slice (a commit found its disk full);
    /// it stays in the rotation but does not run until resumed.
    Paused {
        handle: H,
        name: String,
        reason: PauseReason,
    },
}

/// Runs domains in turn, one fuel slice each per round, and carries their
/// messages. It owns no clock: `Domain::wake` says when a waiting domain wants
/// to run, and the embedder idles until the earliest (`next_wake`).
///
/// Each domain comes with the embedder's handle `H` (the kernel's key into
/// its domain table), kept with it and handed back with it in lookups and
/// events, so the embedder never keeps a list aligned with this one. `S` is
/// the domains' storage (see [`Domain`]).
#[derive(Debug)]
pub struct Scheduler<H = (), S: Storage = Box<dyn Storage>> {
    slots: Vec<Slot<H, S>>,
    fuel_slice: u64,
    /// Whether a redelivery stopped at a full mailbox: the next round tries
    /// every outbox again.
    has_waiting_redelivery: bool,
}

/// A domain in the rotation and the embedder's handle for it.
#[derive(Debug)]
struct Slot<H, S: Storage> {
    domain: Domain<S>,
    handle: H,
}

/// Fuel per slice: about 10 us of wasm on the 2-core development machine
/// (measured when the scheduler was written).
pub const DEFAULT_FUEL_SLICE: u64 = 10_000;

impl<H, S: Storage> Scheduler<H, S> {
    /// A scheduler giving each runnable domain `fuel_slice` per round.
    pub fn new(fuel_slice: u64) -> Self {
        Self {
            slots: Vec::new(),
            fuel_slice,
            has_waiting_redelivery: false,
        }
    }

    /// Adds a domain with the embedder's `handle` for it; names and IDs must
    /// be unique.
    pub fn add(&mut self, domain: Domain<S>, handle: H) -> Result<(), Error> {
        let is_duplicate = self
            .domains()
            .any(|other| other.name() == domain.name() || other.id() == domain.id());
        if is_duplicate {
            return Err(Error::DuplicateDomain(domain.name().into()));
        }
        self.slots.push(Slot { domain, handle });
        let added = self.slots.len() - 1;
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
        let index = self.position(name).ok_or(Error::NoSuchDomain)?;
        let mut sender = self.slots.remove(index);
        let result = self.settle_outbox_of(&mut sender.domain);
        self.slots.insert(index, sender);
        result
    }

    /// [`Scheduler::settle_outbox`] for a domain held out of the scheduler
    /// (stopped or paused for a migration); receivers are the scheduler's.
    pub fn settle_outbox_of(&mut self, sender: &mut Domain<S>) -> Result<bool, Error> {
        self.announce_commits();
        let from = sender.id();
        for to in sender.outbox().receivers() {
            let Some(receiver) = self.position_of_id(to) else {
                continue;
            };
            self.slots[receiver].domain.request_checkpoint()?;
            let committed = self.slots[receiver].domain.committed_from(from);
            sender.outbox_mut().acknowledge(to, committed);
        }
        Ok(sender.outbox().is_empty())
    }

    /// Delivers the messages in `sender`'s outbox that `receiver` has not
    /// accepted (since its last commit, as far as a power cut is
    /// concerned), in order. A receiver that cannot run keeps nothing: the
    /// messages stay in the outbox.
    ///
    /// Each goes out as `sender`, the domain that owns the outbox (an
    /// outbox speaks for no one else, whatever its record says), through
    /// the receiver's mailbox limits like a fresh `send`, and numbered no
    /// higher than `sender`'s own send count to the receiver (what a
    /// `send` of it could have numbered; opening a domain raises the count
    /// to its outbox's numbers, so this never stops a real one). The first
    /// message refused stops it, so that no later one overtakes it: the
    /// rest stay in the outbox and every round tries again until they are
    /// in, as a sender that hears `MailboxFull` sends again. Returns whether
    /// nothing is left to deliver.
    fn redeliver_between(&mut self, sender: usize, receiver: usize) -> bool {
        if self.slots[receiver].domain.wake() == Wake::Never {
            return true;
        }
        self.acknowledge(sender, receiver);
        let from = self.slots[sender].domain.id();
        let to = self.slots[receiver].domain.id();
        let sent = self.slots[sender].domain.next_sequence_to(to) - 1;
        let mut first = None;
        let mut count = 0;
        let mut is_complete = true;
        // One message at a time (each accepted one raises the count past
        // it), so a mailbox that is full costs a look, not a copy of the
        // outbox, every round it stays full.
        loop {
            let accepted = self.slots[receiver].domain.accepted_from(from);
            let outbox = self.slots[sender].domain.outbox();
            let Some((sequence, bytes)) = outbox.first_after(to, accepted) else {
                break;
            };
            if sequence > sent {
                is_complete = false;
                break;
            }
            let message = MailboxMessage {
                from,
                bytes: bytes.to_vec(),
            };
            let status = self.slots[receiver].domain.accept_numbered(
                message,
                sequence,
                Arrival::Redelivered,
            );
            if status != StatusCode::Ok {
                is_complete = false;
                self.has_waiting_redelivery = true;
                break;
            }
            first.get_or_insert(sequence);
            count += 1;
        }
        if let Some(first) = first {
            let line = format!(
                "delivered again from its sender's outbox: {count} messages from {from} \
                 (numbers {first} on), lost since the last commit"
            );
            self.slots[receiver].domain.log_info(&line);
        }
        is_complete
    }

    /// Tries again the redeliveries a full mailbox stopped.
    fn redeliver_waiting(&mut self) {
        if !core::mem::take(&mut self.has_waiting_redelivery) {
            return;
        }
        for sender in 0..self.slots.len() {
            let from = self.slots[sender].domain.id();
            for to in self.slots[sender].domain.outbox().receivers() {
                let Some(receiver) = self.position_of_id(to) else {
                    continue;
                };
                let accepted = self.slots[receiver].domain.accepted_from(from);
                if receiver != sender && self.slots[sender].domain.outbox().has_after(to, accepted)
                {
                    self.redeliver_between(sender, receiver);
                }
            }
        }
    }

    /// Asks `receiver` to commit, for the copies `sender` keeps: now if it
    /// is at a safe point (then `sender` learns of it at once), else at its
    /// next blocking call. A failed commit is left to the next checkpoint
    /// to report (the embedder's `checkpoint_all`); a full disk pauses it.
    fn ask_to_commit(&mut self, sender: usize, receiver: usize) {
        if let Ok(true) = self.slots[receiver].domain.request_checkpoint() {
            self.acknowledge(sender, receiver);
        }
    }

    /// Drops from `sender`'s outbox what `receiver`'s last commit holds.
    fn acknowledge(&mut self, sender: usize, receiver: usize) {
        let from = self.slots[sender].domain.id();
        let to = self.slots[receiver].domain.id();
        let committed = self.slots[receiver].domain.committed_from(from);
        self.slots[sender]
            .domain
            .outbox_mut()
            .acknowledge(to, committed);
    }

    /// Tells the senders of every domain that committed since the last call
    /// what the commit holds.
    fn announce_commits(&mut self) {
        for receiver in 0..self.slots.len() {
            if self.slots[receiver].domain.take_commit_notice() {
                self.announce_commit_of(receiver);
            }
        }
    }

    fn announce_commit_of(&mut self, receiver: usize) {
        let to = self.slots[receiver].domain.id();
        let senders: Vec<DomainId> = self.slots[receiver]
            .domain
            .record()
            .accepted
            .keys()
            .copied()
            .collect();
        for from in senders {
            if let Some(sender) = self.position_of_id(from)
                && sender != receiver
                && self.slots[sender].domain.outbox().waiting_for(to).0 > 0
            {
                self.acknowledge(sender, receiver);
            }
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.domains().position(|domain| domain.name() == name)
    }

    fn position_of_id(&self, id: DomainId) -> Option<usize> {
        self.domains().position(|domain| domain.id() == id)
    }

    /// How many domains are in the rotation (ended ones included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no domain is in the rotation.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The domains, in the order they were added.
    pub fn domains(&self) -> impl Iterator<Item = &Domain<S>> {
        self.slots.iter().map(|slot| &slot.domain)
    }

    /// The domains with their handles, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&H, &Domain<S>)> {
        self.slots.iter().map(|slot| (&slot.handle, &slot.domain))
    }

    /// The domains with their handles, mutably (for operator commands).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&H, &mut Domain<S>)> {
        self.slots
            .iter_mut()
            .map(|slot| (&slot.handle, &mut slot.domain))
    }

    /// The domain named `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain<S>> {
        self.domains().find(|domain| domain.name() == name)
    }

    /// The domain named `name`, mutably (for operator commands).
    pub fn domain_mut(&mut self, name: &str) -> Option<&mut Domain<S>> {
        let index = self.position(name)?;
        Some(&mut self.slots[index].domain)
    }

    /// The domain named `name` and its handle.
    pub fn find(&self, name: &str) -> Option<(&H, &Domain<S>)> {
        self.iter().find(|(_, domain)| domain.name() == name)
    }

    /// Takes the domain named `name` out of the rotation, with its handle.
    pub fn remove(&mut self, name: &str) -> Option<(H, Domain<S>)> {
        let index = self.position(name)?;
        let slot = self.slots.remove(index);
        Some((slot.handle, slot.domain))
    }

    /// Takes the domains out with their handles (to reopen their storage,
    /// for instance).
    pub fn into_domains(self) -> Vec<(H, Domain<S>)> {
        self.slots
            .into_iter()
            .map(|slot| (slot.handle, slot.domain))
            .collect()
    }

    /// Gives every runnable domain one slice. Returns what halted or paused.
    ///
    /// A domain whose host calls left a debt of fuel (`crate::fuel`) pays
    /// it from this slice first ([`Domain::run`]): its slice is smaller by
    /// the debt, or spent on it whole, so host work is never forgiven.
    pub fn run_round(&mut self) -> Vec<SchedulerEvent<H>>
    where
        H: Clone,
    {
        let mut events = Vec::new();
        // Commits made outside a slice (checkpoints, operator commands).
        self.announce_commits();
        self.redeliver_waiting();
        for index in 0..self.slots.len() {
            if self.slots[index].domain.wake() != Wake::Now {
                continue;
            }
            let outcome = self.slots[index].domain.run(self.fuel_slice);
            if self.slots[index].domain.take_commit_notice() {
                self.announce_commit_of(index);
            }
            if let Some(reason) = self.slots[index].domain.pause_reason() {
                events.push(SchedulerEvent::Paused {
                    handle: self.slots[index].handle.clone(),
                    name: self.slots[index].domain.name().into(),
                    reason,
                });
            }
            match outcome {
                RunOutcome::Preempted | RunOutcome::Waiting => {}
                RunOutcome::Send { target, message } => {
                    let status = self.deliver(index, &target, message);
                    self.slots[index].domain.reply_to_send(status);
                }
                RunOutcome::Halted(status) => events.push(SchedulerEvent::Halted {
                    handle: self.slots[index].handle.clone(),
                    name: self.slots[index].domain.name().into(),
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
            .domains()
            .position(|domain| domain.name().as_bytes() == target);
        let by_id = || self.position_of_id(parse_id(target)?);
        let receiver = match by_name.or_else(by_id) {
            Some(receiver) if self.slots[receiver].domain.wake() != Wake::Never => receiver,
            _ => return StatusCode::NoSuchDomain,
        };
        let from = self.slots[sender].domain.id();
        let to = self.slots[receiver].domain.id();
        let sequence = self.slots[sender].domain.next_sequence_to(to);
        if sender == receiver {
            // One commit holds both the count and the mailbox: no copy.
            let status = self.slots[receiver].domain.accept_numbered(
                MailboxMessage { from, bytes },
                sequence,
                Arrival::Fresh,
            );
            if status == StatusCode::Ok {
                self.slots[sender].domain.note_accepted(to, sequence);
            }
            return status;
        }
        // Messages a power cut took from the receiver go first, in order,
        // and a new one never overtakes them: its number would make the
        // receiver drop them as resends.
        if self.slots[receiver].domain.accepted_from(from) < sequence - 1
            && !self.redeliver_between(sender, receiver)
        {
            return StatusCode::MailboxFull;
        }
        self.acknowledge(sender, receiver);
        let (waiting, waiting_bytes) = self.slots[sender].domain.outbox().waiting_for(to);
        let bytes_with_this = waiting_bytes.saturating_add(bytes.len());
        if waiting >= MAX_OUTBOX_MESSAGES || bytes_with_this > MAX_OUTBOX_BYTES {
            self.ask_to_commit(sender, receiver);
            return StatusCode::MailboxFull;
        }
        let message = MailboxMessage {
            from,
            bytes: bytes.clone(),
        };
        let status = self.slots[receiver]
            .domain
            .accept_numbered(message, sequence, Arrival::Fresh);
        if status != StatusCode::Ok {
            return status;
        }
        self.slots[sender].domain.note_accepted(to, sequence);
        if sequence > self.slots[receiver].domain.committed_from(from) {
            self.slots[sender]
                .domain
                .outbox_mut()
                .push(to, sequence, bytes);
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
        for domain in self.domains() {
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
        self.domains().all(|domain| domain.wake() == Wake::Never)
    }

    /// Asks every domain for a checkpoint. Domains at a safe point commit now
    /// (`Ok(true)`); domains mid-computation commit at their next blocking call.
    /// Paused domains are left out: their commit waits for a resume.
    pub fn checkpoint_all(&mut self) -> Vec<(String, Result<bool, Error>)> {
        self.slots
            .iter_mut()
            .map(|slot| &mut slot.domain)
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

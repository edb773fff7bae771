//! Round-robin scheduling of many domains with a fuel slice each.

use alloc::string::String;
use alloc::vec::Vec;

use crate::domain::{Domain, PauseReason, RunOutcome, Wake};
use crate::error::Error;
use crate::status::Status;
use crate::storage::{DomainId, DomainStatus, Message};

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

/// Fuel per slice: about 10 us of wasm here (see the vm issue's facts).
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
        Ok(())
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
        for index in 0..self.domains.len() {
            if self.domains[index].wake() != Wake::Now {
                continue;
            }
            let outcome = self.domains[index].run(self.fuel_slice);
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
    fn deliver(&mut self, sender: usize, target: &[u8], bytes: Vec<u8>) -> Status {
        let by_name = self
            .domains
            .iter()
            .position(|domain| domain.name().as_bytes() == target);
        let by_id = || {
            let id = parse_id(target)?;
            self.domains.iter().position(|domain| domain.id() == id)
        };
        match by_name.or_else(by_id) {
            Some(receiver) if self.domains[receiver].wake() != Wake::Never => {
                let from = self.domains[sender].id();
                let to = self.domains[receiver].id();
                let sequence = self.domains[sender].next_sequence_to(to);
                let message = Message { from, bytes };
                let status = self.domains[receiver].deliver_numbered(message, sequence);
                if status == Status::Ok {
                    self.domains[sender].note_accepted(to, sequence);
                }
                status
            }
            _ => Status::NoSuchDomain,
        }
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
    Some(value.to_le_bytes())
}

//! A domain: one wasmi store and instance with fuel, its memory and storage.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use wasmi::{
    Extern, Func, Instance, Memory, ResumableCall, ResumableCallHostTrap, ResumableCallOutOfFuel,
    Store, Val,
};

use crate::blocking::{Blocked, Entry, Request, is_ready, try_complete};
use crate::error::{Error, TrapReason};
use crate::fuel;
use crate::host_state::HostState;
use crate::memory_backing::MemoryBacking;
use crate::outbox::Outbox;
use crate::snapshot;
use crate::storage::{
    BlockingImport, DomainId, DomainRecord, DomainStatus, MailboxMessage, Storage,
};
use abi::{MAX_MAILBOX_BYTES, MAX_MAILBOX_MESSAGES, StatusCode};

/// Messages a domain may have received through [`Domain::deliver`] since
/// its last commit before a delivery asks it to commit (each such delivery
/// rewrites them all).
const RECEIVED_BEFORE_COMMIT: usize = 16;

/// Where a domain's execution stands.
pub(crate) enum Execution {
    /// The entry export has not been called (or restarts after a restore).
    Start,
    /// The stack is unwound into memory, waiting for its call to complete.
    Unwound,
    /// The slice ran out of fuel mid-computation.
    OutOfFuel(ResumableCallOutOfFuel),
    /// A host call paused the wasmi call (no asyncify, or a send).
    Paused {
        call: ResumableCallHostTrap,
        wait: PausedWait,
    },
    /// It does not run: stopped (resumable, status `Stopped`), or ended for
    /// good (exited, trapped, moved away).
    Halted(DomainStatus),
}

pub(crate) enum PausedWait {
    Blocked(Blocked),
    Reply(Option<Val>),
}

/// What one slice of a domain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// It used its fuel and wants more.
    Preempted,
    /// It waits (sleep, recv, yield...); see `Domain::wake`.
    Waiting,
    /// It sends `message` to `target` (a name, or 16 ID bytes): the scheduler
    /// delivers it and calls `Domain::reply_to_send`.
    Send { target: Vec<u8>, message: Vec<u8> },
    /// It does not run (any more): its status says whether it ended for
    /// good or is stopped and can be resumed.
    Halted(DomainStatus),
}

/// When a waiting domain wants to run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Now.
    Now,
    /// At this platform monotonic time.
    At(u64),
    /// When a message arrives, or the machine's network has news for it
    /// (a client, data, room, a reset): the embedder runs a round then,
    /// and [`Domain::wake`] asks the network what changed.
    OnMessage,
    /// Never: it ended.
    Never,
}

/// How a numbered message reaches a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Sent just now by a running domain.
    Fresh,
    /// Delivered again from its sender's outbox (after a restore, an
    /// adoption, or a full mailbox).
    Redelivered,
}

/// Why a domain is held out of the rotation although it has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// A commit found no free block on the domain's disk. The domain waits
    /// at the safe point where the commit failed, its last commit intact,
    /// until [`Domain::resume_from_pause`] commits.
    DiskFull,
}

impl core::fmt::Display for PauseReason {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PauseReason::DiskFull => write!(formatter, "disk full"),
        }
    }
}

/// A domain and everything it needs to run and persist.
///
/// `S` is its storage. The default, a boxed `dyn Storage`, suits code that
/// mixes kinds of storage; an embedder that needs its own back names its
/// type and reaches it through [`Domain::storage_mut`].
pub struct Domain<S: Storage = Box<dyn Storage>> {
    pub(crate) store: Store<HostState>,
    pub(crate) instance: Instance,
    pub(crate) memory: Memory,
    pub(crate) entry: Func,
    pub(crate) execution: Execution,
    pub(crate) record: DomainRecord,
    pub(crate) storage: S,
    pub(crate) backing: Box<dyn MemoryBacking>,
    /// Set when the domain must not run until resumed (see [`PauseReason`]).
    pub(crate) pause: Option<PauseReason>,
    pub(crate) fuel_used: u64,
    /// Exported globals as (global index, export name).
    pub(crate) global_exports: Vec<(u32, String)>,
    /// A commit succeeded that the scheduler has not yet told this domain's
    /// senders about (their outboxes shrink with it).
    pub(crate) is_commit_unannounced: bool,
}

impl<S: Storage> core::fmt::Debug for Domain<S> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("Domain")
            .field("name", &self.record.name)
            .field("fuel_used", &self.fuel_used)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Domain<S> {
    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The domain's ID.
    pub fn id(&self) -> DomainId {
        self.record.id
    }

    /// Fuel used over the domain's life.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// Whether the module can be resumed mid-computation after a restart.
    pub fn has_asyncify(&self) -> bool {
        self.store.data().asyncify.is_some()
    }

    /// Why the domain is paused, if it is: it then neither runs nor wakes.
    pub fn pause_reason(&self) -> Option<PauseReason> {
        self.pause
    }

    /// The status as of now.
    pub fn status(&self) -> DomainStatus {
        match &self.execution {
            Execution::Halted(status) => status.clone(),
            _ => DomainStatus::Running,
        }
    }

    /// The linear memory's bytes (for tests and tools).
    pub fn memory_bytes(&self) -> &[u8] {
        self.memory.data(&self.store)
    }

    /// How many 4 KiB pages the last commit stores, if the storage knows.
    pub fn stored_pages(&self) -> Option<u64> {
        self.storage.stored_page_count()
    }

    /// How many 4 KiB pages of the memory are in RAM.
    pub fn resident_pages(&self) -> u64 {
        self.backing.resident_pages(self.memory.data(&self.store))
    }

    /// The record as of the last commit.
    pub fn record(&self) -> &DomainRecord {
        &self.record
    }

    /// The storage behind the domain.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The domain's log: what its storage keeps (committed and staged)
    /// followed by the lines printed since the last commit, its newest
    /// `persist::LOG_CAPACITY_BYTES` at most, from a whole line.
    pub fn log(&mut self) -> Result<Vec<u8>, Error> {
        let mut log = self.storage.log()?;
        log.extend_from_slice(self.store.data().console.log.bytes());
        crate::storage::keep_newest_lines(&mut log);
        Ok(log)
    }

    /// The storage behind the domain, mutably: for an embedder that works on
    /// it between commits (the kernel's migration reads its image).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// The storage behind the domain, e.g. to reopen it after dropping this.
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Runs the domain for at most `fuel` units (none while it is paused),
    /// less the debt its host calls left (see `crate::fuel`): a slice the
    /// debt takes whole is paid without running, and the domain is
    /// [`RunOutcome::Preempted`] as if it had used it.
    pub fn run(&mut self, fuel: u64) -> RunOutcome {
        if self.pause.is_some() {
            return RunOutcome::Waiting;
        }
        if matches!(self.execution, Execution::Halted(_)) {
            return self.run_slice(fuel);
        }
        let state = self.store.data_mut();
        state.console.report_due(&*state.platform);
        let platform = state.platform.clone();
        let sent = state.held.release(platform.network());
        state.charge_later(fuel::copy(sent));
        let paid = state.fuel_debt.min(fuel);
        state.fuel_debt -= paid;
        self.fuel_used = self.fuel_used.saturating_add(paid);
        let fuel = fuel - paid;
        if fuel == 0 {
            return RunOutcome::Preempted;
        }
        if !matches!(self.execution, Execution::Halted(_))
            && let Err(error) = self
                .backing
                .before_slice(self.memory.data(&self.store), &mut self.storage)
        {
            let reason = format!("memory cannot be paged: {error}");
            return self.end(DomainStatus::Trapped(reason));
        }
        let outcome = self.run_slice(fuel);
        if matches!(self.execution, Execution::Halted(_)) {
            return outcome;
        }
        match self.backing.failure() {
            Some(reason) => self.end(DomainStatus::Trapped(format!("memory lost: {reason}"))),
            None => outcome,
        }
    }

    fn run_slice(&mut self, fuel: u64) -> RunOutcome {
        let wake = self.wake();
        let execution = core::mem::replace(&mut self.execution, Execution::Start);
        // One instruction can cost more than a slice (memory.fill and copy
        // cost a fuel unit per 64 bytes): give it what it needs, or it would
        // run out of fuel before it on every slice forever.
        let fuel = match &execution {
            Execution::OutOfFuel(call) => fuel.max(call.required_fuel()),
            _ => fuel,
        };
        let fuel_before = fuel;
        // Fuel metering is always on for domain engines; an error here would
        // mean an engine without it, where the slice is simply unlimited.
        let _ = self.store.set_fuel(fuel);
        let result = match execution {
            Execution::Start => self.entry.call_resumable(&mut self.store, &[], &mut []),
            Execution::Unwound => {
                if wake != Wake::Now {
                    self.execution = Execution::Unwound;
                    return RunOutcome::Waiting;
                }
                match self.start_rewind() {
                    Ok(()) => self.entry.call_resumable(&mut self.store, &[], &mut []),
                    Err(reason) => return self.end(DomainStatus::Trapped(reason.to_string())),
                }
            }
            Execution::OutOfFuel(call) => call.resume(&mut self.store, &mut []),
            Execution::Paused {
                call,
                wait: PausedWait::Reply(value),
            } => call.resume(&mut self.store, value.as_slice(), &mut []),
            Execution::Paused {
                call,
                wait: PausedWait::Blocked(blocked),
            } => {
                if !is_ready(self.store.data(), &blocked) {
                    self.execution = Execution::Paused {
                        call,
                        wait: PausedWait::Blocked(blocked),
                    };
                    return RunOutcome::Waiting;
                }
                let (bytes, state) = self.memory.data_and_store_mut(&mut self.store);
                match try_complete(bytes, state, &blocked, Entry::Resumed) {
                    Ok(Some(value)) => call.resume(&mut self.store, value.as_slice(), &mut []),
                    Ok(None) => {
                        self.execution = Execution::Paused {
                            call,
                            wait: PausedWait::Blocked(blocked),
                        };
                        return RunOutcome::Waiting;
                    }
                    Err(reason) => return self.end(DomainStatus::Trapped(reason.to_string())),
                }
            }
            Execution::Halted(status) => {
                self.execution = Execution::Halted(status.clone());
                return RunOutcome::Halted(status);
            }
        };
        let fuel_left = self.store.get_fuel().unwrap_or(0);
        self.fuel_used = self
            .fuel_used
            .saturating_add(fuel_before.saturating_sub(fuel_left));
        self.handle(result)
    }

    fn start_rewind(&mut self) -> Result<(), TrapReason> {
        let state = self.store.data_mut();
        let (Some(asyncify), Some(suspension)) = (state.asyncify, &state.suspension) else {
            return Err(TrapReason::Asyncify("nothing to rewind".into()));
        };
        let buffer = suspension.save_buffer;
        state.save_buffer = Some(buffer);
        state.is_rewinding = true;
        asyncify.start_rewind(&mut self.store, buffer)
    }

    fn handle(&mut self, result: Result<ResumableCall, wasmi::Error>) -> RunOutcome {
        match result {
            Ok(ResumableCall::Finished) => {
                let state = self.store.data();
                let Some(suspension) = &state.suspension else {
                    return self.end(DomainStatus::Exited(0));
                };
                let is_checkpoint = suspension.import == BlockingImport::AmberCheckpoint;
                let Some(asyncify) = state.asyncify else {
                    return self.end(DomainStatus::Trapped("unwound without asyncify".into()));
                };
                if let Err(reason) = asyncify.stop_unwind(&mut self.store) {
                    return self.end(DomainStatus::Trapped(reason.to_string()));
                }
                self.execution = Execution::Unwound;
                if is_checkpoint || self.is_checkpoint_pending() {
                    self.checkpoint_at_safe_point(is_checkpoint);
                }
                RunOutcome::Waiting
            }
            Ok(ResumableCall::OutOfFuel(call)) => {
                self.execution = Execution::OutOfFuel(call);
                RunOutcome::Preempted
            }
            Ok(ResumableCall::HostTrap(call)) => self.handle_host_trap(call),
            Err(error) => {
                let reason = match error.as_trap_code() {
                    Some(code) => TrapReason::from_trap_code(code),
                    None => TrapReason::Wasm(error.to_string()),
                };
                self.end(DomainStatus::Trapped(reason.to_string()))
            }
        }
    }

    fn handle_host_trap(&mut self, call: ResumableCallHostTrap) -> RunOutcome {
        let error = call.host_error();
        if let Some(reason) = error.downcast_ref::<TrapReason>() {
            let reason = reason.to_string();
            return self.end(DomainStatus::Trapped(reason));
        }
        let Some(request) = error.downcast_ref::<Request>() else {
            let reason = format!("host error: {error}");
            return self.end(DomainStatus::Trapped(reason));
        };
        match request {
            Request::Exit(code) => {
                let code = *code;
                self.end(DomainStatus::Exited(code))
            }
            Request::Send { target, message } => {
                let outcome = RunOutcome::Send {
                    target: target.clone(),
                    message: message.clone(),
                };
                self.execution = Execution::Paused {
                    call,
                    wait: PausedWait::Reply(Some(Val::I32(StatusCode::Ok.code()))),
                };
                outcome
            }
            Request::Block(blocked) => {
                let blocked = *blocked;
                self.execution = Execution::Paused {
                    call,
                    wait: PausedWait::Blocked(blocked),
                };
                let is_checkpoint =
                    matches!(blocked.call, crate::blocking::BlockingCall::Checkpoint);
                if is_checkpoint || self.is_checkpoint_pending() {
                    self.checkpoint_at_safe_point(is_checkpoint);
                }
                RunOutcome::Waiting
            }
        }
    }

    /// Sets the status `send` returns once the domain resumes.
    pub fn reply_to_send(&mut self, status: StatusCode) {
        if let Execution::Paused {
            wait: PausedWait::Reply(value),
            ..
        } = &mut self.execution
        {
            *value = Some(Val::I32(status.code()));
        }
    }

    /// Queues a message from outside any domain (no outbox keeps a copy) in
    /// the mailbox and makes it durable before returning `Ok`.
    ///
    /// The commit holds the last committed state plus this message, and no
    /// pages: that is always a consistent state (as if the message had arrived
    /// right after that commit), so it works while the receiver computes too.
    /// If storage fails, the message is refused with `MailboxFull`, which
    /// senders treat as "try again later".
    ///
    /// Domains' messages do not go through here: the scheduler delivers
    /// them in memory, numbered, with the sender keeping a copy until this
    /// domain commits (see `crate::outbox`).
    pub fn deliver(&mut self, message: MailboxMessage) -> StatusCode {
        // The committed mailbox holds the live one plus what the domain
        // received since its last commit, so bounding it bounds both.
        // The live one can hold more than the committed one, though (the
        // scheduler's numbered deliveries since the last commit), so both
        // are bounded: a commit writes the live mailbox, and a record with
        // more than the limits allow is refused when it is opened.
        let committed = &self.record.mailbox;
        let committed_bytes: usize = committed.iter().map(|queued| queued.bytes.len()).sum();
        let live = self.store.data();
        let is_full = committed.len() >= MAX_MAILBOX_MESSAGES
            || committed_bytes.saturating_add(message.bytes.len()) > MAX_MAILBOX_BYTES
            || live.mailbox.len() >= MAX_MAILBOX_MESSAGES
            || live.mailbox_bytes.saturating_add(message.bytes.len()) > MAX_MAILBOX_BYTES;
        // Every such delivery rewrites the committed mailbox: once it holds
        // more than a few received messages, the domain's next commit (at
        // its next blocking call) drops them.
        let received = committed.len() - self.store.data().mailbox.len().min(committed.len());
        if is_full || received >= RECEIVED_BEFORE_COMMIT {
            self.store.data_mut().is_checkpoint_wanted = true;
        }
        if is_full {
            return StatusCode::MailboxFull;
        }
        // The last committed record plus this message (no copy of the
        // record: the module in it can be megabytes), undone on failure.
        self.record.mailbox.push(message.clone());
        self.record.commits = self.record.commits.saturating_add(1);
        let commit = crate::storage::Commit {
            record: &self.record,
            pages: &[],
        };
        if let Err(error) = self.storage.commit(&commit) {
            self.record.mailbox.pop();
            self.record.commits = self.record.commits.saturating_sub(1);
            let line = format!("a message could not be made durable: {error}");
            self.store.data_mut().log_error(&line);
            return StatusCode::MailboxFull;
        }
        self.store.data_mut().queue_message(message);
        StatusCode::Ok
    }

    /// Queues the `sequence`-th message (counting from 1) that `message.from`
    /// sends this domain, exactly once: a number already accepted is a resend
    /// from a sender that a power cut rolled back, and is acknowledged
    /// (`Ok`) without queueing it again. The count is committed together
    /// with the mailbox, so it survives whatever the message survives.
    ///
    /// A sender whose run after its last commit differs from the lost one
    /// (it read the clock, say) gets its resend under a number the receiver
    /// already holds: the receiver keeps the copy it accepted first.
    ///
    /// A message from a sender's outbox (`Arrival::Redelivered`) goes
    /// through the same mailbox limits as a fresh one: a full mailbox
    /// refuses it with `MailboxFull`, and the sender keeps it in its outbox
    /// to deliver later (a record cannot pile more on a receiver than a
    /// sender's `send` could). Only the line about a dropped resend is left
    /// out, since redelivering what the receiver still holds is routine.
    pub(crate) fn accept_numbered(
        &mut self,
        message: MailboxMessage,
        sequence: u64,
        arrival: Arrival,
    ) -> StatusCode {
        let from = message.from;
        let accepted = self.accepted_from(from);
        if accepted >= sequence {
            if arrival == Arrival::Fresh {
                let line = format!("dropped a resend of message {sequence} from {from}");
                self.store.data_mut().log_info(&line);
            }
            return StatusCode::Ok;
        }
        let state = self.store.data_mut();
        let is_full = state.mailbox.len() >= MAX_MAILBOX_MESSAGES
            || state.mailbox_bytes.saturating_add(message.bytes.len()) > MAX_MAILBOX_BYTES;
        if is_full {
            return StatusCode::MailboxFull;
        }
        state.accepted.insert(from, sequence);
        state.queue_message(message);
        StatusCode::Ok
    }

    /// The highest number accepted from `sender`, committed or not (0 when
    /// nothing was).
    pub fn accepted_from(&self, sender: DomainId) -> u64 {
        let accepted = self.store.data().accepted.get(&sender).copied();
        accepted.unwrap_or(0)
    }

    /// The highest number from `sender` that the last commit holds.
    pub(crate) fn committed_from(&self, sender: DomainId) -> u64 {
        self.record.accepted.get(&sender).copied().unwrap_or(0)
    }

    /// The number the next message from this domain to `receiver` carries.
    pub(crate) fn next_sequence_to(&self, receiver: DomainId) -> u64 {
        let sent = self.store.data().sent.get(&receiver).copied();
        sent.unwrap_or(0).saturating_add(1)
    }

    /// Notes that `receiver` accepted message number `sequence`.
    pub(crate) fn note_accepted(&mut self, receiver: DomainId, sequence: u64) {
        self.store.data_mut().sent.insert(receiver, sequence);
    }

    /// The messages this domain sent that their receivers have not committed.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.store.data().outbox
    }

    /// The outbox, mutably.
    pub(crate) fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.store.data_mut().outbox
    }

    /// How many messages this domain sent that their receivers have not yet
    /// committed (see [`crate::Scheduler::settle_outbox`]).
    pub fn outbox_len(&self) -> usize {
        self.store.data().outbox.len()
    }

    /// Prints a line about the domain at info level.
    pub(crate) fn log_info(&mut self, line: &str) {
        self.store.data_mut().log_info(line);
    }

    /// Whether a commit succeeded since the last call.
    pub(crate) fn take_commit_notice(&mut self) -> bool {
        core::mem::take(&mut self.is_commit_unannounced)
    }

    /// When the domain wants to run again. A paused domain waits as if for
    /// a message: only [`Domain::resume_from_pause`] lets it run.
    pub fn wake(&self) -> Wake {
        if self.pause.is_some() && !matches!(self.execution, Execution::Halted(_)) {
            return Wake::OnMessage;
        }
        let state = self.store.data();
        if !matches!(self.execution, Execution::Halted(_))
            && state.held.can_release(state.platform.network())
        {
            return Wake::Now;
        }
        let blocked = match &self.execution {
            Execution::Start | Execution::OutOfFuel(_) => return Wake::Now,
            Execution::Halted(_) => return Wake::Never,
            Execution::Paused {
                wait: PausedWait::Reply(_),
                ..
            } => return Wake::Now,
            Execution::Paused {
                wait: PausedWait::Blocked(blocked),
                ..
            } => *blocked,
            Execution::Unwound => match (&state.waiting, &state.suspension) {
                (Some(blocked), _) => *blocked,
                // Restored in a network call: its sockets are known once
                // the guest re-enters it.
                (None, Some(suspension))
                    if suspension.import.is_network()
                        || suspension.import == BlockingImport::WasiPollOneoff =>
                {
                    return Wake::Now;
                }
                (None, Some(suspension)) => Blocked {
                    call: snapshot::call_for(suspension.import),
                    deadline_ns: suspension.deadline_ns,
                },
                (None, None) => return Wake::Now,
            },
        };
        if is_ready(state, &blocked) {
            return Wake::Now;
        }
        match blocked.deadline_ns {
            Some(deadline) => {
                let wait = deadline.saturating_sub(state.now_ns());
                Wake::At(state.platform.monotonic_ns().saturating_add(wait))
            }
            None => Wake::OnMessage,
        }
    }

    /// Whether a requested checkpoint, or held replies, wait for a commit
    /// at the next blocking call.
    pub fn is_checkpoint_pending(&self) -> bool {
        let state = self.store.data();
        state.is_checkpoint_wanted || state.replies_held_since_ns.is_some()
    }

    /// Asks for a commit: done now if the domain is at a safe point (returns
    /// true), else at its next blocking call.
    /// A running domain whose disk is full is paused (see [`PauseReason`])
    /// and the error says so.
    pub fn request_checkpoint(&mut self) -> Result<bool, Error> {
        if self.is_at_safe_point() {
            self.commit()
                .inspect_err(|error| self.pause_if_disk_full(error))?;
            return Ok(true);
        }
        self.store.data_mut().is_checkpoint_wanted = true;
        Ok(false)
    }

    fn is_at_safe_point(&self) -> bool {
        match &self.execution {
            Execution::Unwound | Execution::Halted(_) => true,
            // Not started since the last commit or restore: nothing new.
            Execution::Start => true,
            Execution::Paused {
                wait: PausedWait::Blocked(_),
                ..
            } => !self.has_asyncify(),
            Execution::OutOfFuel(_)
            | Execution::Paused {
                wait: PausedWait::Reply(_),
                ..
            } => false,
        }
    }

    /// Commits at a safe point: the guest's own `checkpoint` call
    /// (`asked_by_guest`, which pays for the commit as for any host call's
    /// work, see [`fuel::commit`]), or the machine's periodic checkpoint.
    fn checkpoint_at_safe_point(&mut self, asked_by_guest: bool) {
        self.store.data_mut().is_checkpoint_wanted = false;
        let started_ns = self.store.data().platform.monotonic_ns();
        let committed = snapshot::commit(self, self.status());
        if asked_by_guest {
            let state = self.store.data_mut();
            let elapsed_ns = state.platform.monotonic_ns().saturating_sub(started_ns);
            let pages = committed.as_ref().map_or(0, |pages| *pages);
            state.charge_later(fuel::commit(pages, elapsed_ns));
        }
        let status = match committed.map(drop) {
            Ok(()) => StatusCode::Ok,
            Err(error @ Error::DiskFull { .. }) => {
                // The guest hears nothing yet: its call completes when a
                // commit succeeds (resume_from_pause), as if it had waited.
                self.pause_if_disk_full(&error);
                return;
            }
            Err(error) => {
                let line = format!("checkpoint failed: {error}");
                self.store.data_mut().log_error(&line);
                StatusCode::CheckpointFailed
            }
        };
        self.store.data_mut().checkpoint_status = status;
    }

    /// Pauses a domain that has not ended when `error` says its disk is full.
    fn pause_if_disk_full(&mut self, error: &Error) {
        if matches!(error, Error::DiskFull { .. })
            && !matches!(self.execution, Execution::Halted(_))
        {
            self.pause = Some(PauseReason::DiskFull);
        }
    }

    /// Resumes a paused domain: commits what it holds now (the commit that
    /// failed, tried again) and lets it run on if that works. If the disk is
    /// still full it stays paused and the error says so.
    pub fn resume_from_pause(&mut self) -> Result<(), Error> {
        if self.pause.is_none() {
            return Err(Error::NotPaused);
        }
        self.commit()?;
        self.pause = None;
        self.store.data_mut().checkpoint_status = StatusCode::Ok;
        Ok(())
    }

    /// Commits memory, globals, suspension, status and mailbox.
    pub fn commit(&mut self) -> Result<(), Error> {
        snapshot::commit(self, self.status()).map(drop)
    }

    /// Ends the domain for good with `status` (exited, trapped, or killed
    /// by an operator): it flushes its output, drops any suspension, and
    /// commits the end so that it stays ended after a reboot.
    pub fn end(&mut self, status: DomainStatus) -> RunOutcome {
        self.store.data_mut().flush_output();
        if let DomainStatus::Trapped(reason) = &status {
            let line = format!("trapped: {reason}");
            self.store.data_mut().log_error(&line);
        }
        self.store.data_mut().suspension = None;
        self.execution = Execution::Halted(status.clone());
        if let Err(error) = self.commit() {
            let line = format!("final commit failed: {error}");
            self.store.data_mut().log_error(&line);
        }
        // After the commit, which releases held replies as far as there
        // is room.
        self.release_network();
        RunOutcome::Halted(status)
    }

    /// Stops the domain so that it can be resumed later, here or after a
    /// reboot: at a safe point it commits with status `Stopped`, keeping its
    /// suspended stack, and returns `Ok(true)`; elsewhere it returns
    /// `Ok(false)` and the caller retries after the domain has run on (a
    /// domain in the middle of a computation reaches one at its next blocking
    /// call). A module without asyncify that is paused in a blocking call
    /// loses that call: it restarts at its entry with its memory.
    pub fn stop(&mut self) -> Result<bool, Error> {
        self.hold_at_safe_point(DomainStatus::Stopped)
    }

    /// Holds the domain for a migration's final round: like
    /// [`Domain::stop`], but the commit keeps the status
    /// `Running`, so that if the migration never completes (a power cut, a
    /// lost link) the domain simply runs on here after a reboot. It does not
    /// run until [`Domain::resume`].
    pub fn hold_for_migration(&mut self) -> Result<bool, Error> {
        self.hold_at_safe_point(DomainStatus::Running)
    }

    fn hold_at_safe_point(&mut self, committed_status: DomainStatus) -> Result<bool, Error> {
        if !self.is_at_safe_point() {
            self.store.data_mut().is_checkpoint_wanted = true;
            return Ok(false);
        }
        if let Execution::Halted(status) = &self.execution
            && *status != DomainStatus::Stopped
        {
            return Err(Error::NotStoppable(status.clone()));
        }
        self.store.data_mut().flush_output();
        if !self.has_asyncify() {
            self.store.data_mut().suspension = None;
        }
        let is_stop = committed_status == DomainStatus::Stopped;
        snapshot::commit(self, committed_status)?;
        self.store.data_mut().is_checkpoint_wanted = false;
        self.execution = Execution::Halted(DomainStatus::Stopped);
        if is_stop {
            self.release_network();
        }
        Ok(true)
    }

    /// Listens on every port the image declares, before the domain runs
    /// (opening, resuming): a port another domain holds refuses it with
    /// [`Error::PortTaken`], and nothing stays bound.
    pub(crate) fn bind_network(&mut self) -> Result<(), Error> {
        let state = self.store.data();
        let platform = state.platform.clone();
        let network = platform.network();
        let id = state.id;
        let ports = state.sockets.declared_ports().to_vec();
        for port in ports {
            if let Err(reason) = network.listen(id, port) {
                network.forget_domain(id);
                return Err(match reason {
                    crate::net::NetError::PortTaken => Error::PortTaken { port },
                    reason => Error::Listen { port, reason },
                });
            }
        }
        Ok(())
    }

    /// Gives the domain's ports and connections back to the machine's
    /// network: the domain ended, stopped, or moved away, or the embedder
    /// drops it (which it does after calling this; [`Domain::end`] and
    /// [`Domain::stop`] call it themselves). Its connections read as reset
    /// from now on; [`Domain::resume`] listens again.
    pub fn release_network(&mut self) {
        let state = self.store.data_mut();
        let platform = state.platform.clone();
        let network = platform.network();
        if let Some(connecting) = state.connecting.take() {
            state.sockets.close(network, state.id, connecting);
        }
        network.forget_domain(state.id);
        state.sockets.reset_all();
        state.held.clear();
    }

    /// Resumes a domain stopped with [`Domain::stop`] (or opened with
    /// status `Stopped`): it goes on from its suspended call, or from its
    /// entry if it had none, and the status `Running` is committed.
    pub fn resume(&mut self) -> Result<(), Error> {
        if !matches!(self.execution, Execution::Halted(DomainStatus::Stopped)) {
            return Err(Error::NotStopped);
        }
        self.bind_network()?;
        self.execution = if self.store.data().suspension.is_some() {
            Execution::Unwound
        } else {
            Execution::Start
        };
        self.commit()
    }

    /// The instance's exported functions by name (for benchmarks and tests).
    pub fn exported_function(&self, name: &str) -> Option<Func> {
        self.instance.get_func(&self.store, name)
    }

    /// The exported memory-independent global `name` (tests).
    pub fn exported_global(&self, name: &str) -> Option<Val> {
        match self.instance.get_export(&self.store, name) {
            Some(Extern::Global(global)) => Some(global.get(&self.store)),
            _ => None,
        }
    }
}

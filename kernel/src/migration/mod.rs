//! Live migration: persist::migrate's protocol over a byte stream to a peer.
//!
//! The protocol (rounds, hand-over, who owns the domain at every moment) is
//! all in `persist::migrate`; this module moves its messages over a
//! [`Link`] (TCP in practice), in frames of a 4-byte little-endian length
//! and the message, and does what the protocol asks of the machine: read the
//! running domain's image on the source, pause the domain for the final
//! round, forget it once handed over; on the target, take a spare disk,
//! and run the domain once it is this machine's.
//!
//! Both sides are polled from the main loop and never block: each poll
//! sends or receives a bounded amount, so domains and the console go on.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use persist::migrate::{
    self, Message, MigrationId, Ownership, Resolution, Source, SourceEvent, SourceStep, Target,
    TargetEvent,
};

use smoltcp::wire::Ipv4Address;

use crate::arch::timer;
use crate::domains::Domains;
use crate::drivers::virtio_blk::{DISK_REQUESTS, DISK_WAIT_NS, VirtioDisk};
use crate::net::{self, NetError, TcpConnection, TcpState};
use crate::println;
use vm::CompiledModule;

/// The largest frame accepted: the protocol's largest message.
const MAX_FRAME_BYTES: usize = migrate::wire::MAX_MESSAGE_LEN;

/// Messages produced per poll at most, so one poll stays short.
const MESSAGES_PER_POLL: usize = 512;

/// The most bytes one read from the link asks for: several frames.
const RECEIVE_CHUNK_BYTES: usize = 32 * 1024;

/// Stop producing while this much is waiting to be sent.
const SEND_BACKLOG_BYTES: usize = 256 * 1024;

/// A round with at most this many changed pages is followed by the final
/// round: the pause then costs about as much as sending them.
const FINAL_ROUND_PAGES: u64 = 256;

/// Pre-copy rounds before pausing whatever the domain still dirties.
const MAX_PRE_COPY_ROUNDS: u32 = 8;

/// A reliable, ordered byte stream to the peer.
pub trait Link {
    /// Queues as many of `bytes` as fit now and says how many (0 if none).
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError>;
    /// Moves whatever has arrived into `buffer` and says how much (0 if
    /// nothing yet).
    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError>;
}

/// Why a link stopped carrying bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The peer closed the connection or it was reset.
    Closed,
    /// Anything else, said in words.
    Failed(String),
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkError::Closed => formatter.write_str("the connection closed"),
            LinkError::Failed(reason) => formatter.write_str(reason),
        }
    }
}

/// Frames over a link: outgoing bytes not yet accepted, incoming bytes not
/// yet a whole frame.
#[derive(Debug)]
struct Framed<L> {
    link: L,
    outgoing: Vec<u8>,
    sent: usize,
    /// Received bytes: `incoming[taken..filled]` wait to be taken as frames.
    incoming: Vec<u8>,
    taken: usize,
    filled: usize,
    bytes_sent: u64,
}

impl<L: Link> Framed<L> {
    fn new(link: L) -> Framed<L> {
        Framed {
            link,
            outgoing: Vec::new(),
            sent: 0,
            incoming: Vec::new(),
            taken: 0,
            filled: 0,
            bytes_sent: 0,
        }
    }

    fn queue(&mut self, message: &[u8]) {
        self.outgoing
            .extend_from_slice(&(message.len() as u32).to_le_bytes());
        self.outgoing.extend_from_slice(message);
    }

    fn backlog(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Sends what the link takes; true when nothing is left.
    fn flush(&mut self) -> Result<bool, LinkError> {
        while self.sent < self.outgoing.len() {
            let count = self.link.send(&self.outgoing[self.sent..])?;
            if count == 0 {
                break;
            }
            self.sent += count;
            self.bytes_sent += count as u64;
        }
        if self.sent == self.outgoing.len() {
            self.outgoing.clear();
            self.sent = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// The next whole frame, if one has arrived.
    fn next_frame(&mut self) -> Result<Option<Vec<u8>>, String> {
        let range = self.next_frame_range()?;
        Ok(range.map(|range| self.incoming[range].to_vec()))
    }

    /// Where the next whole frame lies in `incoming`, if one has arrived:
    /// valid until the next call (the receiver reads pages in place,
    /// without a copy of each).
    fn next_frame_range(&mut self) -> Result<Option<Range<usize>>, String> {
        loop {
            if let Some(range) = self.take_frame()? {
                return Ok(Some(range));
            }
            // What is left (less than a frame) moves to the front, and the
            // link writes straight behind it.
            self.incoming.copy_within(self.taken..self.filled, 0);
            self.filled -= self.taken;
            self.taken = 0;
            if self.incoming.is_empty() {
                self.incoming = vec![0; 4 + MAX_FRAME_BYTES + RECEIVE_CHUNK_BYTES];
            }
            let count = self
                .link
                .receive(&mut self.incoming[self.filled..])
                .map_err(|error| format!("{error}"))?;
            if count == 0 {
                return Ok(None);
            }
            self.filled += count;
        }
    }

    fn take_frame(&mut self) -> Result<Option<Range<usize>>, String> {
        let waiting = &self.incoming[self.taken..self.filled];
        let Some(header) = waiting.first_chunk::<4>() else {
            return Ok(None);
        };
        let length = u32::from_le_bytes(*header) as usize;
        if length > MAX_FRAME_BYTES {
            return Err(format!(
                "the peer sent a frame of {length} bytes (at most {MAX_FRAME_BYTES})"
            ));
        }
        if waiting.len() < 4 + length {
            return Ok(None);
        }
        let start = self.taken + 4;
        self.taken += 4 + length;
        Ok(Some(start..start + length))
    }
}

/// Time spent in `net::poll` within transfer slices, since boot: a transfer
/// reports the difference between its end and its start.
static NETWORK_POLL_NS: AtomicU64 = AtomicU64::new(0);

/// Where a transfer's time goes, for the log line at its end.
#[derive(Debug, Default, Clone, Copy)]
struct Stopwatch {
    /// `NETWORK_POLL_NS` when the transfer began.
    network_start_ns: u64,
    /// The disk counters (`virtio_blk::DISK_WAIT_NS`, `DISK_REQUESTS`)
    /// when the transfer began.
    disk_start_ns: u64,
    disk_start_requests: u64,
    /// Source: reading and encoding pages. Target: decoding and writing them.
    pages_ns: u64,
    /// Handing bytes to TCP (copying into the socket's buffer).
    send_ns: u64,
    /// Taking frames from TCP and handling replies.
    receive_ns: u64,
}

impl Stopwatch {
    /// Runs `work`, adding its time to the counter of `slot`.
    fn time<R>(&mut self, slot: Slot, work: impl FnOnce() -> R) -> R {
        let started = timer::uptime_ns();
        let result = work();
        let counter = match slot {
            Slot::Pages => &mut self.pages_ns,
            Slot::Send => &mut self.send_ns,
            Slot::Receive => &mut self.receive_ns,
        };
        *counter += timer::uptime_ns().saturating_sub(started);
        result
    }

    fn new() -> Stopwatch {
        Stopwatch {
            network_start_ns: NETWORK_POLL_NS.load(Ordering::Relaxed),
            disk_start_ns: DISK_WAIT_NS.load(Ordering::Relaxed),
            disk_start_requests: DISK_REQUESTS.load(Ordering::Relaxed),
            ..Stopwatch::default()
        }
    }

    /// "pages X ms, ...": where the time since `started_ns` went.
    fn describe(&self, started_ns: u64) -> String {
        let total_ns = timer::uptime_ns().saturating_sub(started_ns);
        let network_ns = NETWORK_POLL_NS
            .load(Ordering::Relaxed)
            .saturating_sub(self.network_start_ns);
        let ms = |ns: u64| ns / 1_000_000;
        let disk_ns = DISK_WAIT_NS
            .load(Ordering::Relaxed)
            .saturating_sub(self.disk_start_ns);
        let disk_requests = DISK_REQUESTS
            .load(Ordering::Relaxed)
            .saturating_sub(self.disk_start_requests);
        format!(
            "pages {} ms (disk waits {} ms in {disk_requests} requests), to TCP {} ms, \
             from TCP {} ms, network polls {} ms, of {} ms",
            ms(self.pages_ns),
            ms(disk_ns),
            ms(self.send_ns),
            ms(self.receive_ns),
            ms(network_ns),
            ms(total_ns)
        )
    }
}

/// The counters of a [`Stopwatch`].
#[derive(Debug, Clone, Copy)]
enum Slot {
    Pages,
    Send,
    Receive,
}

/// Where a migration stands after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Working,
    /// Over, well or not; the line says how.
    Done(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutgoingPhase {
    PreCopy,
    /// The domain is paused (stopped, committed) for the final round.
    Final,
    /// The tombstone is committed: the domain is the target's.
    HandedOver,
}

/// The source side of one migration.
#[derive(Debug)]
pub struct Outgoing<L> {
    name: String,
    peer: String,
    framed: Framed<L>,
    source: Source,
    phase: OutgoingPhase,
    message: Vec<u8>,
    started_ns: u64,
    paused_ns: Option<u64>,
    commit_wait: Option<CommitWait>,
    /// The last round the target said it received.
    received_round: Option<u32>,
    /// Set while the last pre-copy round waits for the target to catch up.
    catch_up_deadline_ns: Option<u64>,
    watch: Stopwatch,
}

/// A commit asked of the migrating domain before the next round.
#[derive(Debug, Clone, Copy)]
struct CommitWait {
    /// The image's sequence when it was asked.
    sequence: u64,
    deadline_ns: u64,
}

/// How long the next round waits for the domain's commit.
const COMMIT_WAIT_NS: u64 = 2_000_000_000;

/// How long the pause waits for the target to catch up with the rounds.
const CATCH_UP_WAIT_NS: u64 = 2_000_000_000;

impl<L: Link> Outgoing<L> {
    /// Starts migrating domain `name` to `peer` over `link`.
    pub fn start(
        domains: &mut Domains,
        name: &str,
        peer: &str,
        link: L,
    ) -> Result<Outgoing<L>, String> {
        if !domains.is_running(name) {
            return Err(format!(
                "{name} is not running here: only a running domain migrates live \
                 (a stopped one moves by copying its image)"
            ));
        }
        let migration_id = domains.new_migration_id();
        let image = domains.image_of(name).map_err(|error| error.to_string())?;
        let source = Source::new(image, migration_id, peer)
            .map_err(|error| format!("{name}: cannot start the migration: {error}"))?;
        println!(
            "[migrate] {name} -> {peer}: migration {migration_id:016x}, pre-copy of {} stored pages",
            image.stats().pages_stored
        );
        Ok(Outgoing {
            name: name.into(),
            peer: peer.into(),
            framed: Framed::new(link),
            source,
            phase: OutgoingPhase::PreCopy,
            message: Vec::new(),
            started_ns: timer::uptime_ns(),
            paused_ns: None,
            commit_wait: None,
            received_round: None,
            catch_up_deadline_ns: None,
            watch: Stopwatch::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Does the next bit of the migration.
    pub fn poll(&mut self, domains: &mut Domains) -> Progress {
        match self.step(domains) {
            Ok(progress) => progress,
            Err(reason) => self.fail(domains, &reason),
        }
    }

    fn step(&mut self, domains: &mut Domains) -> Result<Progress, String> {
        let peer = self.peer.clone();
        let link_error = |error: LinkError| format!("link to {peer}: {error}");
        if !self
            .watch
            .time(Slot::Send, || self.framed.flush())
            .map_err(link_error)?
        {
            return Ok(Progress::Working);
        }
        while let Some(frame) = self
            .watch
            .time(Slot::Receive, || self.framed.next_frame())?
        {
            let image = domains
                .image_of(&self.name)
                .map_err(|error| error.to_string())?;
            let source = &mut self.source;
            match self
                .watch
                .time(Slot::Receive, || source.receive(image, &frame))
            {
                Ok(SourceEvent::RoundReceived { round }) => {
                    self.received_round = Some(round);
                    log::info!(
                        "[migrate] {}: {} received round {round}",
                        self.name,
                        self.peer
                    );
                }
                Ok(SourceEvent::HandedOver) => {
                    self.phase = OutgoingPhase::HandedOver;
                    println!(
                        "[migrate] {}: handed over to {} (committed here as moved)",
                        self.name, self.peer
                    );
                }
                // The target may close the link right after saying so.
                Ok(SourceEvent::TargetRunning) => return Ok(self.finish(domains)),
                Err(error) => return Err(format!("{error}")),
            }
        }
        for _ in 0..MESSAGES_PER_POLL {
            if self.framed.backlog() > SEND_BACKLOG_BYTES {
                break;
            }
            let image = domains
                .image_of(&self.name)
                .map_err(|error| error.to_string())?;
            let (source, message) = (&mut self.source, &mut self.message);
            let step = self
                .watch
                .time(Slot::Pages, || source.poll(image, message))
                .map_err(|error| format!("{error}"))?;
            match step {
                SourceStep::Send => self.framed.queue(&self.message),
                SourceStep::RoundSent { round, changes } => {
                    if self.next_round(domains, round, changes)? {
                        break;
                    }
                }
                SourceStep::AwaitingReply => break,
                SourceStep::Finished => return Ok(self.finish(domains)),
                SourceStep::Aborted => return Err("the migration was aborted".into()),
            }
        }
        self.watch
            .time(Slot::Send, || self.framed.flush())
            .map_err(link_error)?;
        Ok(Progress::Working)
    }

    /// Decides what follows round `round` (of `changes` pages): another
    /// pre-copy round or the pause. True while it waits (for the domain's
    /// commit or for the target to catch up): nothing more to send now.
    fn next_round(
        &mut self,
        domains: &mut Domains,
        round: u32,
        changes: u64,
    ) -> Result<bool, String> {
        let now = timer::uptime_ns();
        if let Some(wait) = self.commit_wait {
            // A round is sent and a commit asked for: the next round sends
            // what that commit changed, once it is made (or after a while,
            // when the domain computes without reaching a safe point).
            let sequence = domains
                .image_of(&self.name)
                .map_err(|error| error.to_string())?
                .sequence();
            if sequence == wait.sequence && now < wait.deadline_ns {
                return Ok(true);
            }
            self.commit_wait = None;
            let image = domains
                .image_of(&self.name)
                .map_err(|error| error.to_string())?;
            self.source
                .begin_delta_round(image)
                .map_err(|error| format!("{error}"))?;
            return Ok(false);
        }
        if let Some(deadline_ns) = self.catch_up_deadline_ns {
            if !self.has_target_received(round) && now < deadline_ns {
                return Ok(true);
            }
            self.catch_up_deadline_ns = None;
            self.pause(domains)?;
            return Ok(false);
        }
        println!(
            "[migrate] {}: round {round} sent, {changes} pages, {} KiB so far",
            self.name,
            self.framed.bytes_sent / 1024
        );
        // Round 0 carries the last commit, which may predate most of what
        // the domain wrote: always go on with a fresh commit's changes.
        if (round == 0 || changes > FINAL_ROUND_PAGES) && round < MAX_PRE_COPY_ROUNDS {
            let sequence = domains
                .image_of(&self.name)
                .map_err(|error| error.to_string())?
                .sequence();
            domains
                .checkpoint(&self.name)
                .map_err(|error| error.to_string())?;
            self.commit_wait = Some(CommitWait {
                sequence,
                deadline_ns: now + COMMIT_WAIT_NS,
            });
            return Ok(true);
        }
        // The domain runs on until the target has taken in every round:
        // what it still has to store (and the module it compiles once the
        // first round is in) would otherwise lengthen the pause.
        if !self.has_target_received(round) {
            self.catch_up_deadline_ns = Some(now + CATCH_UP_WAIT_NS);
            return Ok(true);
        }
        self.pause(domains)?;
        Ok(false)
    }

    fn has_target_received(&self, round: u32) -> bool {
        self.received_round
            .is_some_and(|received| received >= round)
    }

    /// Pauses the domain at a safe point, committed, and starts the final
    /// round.
    fn pause(&mut self, domains: &mut Domains) -> Result<(), String> {
        self.paused_ns = Some(timer::uptime_ns());
        domains
            .hold_for_migration(&self.name)
            .map_err(|error| error.to_string())?;
        self.phase = OutgoingPhase::Final;
        let image = domains
            .image_of(&self.name)
            .map_err(|error| error.to_string())?;
        let last = self
            .source
            .begin_final_round(image)
            .map_err(|error| format!("{error}"))?;
        println!(
            "[migrate] {}: paused; final round of {last} pages",
            self.name
        );
        Ok(())
    }

    fn finish(&mut self, domains: &mut Domains) -> Progress {
        let now = timer::uptime_ns();
        let downtime_ms = self
            .paused_ns
            .map_or(0, |paused| (now - paused) / 1_000_000);
        domains.mark_moved(&self.name);
        log::info!(
            "[migrate] {}: time: {}",
            self.name,
            self.watch.describe(self.started_ns)
        );
        Progress::Done(format!(
            "[migrate] {}: moved to {} in {} ms, {} KiB sent, downtime {downtime_ms} ms",
            self.name,
            self.peer,
            (now - self.started_ns) / 1_000_000,
            self.framed.bytes_sent / 1024
        ))
    }

    /// Gives up: before the hand-over the domain stays here (and runs on);
    /// after it, it is the target's and stays stopped here.
    fn fail(&mut self, domains: &mut Domains, reason: &str) -> Progress {
        if self.phase == OutgoingPhase::HandedOver {
            domains.mark_moved(&self.name);
            return Progress::Done(format!(
                "[migrate] {}: handed over to {}, then: {reason}; the domain is {}'s \
                 (its copy there runs once it hears of the hand-over)",
                self.name, self.peer, self.peer
            ));
        }
        let mut abort = Vec::new();
        if self.source.abort(&mut abort).is_ok() {
            self.framed.queue(&abort);
            let _ = self.framed.flush();
        }
        if self.phase == OutgoingPhase::Final
            && let Err(error) = domains.start(&self.name)
        {
            println!("[migrate] {}: cannot resume here: {error}", self.name);
        }
        Progress::Done(format!(
            "[migrate] {}: failed: {reason}; the domain stays here",
            self.name
        ))
    }
}

/// The target side of one migration, onto a spare disk.
#[derive(Debug)]
pub struct Incoming<L> {
    peer: String,
    framed: Framed<L>,
    target: Option<Target<VirtioDisk>>,
    disk_index: usize,
    /// The message that opened the connection, not yet handled.
    first: Option<Vec<u8>>,
    reply: Vec<u8>,
    started_ns: u64,
    watch: Stopwatch,
    module: Compilation,
}

/// The incoming domain's module, compiled while its pages arrive.
#[derive(Debug)]
enum Compilation {
    /// The module has not all arrived yet.
    Waiting,
    Compiled(CompiledModule),
    /// Compiling failed (said once); adopting compiles again and says why.
    Failed,
}

impl<L: Link> Incoming<L> {
    /// Receives a migration from `peer` over `framed`, whose first message
    /// was `first`, onto one of the spare disks.
    fn accept(
        domains: &mut Domains,
        peer: &str,
        framed: Framed<L>,
        first: Vec<u8>,
    ) -> Result<Incoming<L>, String> {
        let spare = domains
            .take_spare()
            .ok_or_else(|| String::from("no spare disk to receive a domain on"))?;
        let disk_index = spare.info().index;
        let target = match Target::new(spare, peer) {
            Ok(target) => target,
            Err(error) => return Err(format!("the spare disk cannot take a domain: {error}")),
        };
        Ok(Incoming {
            peer: peer.into(),
            framed,
            target: Some(target),
            disk_index,
            first: Some(first),
            reply: Vec::new(),
            started_ns: timer::uptime_ns(),
            watch: Stopwatch::new(),
            module: Compilation::Waiting,
        })
    }

    /// Compiles the module once it has all arrived.
    fn compile(&mut self, domains: &Domains) {
        if !matches!(self.module, Compilation::Waiting) {
            return;
        }
        let Some(module) = self.target.as_ref().and_then(Target::module) else {
            return;
        };
        let started = timer::uptime_ns();
        self.module = match domains.compile(module) {
            Ok(compiled) => Compilation::Compiled(compiled),
            Err(error) => {
                log::info!(
                    "[migrate] incoming from {}: cannot compile: {error}",
                    self.peer
                );
                Compilation::Failed
            }
        };
        log::info!(
            "[migrate] incoming from {}: module compiled in {} ms",
            self.peer,
            (timer::uptime_ns() - started) / 1_000_000
        );
    }

    pub fn poll(&mut self, domains: &mut Domains) -> Progress {
        match self.step(domains) {
            Ok(progress) => progress,
            Err(reason) => self.fail(domains, &reason),
        }
    }

    fn step(&mut self, domains: &mut Domains) -> Result<Progress, String> {
        let peer = self.peer.clone();
        let link_error = |error: LinkError| format!("link to {peer}: {error}");
        self.watch
            .time(Slot::Send, || self.framed.flush())
            .map_err(link_error)?;
        for _ in 0..MESSAGES_PER_POLL {
            let first = self.first.take();
            let range = match first {
                Some(_) => 0..0,
                None => {
                    let framed = &mut self.framed;
                    match self
                        .watch
                        .time(Slot::Receive, || framed.next_frame_range())?
                    {
                        Some(range) => range,
                        None => break,
                    }
                }
            };
            let frame = first.as_deref().unwrap_or(&self.framed.incoming[range]);
            let Some(target) = self.target.as_mut() else {
                return Err("a message after the migration ended".into());
            };
            self.reply.clear();
            let reply = &mut self.reply;
            let event = match self
                .watch
                .time(Slot::Pages, || target.receive(frame, reply))
            {
                Ok(event) => event,
                Err(error) => {
                    self.reply.clear();
                    if migrate::refusal(&error, &mut self.reply).is_ok() {
                        self.framed.queue(&self.reply);
                        let _ = self.framed.flush();
                    }
                    return Err(format!("{error}"));
                }
            };
            if !self.reply.is_empty() {
                self.framed.queue(&self.reply);
            }
            match event {
                TargetEvent::Nothing => {}
                TargetEvent::Reply => {
                    // A pre-copy round is in: the source now commits the
                    // domain for the next round, time enough to compile
                    // (once) what adopting the domain would otherwise
                    // compile after the hand-over. The reply goes first.
                    self.framed.flush().map_err(link_error)?;
                    net::poll();
                    self.compile(domains);
                }
                TargetEvent::Parked => println!(
                    "[migrate] incoming from {}: copy complete and durable ({} pages received)",
                    self.peer,
                    target.pages_received()
                ),
                TargetEvent::Running => {
                    self.framed.flush().map_err(link_error)?;
                    return Ok(self.run(domains));
                }
                TargetEvent::Aborted => {
                    return Err(format!("{} aborted the migration", self.peer));
                }
            }
        }
        self.framed.flush().map_err(link_error)?;
        Ok(Progress::Working)
    }

    fn run(&mut self, domains: &mut Domains) -> Progress {
        let Some(image) = self.target.take().and_then(Target::into_image) else {
            return Progress::Done("[migrate] incoming: no image after the hand-over".into());
        };
        let elapsed_ms = (timer::uptime_ns() - self.started_ns) / 1_000_000;
        log::info!(
            "[migrate] incoming from {}: time: {}",
            self.peer,
            self.watch.describe(self.started_ns)
        );
        let compiled = match core::mem::replace(&mut self.module, Compilation::Failed) {
            Compilation::Compiled(compiled) => Some(compiled),
            Compilation::Waiting | Compilation::Failed => None,
        };
        let opening_started = timer::uptime_ns();
        let adopted = domains.adopt(image, compiled);
        log::info!(
            "[migrate] incoming from {}: opened in {} ms",
            self.peer,
            (timer::uptime_ns() - opening_started) / 1_000_000
        );
        match adopted {
            Ok(name) => Progress::Done(format!(
                "[migrate] {name} arrived from {} in {elapsed_ms} ms and runs here",
                self.peer
            )),
            Err(error) => Progress::Done(format!(
                "[migrate] incoming from {}: the domain is ours but cannot run: {error}",
                self.peer
            )),
        }
    }

    /// Gives up the copy when the protocol allows (before it is complete,
    /// or after an abort); a complete copy stays parked until the source
    /// says whether it handed the domain over.
    fn fail(&mut self, domains: &mut Domains, reason: &str) -> Progress {
        let Some(target) = self.target.take() else {
            return Progress::Done(format!("[migrate] incoming from {}: {reason}", self.peer));
        };
        let target = match target.into_parked() {
            Ok(image) => {
                domains.park(self.disk_index, image);
                return Progress::Done(format!(
                    "[migrate] incoming from {}: {reason}; the complete copy stays parked \
                     until {} says whether it handed the domain over",
                    self.peer, self.peer
                ));
            }
            Err(target) => *target,
        };
        match target.discard() {
            Ok(Some(disk)) => domains.return_spare(disk),
            Ok(None) => {}
            Err(error) => {
                return Progress::Done(format!(
                    "[migrate] incoming from {}: {reason}; the copy is kept ({error})",
                    self.peer
                ));
            }
        }
        Progress::Done(format!(
            "[migrate] incoming from {}: {reason}; the spare disk is blank again",
            self.peer
        ))
    }
}

/// The TCP port every machine with a network card listens on for migrations.
pub const MIGRATION_PORT: u16 = 7070;

/// How long a connection may take to say what it wants, and a parked copy's
/// question to be answered.
const ANSWER_DEADLINE_NS: u64 = 10_000_000_000;

/// How long transfers run per main-loop round before domains run again.
const TRANSFER_SLICE_NS: u64 = 5_000_000;

/// Time between questions of a parked copy whose source did not answer.
const ASK_AGAIN_NS: u64 = 3_000_000_000;

impl Link for TcpConnection {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        match self.state() {
            TcpState::Established | TcpState::CloseWait => TcpConnection::send(self, bytes)
                .map_err(|error| LinkError::Failed(format!("{error}"))),
            TcpState::SynSent | TcpState::SynReceived | TcpState::Listen => Ok(0),
            _ => Err(LinkError::Closed),
        }
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        match self.state() {
            TcpState::SynSent | TcpState::SynReceived | TcpState::Listen => Ok(0),
            TcpState::Closed => Err(LinkError::Closed),
            _ => match TcpConnection::receive(self, buffer) {
                Ok(count) => Ok(count),
                Err(NetError::Finished) => Err(LinkError::Closed),
                Err(error) => Err(LinkError::Failed(format!("{error}"))),
            },
        }
    }
}

/// A connection on the migration port whose purpose is not known yet: a
/// migration (its first message is `Begin`) or a parked copy's question.
#[derive(Debug)]
struct Pending {
    peer: String,
    framed: Framed<TcpConnection>,
    deadline_ns: u64,
    is_answered: bool,
}

/// A parked copy asking its source.
#[derive(Debug)]
struct Question {
    migration_id: MigrationId,
    source: String,
    framed: Framed<TcpConnection>,
    deadline_ns: u64,
}

/// Every migration in flight on this machine, the listener for the next
/// incoming one, and the questions of parked copies.
#[derive(Debug, Default)]
pub struct Migrations {
    outgoing: Vec<Outgoing<TcpConnection>>,
    incoming: Option<Incoming<TcpConnection>>,
    listener: Option<TcpConnection>,
    pending: Vec<Pending>,
    question: Option<Question>,
    next_question_ns: u64,
}

impl Migrations {
    /// Listens for incoming migrations when there is a network card.
    pub fn new() -> Migrations {
        let mut migrations = Migrations::default();
        migrations.listen();
        migrations
    }

    fn listen(&mut self) {
        match TcpConnection::listen(MIGRATION_PORT) {
            Ok(listener) => self.listener = Some(listener),
            Err(NetError::NoCard) => {}
            Err(error) => log::warn!("migration: cannot listen on {MIGRATION_PORT}: {error}"),
        }
    }

    /// `migrate NAME ADDRESS`: starts sending domain `name` to the machine
    /// at `address` (IPv4, port [`MIGRATION_PORT`]).
    pub fn start(
        &mut self,
        domains: &mut Domains,
        name: &str,
        address: &str,
    ) -> Result<String, String> {
        if self.outgoing.iter().any(|outgoing| outgoing.name() == name) {
            return Err(format!("{name} is migrating already"));
        }
        let peer: Ipv4Address = address
            .parse()
            .map_err(|_| format!("'{address}' is not an IPv4 address"))?;
        let connection = TcpConnection::connect(peer, MIGRATION_PORT)
            .map_err(|error| format!("cannot reach {address}: {error}"))?;
        let outgoing = Outgoing::start(domains, name, address, connection)?;
        self.outgoing.push(outgoing);
        Ok(format!("{name}: migrating to {address}"))
    }

    /// Moves every migration on; true when any has work left.
    pub fn poll(&mut self, domains: &mut Domains) -> bool {
        self.accept();
        self.poll_pending(domains);
        // Transfers get a slice of the loop, with the network polled in
        // between: one poll per main-loop round would leave the link idle
        // while domains run.
        let slice_end = timer::uptime_ns() + TRANSFER_SLICE_NS;
        loop {
            self.poll_transfers(domains);
            let is_transferring = !self.outgoing.is_empty() || self.incoming.is_some();
            if !is_transferring || timer::uptime_ns() >= slice_end {
                break;
            }
            let started = timer::uptime_ns();
            net::poll();
            let elapsed = timer::uptime_ns().saturating_sub(started);
            NETWORK_POLL_NS.fetch_add(elapsed, Ordering::Relaxed);
        }
        self.ask(domains);
        !self.outgoing.is_empty()
            || self.incoming.is_some()
            || !self.pending.is_empty()
            || self.question.is_some()
    }

    fn poll_transfers(&mut self, domains: &mut Domains) {
        let mut index = 0;
        while index < self.outgoing.len() {
            match self.outgoing[index].poll(domains) {
                Progress::Working => index += 1,
                Progress::Done(line) => {
                    println!("{line}");
                    self.outgoing.remove(index);
                }
            }
        }
        if let Some(incoming) = self.incoming.as_mut()
            && let Progress::Done(line) = incoming.poll(domains)
        {
            println!("{line}");
            self.incoming = None;
        }
    }

    /// A listener that got a connection becomes pending; a new one listens.
    fn accept(&mut self) {
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        if matches!(listener.state(), TcpState::Listen | TcpState::SynReceived) {
            return;
        }
        let Some(connection) = self.listener.take() else {
            return;
        };
        let peer = connection.remote().map_or_else(
            || String::from("?"),
            |endpoint| format!("{}", endpoint.addr),
        );
        self.pending.push(Pending {
            peer,
            framed: Framed::new(connection),
            deadline_ns: timer::uptime_ns() + ANSWER_DEADLINE_NS,
            is_answered: false,
        });
        self.listen();
    }

    /// Answers questions; turns a `Begin` into the incoming migration.
    fn poll_pending(&mut self, domains: &mut Domains) {
        let mut index = 0;
        while index < self.pending.len() {
            let pending = &mut self.pending[index];
            let is_flushed = pending.framed.flush().unwrap_or(true);
            let is_over =
                (pending.is_answered && is_flushed) || timer::uptime_ns() >= pending.deadline_ns;
            let frame = match pending.framed.next_frame() {
                _ if is_over => None,
                Ok(Some(frame)) => Some(frame),
                Ok(None) => {
                    index += 1;
                    continue;
                }
                Err(reason) => {
                    log::info!("migration: a connection from {}: {reason}", pending.peer);
                    None
                }
            };
            let pending = self.pending.remove(index);
            let Some(frame) = frame else {
                continue;
            };
            if let Ok(Message::Query {
                migration_id,
                domain_id,
            }) = Message::decode(&frame)
            {
                let verdict = match self
                    .outgoing
                    .iter_mut()
                    .find(|outgoing| outgoing.source.migration_id() == migration_id)
                {
                    Some(outgoing) => outgoing.source.answer(migration_id),
                    None => domains.answer_query(migration_id, domain_id),
                };
                println!(
                    "[migrate] {} asked about migration {migration_id:032x}: {verdict:?}",
                    pending.peer
                );
                let mut answer = Vec::new();
                let mut pending = pending;
                if (Message::Answer {
                    migration_id,
                    verdict,
                })
                .encode(&mut answer)
                .is_ok()
                {
                    pending.framed.queue(&answer);
                    pending.is_answered = true;
                    self.pending.insert(index, pending);
                    index += 1;
                }
                continue;
            }
            if self.incoming.is_some() {
                println!(
                    "[migrate] refused a migration from {}: one is already coming in",
                    pending.peer
                );
                continue;
            }
            match Incoming::accept(domains, &pending.peer, pending.framed, frame) {
                Ok(incoming) => {
                    println!("[migrate] incoming migration from {}", pending.peer);
                    self.incoming = Some(incoming);
                }
                Err(reason) => {
                    println!(
                        "[migrate] refused a migration from {}: {reason}",
                        pending.peer
                    );
                }
            }
        }
    }

    /// Asks the source of the first parked copy whether it handed the domain
    /// over, and acts on the answer.
    fn ask(&mut self, domains: &mut Domains) {
        let now = timer::uptime_ns();
        let Some(question) = self.question.as_mut() else {
            if now >= self.next_question_ns {
                self.next_question_ns = now + ASK_AGAIN_NS;
                self.question = new_question(domains);
            }
            return;
        };
        let answer = match question.framed.flush() {
            Ok(_) => question.framed.next_frame(),
            Err(error) => Err(format!("{error}")),
        };
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) if now < question.deadline_ns => return,
            Ok(None) => {
                log::info!("migration: {} did not answer in time", question.source);
                self.question = None;
                return;
            }
            Err(reason) => {
                log::info!("migration: asking {}: {reason}", question.source);
                self.question = None;
                return;
            }
        };
        let Some(question) = self.question.take() else {
            return;
        };
        let Some((key, image)) = domains.parked_mut().find(|(_, image)| {
            migrate::query_for(image.metadata()).is_some_and(|query| {
                matches!(query, Message::Query { migration_id, .. } if migration_id == question.migration_id)
            })
        }) else {
            return;
        };
        let resolution = migrate::apply_answer(image, &answer);
        match resolution {
            Ok(Resolution::Run) => {
                let Some(image) = domains.unpark(key) else {
                    return;
                };
                match domains.adopt(image, None) {
                    Ok(name) => println!(
                        "[migrate] {} handed {name} over: it runs here",
                        question.source
                    ),
                    Err(error) => println!("[migrate] a domain is ours but cannot run: {error}"),
                }
            }
            Ok(Resolution::Discard) => {
                let Some(image) = domains.unpark(key) else {
                    return;
                };
                let name = image.metadata().name.clone();
                match migrate::discard(image) {
                    Ok(disk) => {
                        println!(
                            "[migrate] {} kept {name}: the copy here is discarded",
                            question.source
                        );
                        domains.return_spare(disk);
                    }
                    Err(error) => println!("[migrate] cannot discard the copy of {name}: {error}"),
                }
            }
            Ok(Resolution::StayParked) => log::info!(
                "migration: {} does not know the domain; the copy stays parked",
                question.source
            ),
            Err(error) => log::warn!("migration: {}'s answer: {error}", question.source),
        }
    }
}

/// Connects to the source of the first parked copy and sends its question.
fn new_question(domains: &mut Domains) -> Option<Question> {
    let (_, image) = domains.parked_mut().next()?;
    let Ownership::Parked {
        migration_id,
        source,
    } = migrate::ownership(image.metadata())
    else {
        return None;
    };
    let query = migrate::query_for(image.metadata())?;
    let address: Ipv4Address = match source.parse() {
        Ok(address) => address,
        Err(_) => {
            log::warn!("migration: cannot ask '{source}': not an IPv4 address");
            return None;
        }
    };
    let connection = TcpConnection::connect(address, MIGRATION_PORT).ok()?;
    let mut framed = Framed::new(connection);
    let mut message = Vec::new();
    query.encode(&mut message).ok()?;
    framed.queue(&message);
    Some(Question {
        migration_id,
        source: source.into(),
        framed,
        deadline_ns: timer::uptime_ns() + ANSWER_DEADLINE_NS,
    })
}

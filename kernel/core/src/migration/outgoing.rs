//! The source side of one migration: rounds out, the pause, the hand-over.

use alloc::string::String;
use alloc::vec::Vec;

use persist::migrate::{self, MigrationId, Source, SourceEvent, SourceStep, Verdict};

use super::Progress;
use super::error::{MigrationError, StartError};
use super::event::Event;
use super::framing::{Framed, Link};
use super::host::MigrationHost;
use super::limits::Limits;
use super::timing::{Slot, Stopwatch};

/// Messages produced per poll at most, so one poll stays short.
const MESSAGES_PER_POLL: usize = 512;

/// Stop producing while this much is waiting to be sent.
const SEND_BACKLOG_BYTES: usize = 256 * 1024;

/// A round with at most this many changed pages is followed by the final
/// round: the pause then costs about as much as sending them.
const FINAL_ROUND_PAGES: u64 = 256;

/// Pre-copy rounds before pausing whatever the domain still dirties.
const MAX_PRE_COPY_ROUNDS: u32 = 8;

/// How long the next round waits for the domain's commit.
const COMMIT_WAIT_NS: u64 = 2_000_000_000;

/// How long the pause waits for the target to catch up with the rounds.
const CATCH_UP_WAIT_NS: u64 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    PreCopy,
    /// The domain is paused (stopped, committed) for the final round.
    Final,
    /// The tombstone is committed: the domain is the target's.
    HandedOver,
}

/// A commit asked of the migrating domain before the next round.
#[derive(Debug, Clone, Copy)]
struct CommitWait {
    /// The image's sequence when it was asked.
    sequence: u64,
    deadline_ns: u64,
}

/// Whether the rounds go on now or wait (for the domain's commit or for
/// the target to catch up): nothing more to send while they wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounds {
    GoOn,
    Wait,
}

/// The source side of one migration.
#[derive(Debug)]
pub struct Outgoing<L> {
    name: String,
    peer: String,
    framed: Framed<L>,
    source: Source,
    phase: Phase,
    message: Vec<u8>,
    paused_ns: Option<u64>,
    commit_wait: Option<CommitWait>,
    /// The last round the target said it received.
    received_round: Option<u32>,
    /// Set while the last pre-copy round waits for the target to catch up.
    catch_up_deadline_ns: Option<u64>,
    watch: Stopwatch,
    /// When the target last took bytes or said something, and how much it
    /// had taken then.
    heard_ns: u64,
    heard_bytes: u64,
    silence_ns: u64,
}

impl<L: Link> Outgoing<L> {
    /// Starts migrating domain `name` to `peer` over `link`.
    pub fn start<H: MigrationHost>(
        host: &mut H,
        name: &str,
        peer: &str,
        link: L,
        limits: &Limits,
    ) -> Result<Outgoing<L>, StartError> {
        if !host.is_running(name) {
            return Err(StartError::NotRunning { name: name.into() });
        }
        let migration_id = host.new_migration_id();
        let image = host.image_of(name).map_err(StartError::Host)?;
        let source =
            Source::new(image, migration_id, peer).map_err(|error| StartError::Protocol {
                name: name.into(),
                error,
            })?;
        let pages_stored = image.stats().pages_stored;
        host.report(Event::OutgoingStarted {
            name: name.into(),
            peer: peer.into(),
            migration_id,
            pages_stored,
        });
        Ok(Outgoing {
            name: name.into(),
            peer: peer.into(),
            framed: Framed::new(link),
            source,
            phase: Phase::PreCopy,
            message: Vec::new(),
            paused_ns: None,
            commit_wait: None,
            received_round: None,
            catch_up_deadline_ns: None,
            watch: Stopwatch::new(host.counters()),
            heard_ns: host.now_ns(),
            heard_bytes: 0,
            silence_ns: limits.outgoing_silence_ns,
        })
    }

    /// The migrating domain.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The migration.
    pub fn migration_id(&self) -> MigrationId {
        self.source.migration_id()
    }

    /// Answers a parked copy of this migration that asks (after a
    /// reconnect): before the hand-over this aborts the migration.
    pub fn answer(&mut self, migration_id: MigrationId) -> Verdict {
        self.source.answer(migration_id)
    }

    /// Does the next bit of the migration.
    pub fn poll<H: MigrationHost>(&mut self, host: &mut H) -> Progress {
        match self.step(host) {
            Ok(progress) => progress,
            Err(reason) => self.fail(host, reason),
        }
    }

    fn step<H: MigrationHost>(&mut self, host: &mut H) -> Result<Progress, MigrationError> {
        let flushed = match self.flush(host) {
            Ok(flushed) => flushed,
            Err(error) => {
                // A target that refuses says why and closes the link: its
                // reason is among what arrived.
                if let Some(progress) = self.take_replies(host)? {
                    return Ok(progress);
                }
                return Err(error);
            }
        };
        if !flushed {
            self.check_silence(host)?;
            return Ok(Progress::Working);
        }
        if let Some(progress) = self.take_replies(host)? {
            return Ok(progress);
        }
        if let Some(progress) = self.produce(host)? {
            return Ok(progress);
        }
        self.flush(host)?;
        self.check_silence(host)?;
        Ok(Progress::Working)
    }

    /// Gives up on a target that has taken no bytes and said nothing for
    /// too long, in any phase: before the hand-over the domain then stays
    /// (and runs) here; after it, it is the target's and this side ends.
    fn check_silence<H: MigrationHost>(&mut self, host: &H) -> Result<(), MigrationError> {
        let now = host.now_ns();
        if self.framed.bytes_sent() != self.heard_bytes {
            self.heard_bytes = self.framed.bytes_sent();
            self.heard_ns = now;
            return Ok(());
        }
        let silent_ns = now.saturating_sub(self.heard_ns);
        if silent_ns >= self.silence_ns {
            return Err(MigrationError::Silent {
                peer: self.peer.clone(),
                silent_s: silent_ns / 1_000_000_000,
            });
        }
        Ok(())
    }

    /// Sends what the link takes; true when nothing is left.
    fn flush<H: MigrationHost>(&mut self, host: &H) -> Result<bool, MigrationError> {
        let started = host.now_ns();
        let result = self.framed.flush();
        self.watch.add(Slot::Send, started, host.now_ns());
        result.map_err(|error| MigrationError::Send {
            peer: self.peer.clone(),
            error,
        })
    }

    /// Handles every reply that has arrived; the outcome if one ended it.
    fn take_replies<H: MigrationHost>(
        &mut self,
        host: &mut H,
    ) -> Result<Option<Progress>, MigrationError> {
        loop {
            let started = host.now_ns();
            let frame = self.framed.next_frame();
            self.watch.add(Slot::Receive, started, host.now_ns());
            let Some(frame) = frame? else {
                return Ok(None);
            };
            self.heard_ns = host.now_ns();
            let started = host.now_ns();
            let image = host.image_of(&self.name)?;
            let event = self.source.receive(image, &frame);
            self.watch.add(Slot::Receive, started, host.now_ns());
            match event? {
                SourceEvent::RoundReceived { round } => {
                    self.received_round = Some(round);
                    host.report(Event::RoundReceived {
                        name: self.name.clone(),
                        peer: self.peer.clone(),
                        round,
                    });
                }
                SourceEvent::HandedOver => {
                    self.phase = Phase::HandedOver;
                    host.report(Event::HandedOver {
                        name: self.name.clone(),
                        peer: self.peer.clone(),
                    });
                }
                // The target may close the link right after saying so.
                SourceEvent::TargetRunning => return Ok(Some(self.finish(host))),
            }
        }
    }

    /// Produces messages while the link keeps up; the outcome if the
    /// migration ended.
    fn produce<H: MigrationHost>(
        &mut self,
        host: &mut H,
    ) -> Result<Option<Progress>, MigrationError> {
        for _ in 0..MESSAGES_PER_POLL {
            if self.framed.backlog() > SEND_BACKLOG_BYTES {
                break;
            }
            let started = host.now_ns();
            let image = host.image_of(&self.name)?;
            let step = self.source.poll(image, &mut self.message);
            self.watch.add(Slot::Pages, started, host.now_ns());
            match step? {
                SourceStep::Send => self.framed.queue(&self.message),
                SourceStep::RoundSent { round, changes } => {
                    if self.next_round(host, round, changes)? == Rounds::Wait {
                        break;
                    }
                }
                SourceStep::AwaitingReply => break,
                SourceStep::Finished => return Ok(Some(self.finish(host))),
                SourceStep::Aborted => return Err(MigrationError::Aborted),
            }
        }
        Ok(None)
    }

    /// Decides what follows round `round` (of `changes` pages): another
    /// pre-copy round or the pause.
    fn next_round<H: MigrationHost>(
        &mut self,
        host: &mut H,
        round: u32,
        changes: u64,
    ) -> Result<Rounds, MigrationError> {
        if let Some(wait) = self.commit_wait {
            return self.after_commit(host, wait);
        }
        if let Some(deadline_ns) = self.catch_up_deadline_ns {
            return self.after_catch_up(host, round, deadline_ns);
        }
        host.report(Event::RoundSent {
            name: self.name.clone(),
            round,
            changes,
            sent_kib: self.framed.bytes_sent() / 1024,
        });
        let now = host.now_ns();
        // Round 0 carries the last commit, which may predate most of what
        // the domain wrote: always go on with a fresh commit's changes.
        if (round == 0 || changes > FINAL_ROUND_PAGES) && round < MAX_PRE_COPY_ROUNDS {
            let sequence = host.image_of(&self.name)?.sequence();
            host.checkpoint(&self.name)?;
            self.commit_wait = Some(CommitWait {
                sequence,
                deadline_ns: now + COMMIT_WAIT_NS,
            });
            return Ok(Rounds::Wait);
        }
        // The domain runs on until the target has taken in every round:
        // what it still has to store (and the module it compiles once the
        // first round is in) would otherwise lengthen the pause.
        if !self.has_target_received(round) {
            self.catch_up_deadline_ns = Some(now + CATCH_UP_WAIT_NS);
            return Ok(Rounds::Wait);
        }
        self.pause(host)?;
        Ok(Rounds::GoOn)
    }

    /// A round is sent and a commit asked for: the next round sends what
    /// that commit changed, once it is made (or after a while, when the
    /// domain computes without reaching a safe point).
    fn after_commit<H: MigrationHost>(
        &mut self,
        host: &mut H,
        wait: CommitWait,
    ) -> Result<Rounds, MigrationError> {
        let now = host.now_ns();
        let image = host.image_of(&self.name)?;
        if image.sequence() == wait.sequence && now < wait.deadline_ns {
            return Ok(Rounds::Wait);
        }
        self.commit_wait = None;
        self.source.begin_delta_round(image)?;
        Ok(Rounds::GoOn)
    }

    /// The last pre-copy round waits for the target, then the pause.
    fn after_catch_up<H: MigrationHost>(
        &mut self,
        host: &mut H,
        round: u32,
        deadline_ns: u64,
    ) -> Result<Rounds, MigrationError> {
        if !self.has_target_received(round) && host.now_ns() < deadline_ns {
            return Ok(Rounds::Wait);
        }
        self.catch_up_deadline_ns = None;
        self.pause(host)?;
        Ok(Rounds::GoOn)
    }

    fn has_target_received(&self, round: u32) -> bool {
        self.received_round
            .is_some_and(|received| received >= round)
    }

    /// Pauses the domain at a safe point, committed, and starts the final
    /// round.
    fn pause<H: MigrationHost>(&mut self, host: &mut H) -> Result<(), MigrationError> {
        self.paused_ns = Some(host.now_ns());
        host.hold_for_migration(&self.name)?;
        self.phase = Phase::Final;
        let image = host.image_of(&self.name)?;
        let final_pages = self.source.begin_final_round(image)?;
        host.report(Event::Paused {
            name: self.name.clone(),
            final_pages,
        });
        Ok(())
    }

    fn finish<H: MigrationHost>(&mut self, host: &mut H) -> Progress {
        let now = host.now_ns();
        let downtime_ms = self
            .paused_ns
            .map_or(0, |paused| now.saturating_sub(paused) / 1_000_000);
        host.mark_moved(&self.name);
        host.report(Event::OutgoingTime {
            name: self.name.clone(),
            time: self.watch.report(host.counters()),
        });
        host.report(Event::Moved {
            name: self.name.clone(),
            peer: self.peer.clone(),
            elapsed_ms: now.saturating_sub(self.watch.started_ns()) / 1_000_000,
            sent_kib: self.framed.bytes_sent() / 1024,
            downtime_ms,
        });
        Progress::Done
    }

    /// Gives up: before the hand-over the domain stays here (and runs on);
    /// after it, it is the target's and stays stopped here.
    fn fail<H: MigrationHost>(&mut self, host: &mut H, reason: MigrationError) -> Progress {
        if self.phase == Phase::HandedOver {
            host.mark_moved(&self.name);
            host.report(Event::FailedAfterHandOver {
                name: self.name.clone(),
                peer: self.peer.clone(),
                reason,
            });
            return Progress::Done;
        }
        let mut abort = Vec::new();
        if self.source.abort(&mut abort).is_ok() {
            self.framed.queue(&abort);
            let _ = self.framed.flush();
        }
        if self.phase == Phase::Final
            && let Err(error) = host.start(&self.name)
        {
            host.report(Event::CannotResume {
                name: self.name.clone(),
                error,
            });
        }
        host.report(match reason {
            MigrationError::Protocol(migrate::Error::Refused { reason }) => {
                Event::OutgoingRefused {
                    name: self.name.clone(),
                    peer: self.peer.clone(),
                    reason,
                }
            }
            reason => Event::OutgoingFailed {
                name: self.name.clone(),
                reason,
            },
        });
        Progress::Done
    }
}

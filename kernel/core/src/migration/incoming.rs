//! The target side of one migration: rounds in onto a spare disk, then run.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use persist::Metadata;
use persist::migrate::{self, Admission, Refusal, Target, TargetEvent};

use super::Progress;
use super::error::{MigrationError, RefusalReason};
use super::event::{CopyFate, Event};
use super::framing::{Framed, Link};
use super::host::{Clash, ClashKind, MigrationHost};
use super::limits::Limits;
use super::timing::{Slot, Stopwatch};

/// Messages handled per poll at most, so one poll stays short.
const MESSAGES_PER_POLL: usize = 512;

/// The incoming domain's module, compiled while its pages arrive.
#[derive(Debug)]
enum Compilation<C> {
    /// The module has not all arrived yet.
    Waiting,
    Compiled(C),
    /// Compiling failed (said once); adopting compiles again and says why.
    Failed,
}

/// The target side of one migration, onto a spare disk.
pub struct Incoming<L, H: MigrationHost> {
    peer: String,
    framed: Framed<L>,
    target: Option<Target<H::Disk>>,
    /// The message that opened the connection, not yet handled.
    first: Option<Vec<u8>>,
    reply: Vec<u8>,
    watch: Stopwatch,
    module: Compilation<H::Compiled>,
    /// When the last message arrived.
    heard_ns: u64,
    silence_ns: u64,
    heap_margin_bytes: u64,
}

/// The machine as the target's [`Admission`]: its heap room past the
/// margin, and its domains' names and IDs. A clash is kept to be reported
/// in the machine's words (the source hears only the refusal's kind).
struct HostAdmission<'a, H> {
    host: &'a H,
    heap_margin_bytes: u64,
    clash: RefCell<Option<(String, Clash)>>,
}

impl<H: MigrationHost> Admission for HostAdmission<'_, H> {
    fn room_bytes(&self) -> u64 {
        self.host
            .heap_room_bytes()
            .saturating_sub(self.heap_margin_bytes)
    }

    fn admit(&self, metadata: &Metadata) -> Result<(), Refusal> {
        let Some(clash) = self.host.clash(&metadata.name, metadata.id) else {
            return Ok(());
        };
        let reason = match clash.kind {
            ClashKind::Name => Refusal::NameTaken,
            ClashKind::Id => Refusal::IdTaken,
        };
        *self.clash.borrow_mut() = Some((metadata.name.clone(), clash));
        Err(reason)
    }
}

impl<L, H: MigrationHost> fmt::Debug for Incoming<L, H> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Incoming")
            .field("peer", &self.peer)
            .field("has_target", &self.target.is_some())
            .finish_non_exhaustive()
    }
}

impl<L: Link, H: MigrationHost> Incoming<L, H> {
    /// Receives a migration from `peer` over `framed`, whose first message
    /// was `first`, onto `spare` (one of the spare disks).
    pub fn accept(
        host: &mut H,
        peer: &str,
        framed: Framed<L>,
        first: Vec<u8>,
        spare: H::Disk,
        limits: &Limits,
    ) -> Result<Incoming<L, H>, RefusalReason> {
        // A spare too small stays out of the spares, as it always has: it
        // cannot take any domain.
        let target = Target::new(spare, peer).map_err(RefusalReason::SpareUnusable)?;
        Ok(Incoming {
            peer: peer.into(),
            framed,
            target: Some(target),
            first: Some(first),
            reply: Vec::new(),
            watch: Stopwatch::new(host.counters()),
            module: Compilation::Waiting,
            heard_ns: host.now_ns(),
            silence_ns: limits.incoming_silence_ns,
            heap_margin_bytes: limits.heap_margin_bytes,
        })
    }

    /// The peer the domain comes from.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Does the next bit of the migration.
    pub fn poll(&mut self, host: &mut H) -> Progress {
        match self.step(host) {
            Ok(progress) => progress,
            Err(reason) => self.fail(host, reason),
        }
    }

    fn step(&mut self, host: &mut H) -> Result<Progress, MigrationError> {
        let started = host.now_ns();
        let flushed = self.flush();
        self.watch.add(Slot::Send, started, host.now_ns());
        flushed?;
        let mut is_heard = false;
        for _ in 0..MESSAGES_PER_POLL {
            let Some(event) = self.receive_one(host)? else {
                break;
            };
            is_heard = true;
            if let Some(progress) = self.handle(host, event)? {
                return Ok(progress);
            }
        }
        self.flush()?;
        self.check_silence(host, is_heard)?;
        Ok(Progress::Working)
    }

    /// Gives up on a source that has sent nothing for too long, in any
    /// phase: the copy's fate is then the protocol's, as on a closed link.
    fn check_silence(&mut self, host: &H, is_heard: bool) -> Result<(), MigrationError> {
        let now = host.now_ns();
        if is_heard {
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

    fn flush(&mut self) -> Result<(), MigrationError> {
        self.framed
            .flush()
            .map(|_| ())
            .map_err(|error| MigrationError::Send {
                peer: self.peer.clone(),
                error,
            })
    }

    /// Passes the first message, or the next frame that has arrived, to the
    /// target and queues its reply; `None` while nothing has arrived. A
    /// message the target rejects is answered with a refusal.
    fn receive_one(&mut self, host: &H) -> Result<Option<TargetEvent>, MigrationError> {
        let first = self.first.take();
        let range = match first {
            Some(_) => 0..0,
            None => {
                let started = host.now_ns();
                let range = self.framed.next_frame_range();
                self.watch.add(Slot::Receive, started, host.now_ns());
                match range? {
                    Some(range) => range,
                    None => return Ok(None),
                }
            }
        };
        let frame = first.as_deref().unwrap_or(self.framed.frame(range));
        let Some(target) = self.target.as_mut() else {
            return Err(MigrationError::MessageAfterEnd);
        };
        self.reply.clear();
        let admission = HostAdmission {
            host,
            heap_margin_bytes: self.heap_margin_bytes,
            clash: RefCell::new(None),
        };
        let started = host.now_ns();
        let event = target.receive_admitted(frame, &mut self.reply, &admission);
        self.watch.add(Slot::Pages, started, host.now_ns());
        match event {
            Ok(event) => {
                if !self.reply.is_empty() {
                    self.framed.queue(&self.reply);
                }
                Ok(Some(event))
            }
            Err(error) => {
                self.reply.clear();
                if migrate::refusal(&error, &mut self.reply).is_ok() {
                    self.framed.queue(&self.reply);
                    let _ = self.framed.flush();
                }
                Err(match admission.clash.into_inner() {
                    Some((name, clash)) => MigrationError::Clash { name, clash },
                    None => error.into(),
                })
            }
        }
    }

    /// Acts on what a message meant; the outcome if it ended the migration.
    fn handle(
        &mut self,
        host: &mut H,
        event: TargetEvent,
    ) -> Result<Option<Progress>, MigrationError> {
        match event {
            TargetEvent::Nothing => {}
            TargetEvent::Reply => {
                // A pre-copy round is in: the source now commits the
                // domain for the next round, time enough to compile (once)
                // what adopting the domain would otherwise compile after
                // the hand-over. The reply goes first.
                self.flush()?;
                self.framed.push();
                self.compile(host);
            }
            TargetEvent::Parked => {
                let pages_received = self.target.as_ref().map_or(0, Target::pages_received);
                host.report(Event::CopyDurable {
                    peer: self.peer.clone(),
                    pages_received,
                });
            }
            TargetEvent::Running => {
                // The domain is this machine's now, whether or not the
                // source hears so (it may have given up waiting): it must
                // run here, never be given up with the link.
                let _ = self.flush();
                return Ok(Some(self.run(host)));
            }
            TargetEvent::Aborted => {
                return Err(MigrationError::PeerAborted {
                    peer: self.peer.clone(),
                });
            }
        }
        Ok(None)
    }

    /// Compiles the module once it has all arrived.
    fn compile(&mut self, host: &mut H) {
        if !matches!(self.module, Compilation::Waiting) {
            return;
        }
        let Some(module) = self.target.as_ref().and_then(Target::module) else {
            return;
        };
        let started = host.now_ns();
        self.module = match host.compile(module) {
            Ok(compiled) => Compilation::Compiled(compiled),
            Err(error) => {
                host.report(Event::CannotCompile {
                    peer: self.peer.clone(),
                    error,
                });
                Compilation::Failed
            }
        };
        host.report(Event::Compiled {
            peer: self.peer.clone(),
            elapsed_ms: host.now_ns().saturating_sub(started) / 1_000_000,
        });
    }

    /// The domain is this machine's: runs it.
    fn run(&mut self, host: &mut H) -> Progress {
        let Some(image) = self.target.take().and_then(Target::into_image) else {
            host.report(Event::NoImage);
            return Progress::Done;
        };
        let elapsed_ms = host.now_ns().saturating_sub(self.watch.started_ns()) / 1_000_000;
        host.report(Event::IncomingTime {
            peer: self.peer.clone(),
            time: self.watch.report(host.counters()),
        });
        let compiled = match core::mem::replace(&mut self.module, Compilation::Failed) {
            Compilation::Compiled(compiled) => Some(compiled),
            Compilation::Waiting | Compilation::Failed => None,
        };
        let opening_started = host.now_ns();
        let adopted = host.adopt(image, compiled);
        host.report(Event::Opened {
            peer: self.peer.clone(),
            elapsed_ms: host.now_ns().saturating_sub(opening_started) / 1_000_000,
        });
        host.report(match adopted {
            Ok(name) => Event::Arrived {
                name,
                peer: self.peer.clone(),
                elapsed_ms,
            },
            Err(error) => Event::CannotRun {
                peer: self.peer.clone(),
                error,
            },
        });
        Progress::Done
    }

    /// Gives up the copy when the protocol allows (before it is complete,
    /// or after an abort); a complete copy stays parked until the source
    /// says whether it handed the domain over.
    fn fail(&mut self, host: &mut H, reason: MigrationError) -> Progress {
        let copy = match self.target.take() {
            None => CopyFate::None,
            Some(target) => give_up(host, target),
        };
        host.report(Event::IncomingFailed {
            peer: self.peer.clone(),
            reason,
            copy,
        });
        Progress::Done
    }
}

/// Parks a complete copy, or blanks an incomplete one and returns its disk.
fn give_up<H: MigrationHost>(host: &mut H, target: Target<H::Disk>) -> CopyFate {
    let target = match target.into_parked() {
        Ok(image) => {
            host.park(image);
            return CopyFate::Parked;
        }
        Err(target) => *target,
    };
    match target.discard() {
        Ok(Some(disk)) => {
            host.return_spare(disk);
            CopyFate::Blank
        }
        Ok(None) => CopyFate::Blank,
        Err(error) => CopyFate::Kept(error),
    }
}

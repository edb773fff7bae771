//! What a migration tells the machine: typed events the kernel prints.

use alloc::string::String;
use core::fmt;

use persist::migrate::{self, MigrationId, Refusal, Verdict};

use super::error::{HostError, MigrationError, RefusalReason};
use super::framing::{FrameError, LinkError};
use super::timing::TimeReport;

/// Where an event is said: on the console, or in the log at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A console line: the operator (and the QEMU tests) read it.
    Console,
    /// Progress and timing, for the log.
    Info,
    /// Something is wrong, for the log.
    Warning,
}

/// What became of an incoming copy when its migration failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFate {
    /// There was no copy (the migration had ended).
    None,
    /// The copy is complete: it stays parked until the source answers.
    Parked,
    /// The spare disk is blank again and back among the spares.
    Blank,
    /// The copy could not be blanked and stays on its disk.
    Kept(migrate::Error),
}

/// Everything a migration says, one variant per line; its `Display` is the
/// line (the QEMU tests and benchmarks match some of them word for word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    // The source side.
    OutgoingStarted {
        name: String,
        peer: String,
        migration_id: MigrationId,
        pages_stored: u64,
    },
    RoundReceived {
        name: String,
        peer: String,
        round: u32,
    },
    HandedOver {
        name: String,
        peer: String,
    },
    RoundSent {
        name: String,
        round: u32,
        changes: u64,
        sent_kib: u64,
    },
    Paused {
        name: String,
        final_pages: u64,
    },
    OutgoingTime {
        name: String,
        time: TimeReport,
    },
    Moved {
        name: String,
        peer: String,
        elapsed_ms: u64,
        sent_kib: u64,
        downtime_ms: u64,
    },
    FailedAfterHandOver {
        name: String,
        peer: String,
        reason: MigrationError,
    },
    CannotResume {
        name: String,
        error: HostError,
    },
    OutgoingFailed {
        name: String,
        reason: MigrationError,
    },
    OutgoingRefused {
        name: String,
        peer: String,
        reason: Refusal,
    },
    // The target side.
    IncomingStarted {
        peer: String,
    },
    Refused {
        peer: String,
        reason: RefusalReason,
    },
    CannotCompile {
        peer: String,
        error: HostError,
    },
    Compiled {
        peer: String,
        elapsed_ms: u64,
    },
    CopyDurable {
        peer: String,
        pages_received: u64,
    },
    IncomingTime {
        peer: String,
        time: TimeReport,
    },
    Opened {
        peer: String,
        elapsed_ms: u64,
    },
    Arrived {
        name: String,
        peer: String,
        elapsed_ms: u64,
    },
    CannotRun {
        peer: String,
        error: HostError,
    },
    NoImage,
    IncomingFailed {
        peer: String,
        reason: MigrationError,
        copy: CopyFate,
    },
    // The listener and parked copies' questions.
    CannotListen {
        port: u16,
        error: String,
    },
    /// Peers hold as many connections as the machine takes: it stops
    /// listening until one closes.
    ConnectionCap {
        held: usize,
        /// The peer holding the most of them, and how many.
        busiest: String,
        busiest_held: usize,
    },
    /// The heap has too little room for another connection: the machine
    /// stops listening until it has more.
    NoRoomToListen {
        room_bytes: u64,
    },
    /// The machine listens again after a cap or a short heap.
    ListeningAgain,
    BadConnection {
        peer: String,
        error: FrameError,
    },
    Asked {
        peer: String,
        migration_id: MigrationId,
        verdict: Verdict,
    },
    CannotAsk {
        source: String,
    },
    NoAnswer {
        source: String,
    },
    AskFailed {
        source: String,
        error: FrameError,
    },
    ParkedRuns {
        source: String,
        name: String,
        by: DecidedBy,
    },
    ParkedCannotRun {
        error: HostError,
    },
    ParkedDiscarded {
        source: String,
        name: String,
        by: DecidedBy,
    },
    CannotDiscard {
        name: String,
        error: migrate::Error,
    },
    StaysParked {
        source: String,
    },
    BadAnswer {
        source: String,
        error: migrate::Error,
    },
}

/// Who decided a parked copy's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// Its source answered the copy's question.
    Source,
    /// An operator at the console, for a source that does not answer.
    Operator,
}

impl Event {
    /// Where the event is said.
    pub fn level(&self) -> Level {
        if self.is_refused_stranger() {
            return Level::Console;
        }
        match self {
            Event::RoundReceived { .. }
            | Event::OutgoingTime { .. }
            | Event::CannotCompile { .. }
            | Event::Compiled { .. }
            | Event::IncomingTime { .. }
            | Event::Opened { .. }
            | Event::BadConnection { .. }
            | Event::NoAnswer { .. }
            | Event::AskFailed { .. }
            | Event::StaysParked { .. }
            | Event::ListeningAgain => Level::Info,
            Event::CannotListen { .. } | Event::CannotAsk { .. } | Event::BadAnswer { .. } => {
                Level::Warning
            }
            _ => Level::Console,
        }
    }
}

impl Event {
    /// Whether this is a connection the secure link refused: a peer
    /// without the cluster secret, a replay, or tampering. The operator
    /// hears of each, with the peer's address.
    fn is_refused_stranger(&self) -> bool {
        matches!(
            self,
            Event::BadConnection {
                error: FrameError::Link(
                    LinkError::NotInCluster | LinkError::HandshakeClosed | LinkError::Tampered
                ),
                ..
            }
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = formatter;
        match self {
            Event::OutgoingStarted {
                name,
                peer,
                migration_id,
                pages_stored,
            } => write!(
                f,
                "[migrate] {name} -> {peer}: migration {migration_id:016x}, \
                 pre-copy of {pages_stored} stored pages"
            ),
            Event::RoundReceived { name, peer, round } => {
                write!(f, "[migrate] {name}: {peer} received round {round}")
            }
            Event::HandedOver { name, peer } => {
                write!(
                    f,
                    "[migrate] {name}: handed over to {peer} (committed here as moved)"
                )
            }
            Event::RoundSent {
                name,
                round,
                changes,
                sent_kib,
            } => write!(
                f,
                "[migrate] {name}: round {round} sent, {changes} pages, {sent_kib} KiB so far"
            ),
            Event::Paused { name, final_pages } => {
                write!(
                    f,
                    "[migrate] {name}: paused; final round of {final_pages} pages"
                )
            }
            Event::OutgoingTime { name, time } => write!(f, "[migrate] {name}: time: {time}"),
            Event::Moved {
                name,
                peer,
                elapsed_ms,
                sent_kib,
                downtime_ms,
            } => write!(
                f,
                "[migrate] {name}: moved to {peer} in {elapsed_ms} ms, {sent_kib} KiB sent, \
                 downtime {downtime_ms} ms"
            ),
            Event::FailedAfterHandOver { name, peer, reason } => write!(
                f,
                "[migrate] {name}: handed over to {peer}, then: {reason}; the domain is \
                 {peer}'s (its copy there runs once it hears of the hand-over)"
            ),
            Event::CannotResume { name, error } => {
                write!(f, "[migrate] {name}: cannot resume here: {error}")
            }
            Event::OutgoingFailed { name, reason } => {
                write!(
                    f,
                    "[migrate] {name}: failed: {reason}; the domain stays here"
                )
            }
            Event::OutgoingRefused { name, peer, reason } => {
                write!(f, "[migrate] migration of {name} refused by {peer}: ")?;
                match reason {
                    Refusal::NameTaken => write!(f, "it has a domain named {name} already")?,
                    Refusal::IdTaken => write!(f, "it has a domain with {name}'s ID already")?,
                    reason => write!(f, "{reason}")?,
                }
                f.write_str("; the domain stays here")
            }
            Event::IncomingStarted { peer } => {
                write!(f, "[migrate] incoming migration from {peer}")
            }
            Event::Refused { peer, reason } => {
                write!(f, "[migrate] refused a migration from {peer}: {reason}")
            }
            Event::CannotCompile { peer, error } => {
                write!(f, "[migrate] incoming from {peer}: cannot compile: {error}")
            }
            Event::Compiled { peer, elapsed_ms } => {
                write!(
                    f,
                    "[migrate] incoming from {peer}: module compiled in {elapsed_ms} ms"
                )
            }
            Event::CopyDurable {
                peer,
                pages_received,
            } => write!(
                f,
                "[migrate] incoming from {peer}: copy complete and durable \
                 ({pages_received} pages received)"
            ),
            Event::IncomingTime { peer, time } => {
                write!(f, "[migrate] incoming from {peer}: time: {time}")
            }
            Event::Opened { peer, elapsed_ms } => {
                write!(
                    f,
                    "[migrate] incoming from {peer}: opened in {elapsed_ms} ms"
                )
            }
            Event::Arrived {
                name,
                peer,
                elapsed_ms,
            } => {
                write!(
                    f,
                    "[migrate] {name} arrived from {peer} in {elapsed_ms} ms and runs here"
                )
            }
            Event::CannotRun { peer, error } => write!(
                f,
                "[migrate] incoming from {peer}: the domain is ours but cannot run: {error}"
            ),
            Event::NoImage => f.write_str("[migrate] incoming: no image after the hand-over"),
            Event::IncomingFailed { peer, reason, copy } => {
                write!(f, "[migrate] incoming from {peer}: {reason}")?;
                match copy {
                    CopyFate::None => Ok(()),
                    CopyFate::Parked => write!(
                        f,
                        "; the complete copy stays parked until {peer} says whether it \
                         handed the domain over"
                    ),
                    CopyFate::Blank => f.write_str("; the spare disk is blank again"),
                    CopyFate::Kept(error) => write!(f, "; the copy is kept ({error})"),
                }
            }
            Event::CannotListen { port, error } => {
                write!(f, "migration: cannot listen on {port}: {error}")
            }
            Event::BadConnection { peer, error } if self.is_refused_stranger() => {
                write!(f, "migration: refused a connection from {peer}: {error}")
            }
            Event::ConnectionCap {
                held,
                busiest,
                busiest_held,
            } => write!(
                f,
                "[migrate] peers hold {held} connections, the most this machine takes \
                 ({busiest} holds {busiest_held}): not listening until one closes"
            ),
            Event::NoRoomToListen { room_bytes } => write!(
                f,
                "[migrate] only {} KiB of heap free: not listening for migrations until \
                 there is more",
                room_bytes / 1024
            ),
            Event::ListeningAgain => f.write_str("migration: listening again"),
            Event::BadConnection { peer, error } => {
                write!(f, "migration: a connection from {peer}: {error}")
            }
            Event::Asked {
                peer,
                migration_id,
                verdict,
            } => write!(
                f,
                "[migrate] {peer} asked about migration {migration_id:032x}: {verdict:?}"
            ),
            Event::CannotAsk { source } => {
                write!(f, "migration: cannot ask '{source}': not an IPv4 address")
            }
            Event::NoAnswer { source } => write!(f, "migration: {source} did not answer in time"),
            Event::AskFailed { source, error } => write!(f, "migration: asking {source}: {error}"),
            Event::ParkedRuns {
                source,
                name,
                by: DecidedBy::Source,
            } => write!(f, "[migrate] {source} handed {name} over: it runs here"),
            Event::ParkedRuns {
                source,
                name,
                by: DecidedBy::Operator,
            } => write!(
                f,
                "[migrate] {name}: the operator decided for {source}, which does not \
                 answer: it runs here"
            ),
            Event::ParkedCannotRun { error } => {
                write!(f, "[migrate] a domain is ours but cannot run: {error}")
            }
            Event::ParkedDiscarded {
                source,
                name,
                by: DecidedBy::Source,
            } => write!(
                f,
                "[migrate] {source} kept {name}: the copy here is discarded"
            ),
            Event::ParkedDiscarded {
                source,
                name,
                by: DecidedBy::Operator,
            } => write!(
                f,
                "[migrate] {name}: the operator decided {source} keeps it: the copy \
                 here is discarded"
            ),
            Event::CannotDiscard { name, error } => {
                write!(f, "[migrate] cannot discard the copy of {name}: {error}")
            }
            Event::StaysParked { source } => write!(
                f,
                "migration: {source} does not know the domain; the copy stays parked \
                 (an operator who knows its fate says `decide NAME run` or \
                 `decide NAME discard`)"
            ),
            Event::BadAnswer { source, error } => {
                write!(f, "migration: {source}'s answer: {error}")
            }
        }
    }
}

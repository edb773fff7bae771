//! Live migration's state machines over a byte stream, tested on the host.
//!
//! The protocol (rounds, hand-over, who owns the domain at every moment) is
//! all in `persist::migrate`; this module moves its messages over a
//! [`Link`] in frames ([`framing`]) and does what the protocol asks of the
//! machine through [`MigrationHost`]: read the running domain's image on
//! the source ([`outgoing`]), pause the domain for the final round, forget
//! it once handed over; on the target ([`incoming`]), take a spare disk and
//! run the domain once it is this machine's. [`listener`] keeps every
//! migration of a machine, the connections that have not said yet what
//! they want, and the questions parked copies ask ([`question`]).
//!
//! Everything is polled from the kernel's main loop and never blocks: each
//! poll sends or receives a bounded amount, so domains and the console go
//! on. What happens is reported as [`Event`]s. [`Limits`] bounds what a
//! peer can make the machine hold: connections, silence, heap.

pub mod error;
pub mod event;
pub mod framing;
pub mod host;
pub mod incoming;
pub mod limits;
pub mod listener;
pub mod network;
pub mod outgoing;
mod question;
pub mod secure;
pub mod timing;

pub use error::{HostError, MigrationError, RefusalReason, StartError};
pub use event::{CopyFate, DecidedBy, Event, Level};
pub use framing::{FrameError, Framed, Link, LinkError, MAX_FRAME_BYTES};
pub use host::{Clash, ClashKind, MigrationHost};
pub use incoming::Incoming;
pub use limits::Limits;
pub use listener::Migrations;
pub use network::{ConnectError, MIGRATION_PORT, Network};
pub use outgoing::Outgoing;
pub use question::{DecideError, Decision};
pub use secure::{ClusterSecret, Entropy, SecretError, SecureLink, SecureNetwork};
pub use timing::{Counters, Slot, Stopwatch, TimeReport};

/// Where a migration stands after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More to do.
    Working,
    /// Over, well or not: its last event said how.
    Done,
}

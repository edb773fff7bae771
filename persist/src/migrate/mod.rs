//! Moving a domain's committed image to another machine, crash-safely.
//!
//! No I/O here: both sides consume and produce byte messages ([`wire`]),
//! and a transport (TCP in the kernel, a `Vec` in tests) carries them.
//!
//! # The protocol
//!
//! 1. **Pre-copy.** [`Source::new`] snapshots the source image's committed
//!    page map; [`Source::poll`] streams `Begin`, the module and the
//!    metadata in chunks, every stored page, and `EndRound`. The domain
//!    keeps running and committing meanwhile. The [`Target`] formats a
//!    spare disk as an *incoming copy* whose first commit says
//!    "incoming, copying" and stages each round's pages (committing a
//!    round only when many pages are staged, to keep the final commit
//!    short).
//! 2. **Delta rounds.** [`Source::begin_delta_round`] compares the page map
//!    of the last commit with what the target holds: copy-on-write puts
//!    every changed page in a new block, so changed pages are found without
//!    reading any. Pages changed or removed are sent again.
//! 3. **Final round.** The caller pauses the domain at a safe point and
//!    commits it; [`Source::begin_final_round`] sends the metadata and the
//!    last changes. The target commits the final state as "incoming,
//!    complete", checks every page's checksum against the source's digest
//!    (discarding the copy if one differs), commits it again and replies
//!    `Durable`.
//! 4. **Hand-over.** On `Durable` the source commits its image as moved
//!    away with an outgoing record (the tombstone), then sends `HandOver`.
//!    The target commits the domain's own status (it now owns it), runs it
//!    and replies `Running`; the source may then discard its tombstone.
//!
//! # Who owns the domain
//!
//! Ownership changes hands at exactly one durable write: the source's
//! tombstone commit. Before it the source owns the domain, after it the
//! target does. The rules ([`ownership`]):
//!
//! - The source runs the domain unless its image holds the tombstone. It
//!   commits the tombstone only after the target said `Durable`, so the
//!   target then holds a complete durable copy.
//! - The target never runs a copy that carries an incoming record. An
//!   *incomplete* copy (phase copying) is discarded without asking: the
//!   source cannot have handed over. A *parked* copy (phase complete) runs
//!   only after the source says it handed over: by `HandOver`, or after a
//!   reboot or reconnect by answering its [`WireMessage::Query`]
//!   ([`query_for`], [`answer_query`], [`apply_answer`]).
//! - The source answers `HandedOver` only from the tombstone of exactly
//!   that migration, `Aborted` when it has the domain without it (and
//!   aborts a migration in flight when asked about it, so it can never
//!   hand it over later: [`Source::answer`]), and `Unknown` when it has no
//!   image of the domain; then the copy stays parked for a person to
//!   decide, since guessing could lose the domain or run it twice.
//! - A power cut on either side at any moment leaves the source's image
//!   (with or without the tombstone) and the target's spare disk (blank,
//!   incomplete, parked or owner): in every combination exactly one side
//!   runs the domain after resolution, from a consistent image; never
//!   both, never none. `tests/migrate.rs` cuts power at every write and at
//!   every message of a migration and checks this.
//! - The deciding records (the tombstone, and "complete") are committed
//!   twice, so both superblock slots hold them: if the newest superblock
//!   is later damaged, opening falls back to a commit that says the same.
//!
//! Both sides are paused between the final round and the hand-over: the
//! domain runs on at most one machine at every moment.
//!
//! # On disk
//!
//! The record is [`crate::Metadata::migration`], stored after the metadata
//! record as a trailer (format version 1 unchanged; see `record.rs`).
//! Images carrying one also have the status [`crate::StoredStatus::MovedAway`],
//! so code that predates migration never runs them.

mod error;
mod record;
mod resolve;
mod snapshot;
mod source;
mod target;
pub mod wire;

pub use error::Error;
pub use record::{IncomingPhase, MAX_PEER_NAME_LEN, Migration, MigrationId, Ownership, ownership};
pub use record::{decode_record, encode_record};
pub use resolve::{Resolution, answer_query, apply_answer, discard, query_for};
pub use snapshot::pages_digest;
pub use source::{Source, SourceEvent, SourceStep};
pub use target::{
    Admission, AdmitAll, MAX_METADATA_LEN_BYTES, MAX_MODULE_LEN_BYTES, MAX_OUTBOX_RECEIVERS,
    Target, TargetEvent, refusal,
};
pub use wire::{Refusal, RoundKind, Verdict, WireMessage};

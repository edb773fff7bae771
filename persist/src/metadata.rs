//! Domain metadata: identity, status, globals, mailbox, clock, counters.
//!
//! Stored as a postcard-encoded record in a block chain (see `blob`), which
//! commit rewrites copy-on-write. The module bytes live in a chain of their
//! own, named by their SHA-256, so a commit never rewrites them.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub use abi::{DomainId, ValueType};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bytes in a WebAssembly page, the unit of `memory_pages`.
pub const WASM_PAGE_SIZE: usize = 65536;

/// [`crate::PAGE_SIZE`] pages in one WebAssembly page.
pub const PAGES_PER_WASM_PAGE: u64 = (WASM_PAGE_SIZE / crate::PAGE_SIZE) as u64;

/// The longest domain name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why a name cannot be a domain's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_LEN`] bytes.
    Length {
        /// The name's length.
        len_bytes: usize,
    },
    /// A byte outside the name alphabet (see [`check_name`]).
    Character {
        /// Where it is.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { len_bytes } => write!(
                formatter,
                "a name of {len_bytes} bytes (1 to {MAX_NAME_LEN} allowed)"
            ),
            Self::Character { at, byte } => write!(
                formatter,
                "a name with byte {byte:#04x} at {at} (names are ASCII letters, digits, \
                 '-', '_' and '.', and start with a letter or digit)"
            ),
        }
    }
}

impl core::error::Error for NameError {}

/// Whether `name` can be a domain's: 1 to [`MAX_NAME_LEN`] ASCII letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit. A name is how
/// the console, `ps`, messages and every output line (`[NAME] ...`) refer
/// to a domain, so it holds no blank (a console word each), no control
/// byte or escape sequence, and nothing that reads as other text (`]`,
/// quotes, look-alike letters from other scripts).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return Err(NameError::Length {
            len_bytes: bytes.len(),
        });
    }
    match outside_name_alphabet(bytes) {
        Some((at, byte)) => Err(NameError::Character { at, byte }),
        None => Ok(()),
    }
}

/// The first byte of `bytes` outside the alphabet of names (and snapshot
/// tags): ASCII letters and digits, and `-`, `_`, `.` after the first.
pub(crate) fn outside_name_alphabet(bytes: &[u8]) -> Option<(usize, u8)> {
    let is_allowed = |at: usize, byte: u8| {
        byte.is_ascii_alphanumeric() || (at > 0 && matches!(byte, b'-' | b'_' | b'.'))
    };
    bytes
        .iter()
        .enumerate()
        .find(|&(at, &byte)| !is_allowed(at, byte))
        .map(|(at, &byte)| (at, byte))
}

/// SHA-256 of the module bytes: what names a stored module.
pub type ModuleSha256 = [u8; 32];

/// What a domain is doing, as its image remembers it (the vm's lifecycle
/// status, as stored; not an ABI status code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredStatus {
    /// Scheduled: resume it after a reboot.
    Running,
    /// Stopped by the user: keep it, do not run it.
    Stopped,
    /// It exited with this code.
    Exited(u32),
    /// It trapped for this reason.
    Trapped(String),
    /// It moved to another machine: this copy is stale.
    MovedAway,
}

/// The value of one mutable global of the module, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGlobal {
    /// The global's index in the module's global index space.
    pub index: u32,
    /// Its type.
    #[serde(with = "crate::abi_serde::value_type")]
    pub value_type: ValueType,
    /// Its bits (zero-extended for 32-bit types; floats bit for bit, an
    /// `f32` in the low 32 bits).
    pub bits: u64,
}

/// A message waiting in the persistent mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The sending domain.
    #[serde(with = "crate::abi_serde::domain_id")]
    pub sender: DomainId,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// How many messages each peer accepted, counted both ways: what makes
/// delivery exactly once.
///
/// A sender numbers its messages to each receiver 1, 2, 3, ... with `sent`
/// (committed with its memory); a receiver records in `accepted` (committed
/// with its mailbox) the highest number it took from each sender. A sender
/// that a power cut rolls back sends again under numbers already taken, and
/// the receiver recognises and drops those resends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    /// Per receiver: how many of this domain's messages it accepted.
    #[serde(with = "crate::abi_serde::domain_id_counts")]
    pub sent: Vec<(DomainId, u64)>,
    /// Per sender: the highest message number this domain accepted from it.
    #[serde(with = "crate::abi_serde::domain_id_counts")]
    pub accepted: Vec<(DomainId, u64)>,
}

impl MessageCounts {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.accepted.is_empty()
    }
}

/// Appends the messaging part of a trailer: the message counts, then the
/// outbox when it holds anything or a later part follows (which then
/// always has its place after an outbox, even an empty one), then the
/// network record when there is one or a log follows, then `log` when it is
/// not empty (a migration carries the domain's log this way; an image keeps
/// it apart, in its superblock's log ring). Readers that know only the
/// counts stop after them, and readers that know the outbox stop after it
/// (postcard ignores trailing bytes).
pub(crate) fn encode_messaging(
    metadata: &Metadata,
    bytes: Vec<u8>,
    log: &[u8],
) -> Result<Vec<u8>, Error> {
    let unencodable = |_| Error::InvalidMetadata {
        reason: "the metadata cannot be encoded",
    };
    let has_log = !log.is_empty();
    let has_network = !metadata.network.is_empty() || has_log;
    let mut bytes = postcard::to_extend(&metadata.message_counts, bytes).map_err(unencodable)?;
    if !metadata.outbox.is_empty() || has_network {
        bytes = postcard::to_extend(&metadata.outbox, bytes).map_err(unencodable)?;
    }
    if has_network {
        bytes = postcard::to_extend(&metadata.network, bytes).map_err(unencodable)?;
    }
    if has_log {
        bytes = postcard::to_extend(log, bytes).map_err(unencodable)?;
    }
    Ok(bytes)
}

/// Reads what [`encode_messaging`] wrote into `metadata`; returns the log,
/// if any, borrowed from `bytes`.
pub(crate) fn decode_messaging<'a>(
    bytes: &'a [u8],
    metadata: &mut Metadata,
) -> Result<&'a [u8], &'static str> {
    let (counts, rest): (MessageCounts, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|_| "undecodable message counts")?;
    metadata.message_counts = counts;
    metadata.outbox = Vec::new();
    metadata.network = NetworkRecord::default();
    if rest.is_empty() {
        return Ok(&[]);
    }
    let (outbox, rest): (Vec<StoredOutboxMessage>, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|_| "undecodable outbox")?;
    metadata.outbox = outbox;
    if rest.is_empty() {
        return Ok(&[]);
    }
    let (network, rest): (NetworkRecord, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|_| "undecodable network record")?;
    metadata.network = network;
    if rest.is_empty() {
        return Ok(&[]);
    }
    let (log, _): (&[u8], &[u8]) =
        postcard::take_from_bytes(rest).map_err(|_| "undecodable log")?;
    Ok(log)
}

/// A message this domain sent that its receiver has not yet committed.
///
/// Delivery does not wait for a disk: the receiver queues the message in
/// memory, and the sender keeps this copy, committed with its own memory,
/// until the receiver's next commit holds the message. After a power cut
/// the copy is delivered again (under its number, so at most once more),
/// which makes a message as durable as the sender's state that sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOutboxMessage {
    /// The receiving domain.
    #[serde(with = "crate::abi_serde::domain_id")]
    pub receiver: DomainId,
    /// The message's number among this domain's messages to `receiver`.
    pub sequence: u64,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// A domain's network: what its image declares, and the sockets it held
/// at the commit. Stored in the trailer after the outbox (see
/// [`crate::migrate::encode_record`]), so images without a network keep
/// their encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The TCP ports the domain may listen on (`image new --listen`), in
    /// the order of their sockets: the first is socket (fd) 3, the next 4,
    /// ... At most [`abi::MAX_LISTEN_PORTS`], each nonzero and listed once.
    pub listen: Vec<u16>,
    /// Durable replies: nothing the domain writes to a connection leaves
    /// the machine before a commit holds the state that wrote it.
    pub durable_replies: bool,
    /// The connections open at the commit, by socket number. They do not
    /// survive a restore: each reads and writes as reset until closed.
    pub connections: Vec<u32>,
    /// The sockets (listeners or connections) set nonblocking
    /// (`fd_fdstat_set_flags`).
    pub nonblocking: Vec<u32>,
}

impl NetworkRecord {
    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Commits since creation (creation itself is not counted).
    pub commits: u64,
    /// Wasm fuel spent since creation.
    pub fuel_used: u64,
}

/// Everything about a domain except its memory pages and module bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The domain's stable ID.
    #[serde(with = "crate::abi_serde::domain_id")]
    pub id: DomainId,
    /// The domain's name (at most [`MAX_NAME_LEN`] bytes).
    pub name: String,
    /// Current linear memory size, in 64 KiB WebAssembly pages.
    pub memory_pages: u64,
    /// Maximum linear memory size, in 64 KiB WebAssembly pages.
    pub memory_max_pages: u64,
    /// The module's mutable globals.
    pub globals: Vec<StoredGlobal>,
    /// What the domain is doing.
    pub status: StoredStatus,
    /// The suspension record (opaque to persist; empty when none).
    pub suspension: Vec<u8>,
    /// Messages accepted and not yet received.
    pub mailbox: Vec<StoredMessage>,
    /// The domain's logical clock, in nanoseconds.
    pub clock_ns: u64,
    /// Running totals.
    pub counters: Counters,
    /// WASI arguments (`args_get`).
    pub args: Vec<String>,
    /// WASI environment, as `KEY=VALUE` strings (`environ_get`).
    pub env: Vec<String>,
    /// The migration that concerns this image, if any (see
    /// [`crate::migrate`]). Stored in a trailer after the record, not in
    /// it, so images without one keep their version 1 encoding.
    #[serde(skip)]
    pub migration: Option<crate::migrate::Migration>,
    /// Message numbers for exactly-once delivery. Stored in the trailer too
    /// (after the migration, if any), so images without messages keep
    /// their version 1 encoding.
    #[serde(skip)]
    pub message_counts: MessageCounts,
    /// Messages sent and not yet committed by their receivers, oldest first
    /// per receiver. Stored in the trailer after the message counts.
    #[serde(skip)]
    pub outbox: Vec<StoredOutboxMessage>,
    /// Declared ports, durable replies and open sockets. Stored in the
    /// trailer after the outbox.
    #[serde(skip)]
    pub network: NetworkRecord,
}

impl Metadata {
    /// The live state `self` rolled back to `snapshot`, a state of the same
    /// domain: the domain's own state (memory size, globals, suspension,
    /// status, clock, and the network record, whose socket numbers its
    /// memory holds: the connections open at the snapshot read as reset,
    /// as after any restore) is the snapshot's; everything other parties
    /// rely on stays the live one, so a rollback loses and doubles no
    /// message and breaks no promise made since the snapshot:
    /// - identity (ID, name), WASI arguments and environment;
    /// - messaging: the mailbox (messages accepted and not yet received are
    ///   still received), the outbox (still delivered), and the message
    ///   numbers (every sender's accepted count and the domain's send
    ///   counts go on, so a message it sends after the rollback is new to
    ///   its receiver and a sender's resend is still recognised). Messages
    ///   it received after the snapshot are not received again: the
    ///   rollback forgets having handled them;
    /// - the migration record and the running totals.
    pub fn rolled_back_to(&self, snapshot: Metadata) -> Metadata {
        Metadata {
            memory_pages: snapshot.memory_pages,
            memory_max_pages: snapshot.memory_max_pages,
            globals: snapshot.globals,
            status: snapshot.status,
            suspension: snapshot.suspension,
            clock_ns: snapshot.clock_ns,
            network: snapshot.network,
            ..self.clone()
        }
    }

    /// How many forks made this domain (`abi::GENERATION_VARIABLE` in its
    /// environment; 0 without).
    pub fn generation(&self) -> u64 {
        abi::generation(self.env.iter().map(String::as_str))
    }

    /// A fork of this state: a new domain called `name` with ID `id` that
    /// runs on from the same memory, globals, suspension and clock. Its
    /// generation (`abi::GENERATION_VARIABLE` in the environment) is one
    /// more than this state's; it starts with an empty mailbox and outbox,
    /// no message numbers (to every other domain it is a stranger) and no
    /// migration. It keeps the running totals (its count of commits is
    /// what says the state has run, so the vm resumes it rather than start
    /// it afresh), the declared ports, and the connections open here, which
    /// read as reset in the fork.
    pub fn forked(&self, id: DomainId, name: &str) -> Metadata {
        let generation = self.generation() + 1;
        let mut env: Vec<String> = self
            .env
            .iter()
            .filter(|entry| {
                entry
                    .strip_prefix(abi::GENERATION_VARIABLE)
                    .is_none_or(|rest| !rest.starts_with('='))
            })
            .cloned()
            .collect();
        env.push(alloc::format!("{}={generation}", abi::GENERATION_VARIABLE));
        Metadata {
            id,
            name: name.into(),
            env,
            mailbox: Vec::new(),
            outbox: Vec::new(),
            message_counts: MessageCounts::default(),
            migration: None,
            ..self.clone()
        }
    }

    /// Pages of [`crate::PAGE_SIZE`] below the memory maximum (capped at what
    /// the page map can address).
    pub fn page_limit(&self) -> u64 {
        self.memory_max_pages
            .saturating_mul(PAGES_PER_WASM_PAGE)
            .min(crate::page_map::MAX_PAGES)
    }
}

/// Where the module lives, inside the metadata record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ModuleRecord {
    pub(crate) sha256: ModuleSha256,
    pub(crate) first_block: u64,
    pub(crate) first_crc: u32,
    pub(crate) len_bytes: u64,
}

/// The record the metadata chain holds: the metadata and where the module
/// lives. Public so that tools and fuzz targets can decode and encode the
/// bytes of a chain ([`crate::migrate::decode_record`]); only persist makes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRecord {
    pub(crate) metadata: Metadata,
    pub(crate) module: ModuleRecord,
}

impl MetadataRecord {
    /// The metadata the record holds.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
}

/// SHA-256 of a module (the vm's `module_fingerprint` is another, weaker
/// hash with another job).
pub fn module_sha256(module: &[u8]) -> ModuleSha256 {
    use sha2::Digest;
    sha2::Sha256::digest(module).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn a_record_round_trips_through_postcard() {
        let record = MetadataRecord {
            metadata: Metadata {
                id: DomainId(u128::MAX - 3),
                name: "hello".into(),
                memory_pages: 2,
                memory_max_pages: 16,
                globals: vec![StoredGlobal {
                    index: 0,
                    value_type: ValueType::F64,
                    bits: 1.5f64.to_bits(),
                }],
                status: StoredStatus::Trapped("unreachable".into()),
                suspension: vec![1, 2, 3],
                mailbox: vec![StoredMessage {
                    sender: DomainId(7),
                    bytes: vec![9; 10],
                }],
                clock_ns: 42,
                counters: Counters {
                    commits: 3,
                    fuel_used: 1000,
                },
                args: vec!["hello".into(), "--flag".into()],
                env: vec!["KEY=value".into()],
                migration: None,
                message_counts: MessageCounts::default(),
                outbox: Vec::new(),
                network: NetworkRecord::default(),
            },
            module: ModuleRecord {
                sha256: module_sha256(b"\0asm"),
                first_block: 5,
                first_crc: 6,
                len_bytes: 4,
            },
        };
        let bytes = postcard::to_allocvec(&record).unwrap();
        let decoded: MetadataRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded, record);
        assert!(postcard::from_bytes::<MetadataRecord>(&bytes[..bytes.len() - 1]).is_err());
    }
}

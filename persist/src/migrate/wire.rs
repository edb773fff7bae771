//! The migration wire format: versioned, checksummed, bounded messages.
//!
//! Every message is one frame:
//!
//! | bytes  | field                                                   |
//! |--------|---------------------------------------------------------|
//! | 0..4   | magic `AMIG`                                            |
//! | 4..6   | wire version ([`WIRE_VERSION`]), little-endian          |
//! | 6      | kind                                                    |
//! | 7      | zero                                                    |
//! | 8..12  | payload length, at most [`MAX_PAYLOAD_LEN`]             |
//! | 12..16 | CRC-32C of bytes 0..12 followed by the payload          |
//! | 16..   | payload: fixed little-endian fields, per kind           |
//!
//! A stream transport reads [`HEADER_LEN`] bytes, asks [`message_len`] how
//! long the whole frame is (checked against the bound before any payload
//! is read), reads the rest and hands the frame to [`WireMessage::decode`].
//! Every field of hostile input is checked; nothing panics.

use alloc::vec::Vec;
use core::fmt;

use crate::PAGE_SIZE;
use crate::metadata::{DomainId, ModuleSha256};

use super::error::Error;
use super::record::MigrationId;

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"AMIG";

/// The wire format version this code speaks.
pub const WIRE_VERSION: u16 = 1;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;

/// The most module or metadata bytes one chunk carries.
pub const CHUNK_LEN_BYTES: usize = 8192;

/// The longest payload (a chunk and its offsets).
pub const MAX_PAYLOAD_LEN: usize = CHUNK_LEN_BYTES + 16;

/// The longest message.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;

/// Which round an [`WireMessage::EndRound`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundKind {
    /// A pre-copy round: the domain still runs on the source.
    PreCopy,
    /// The last round: the domain is paused and committed on the source.
    Final,
}

/// The source's answer to a parked target's [`WireMessage::Query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The source has durably given the domain up: the target runs it.
    HandedOver,
    /// The source keeps the domain and will never give it up under this
    /// migration: the target discards its copy.
    Aborted,
    /// The source has no image of the domain at all: stay parked (a person
    /// must decide; guessing could lose the domain or run it twice).
    Unknown,
}

/// Why a target refused a migration. Every refusal comes before the
/// target acknowledges `Durable`, so the source keeps the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The stream broke the protocol (bad order, counts, hashes).
    Protocol,
    /// The spare disk failed or is too small.
    Storage,
    /// The module or the metadata is over the bound a legitimate domain
    /// keeps to.
    TooLarge,
    /// The target's heap has no room for the module or metadata now.
    NoRoom,
    /// The target knows a domain of that name already.
    NameTaken,
    /// The target knows a domain with that ID already.
    IdTaken,
    /// Another migration is coming in to the target.
    Busy,
    /// The target has no spare disk to receive the domain on.
    NoSpare,
}

impl Refusal {
    /// The byte a refusal travels as.
    fn code(self) -> u8 {
        match self {
            Refusal::Protocol => 0,
            Refusal::Storage => 1,
            Refusal::TooLarge => 2,
            Refusal::NoRoom => 3,
            Refusal::NameTaken => 4,
            Refusal::IdTaken => 5,
            Refusal::Busy => 6,
            Refusal::NoSpare => 7,
        }
    }

    fn from_code(code: u8) -> Option<Refusal> {
        Some(match code {
            0 => Refusal::Protocol,
            1 => Refusal::Storage,
            2 => Refusal::TooLarge,
            3 => Refusal::NoRoom,
            4 => Refusal::NameTaken,
            5 => Refusal::IdTaken,
            6 => Refusal::Busy,
            7 => Refusal::NoSpare,
            _ => return None,
        })
    }
}

/// The refusal as the source's console says it, after "refused by PEER: ".
impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Refusal::Protocol => "the stream broke the protocol",
            Refusal::Storage => "its spare disk failed",
            Refusal::TooLarge => "the module or metadata is over its bounds",
            Refusal::NoRoom => "its heap has no room for the domain now",
            Refusal::NameTaken => "it has a domain of that name already",
            Refusal::IdTaken => "it has a domain with that ID already",
            Refusal::Busy => "another migration is coming in there",
            Refusal::NoSpare => "it has no spare disk",
        })
    }
}

/// One protocol message, borrowing its bulk bytes from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireMessage<'a> {
    /// Source: a migration starts; module and metadata chunks follow.
    Begin {
        /// The migration.
        migration_id: MigrationId,
        /// The domain that moves.
        domain_id: DomainId,
        /// The module's length.
        module_len_bytes: u64,
        /// The module's SHA-256.
        module_sha256: ModuleSha256,
    },
    /// Source: module bytes at `offset`.
    ModuleChunk {
        /// Where these bytes go.
        offset: u64,
        /// At most [`CHUNK_LEN_BYTES`].
        bytes: &'a [u8],
    },
    /// Source: postcard-encoded [`crate::Metadata`] bytes at `offset` of
    /// `total_len_bytes`.
    MetadataChunk {
        /// The whole encoding's length.
        total_len_bytes: u64,
        /// Where these bytes go.
        offset: u64,
        /// At most [`CHUNK_LEN_BYTES`].
        bytes: &'a [u8],
    },
    /// Source: a stored page's committed contents.
    Page {
        /// Which page.
        page_index: u64,
        /// Its bytes.
        bytes: &'a [u8; PAGE_SIZE],
        /// The CRC-32C of `bytes` (the image's page checksum). Encoding
        /// trusts it, so that a page read checked against its CRC is not
        /// checksummed again; decoding computes it. It takes part in the
        /// frame's checksum, so a wrong one never passes.
        crc: u32,
    },
    /// Source: a page that was stored and no longer is (it reads as zeros).
    PageRemoved {
        /// Which page.
        page_index: u64,
    },
    /// Source, in the final round after its pages: the descriptor of the
    /// next snapshot (see `source.rs`: its tag, creation time and record)
    /// at `offset` of `total_len_bytes`. `Page` messages that follow are
    /// the snapshot's pages, up to its [`WireMessage::SnapshotEnd`].
    SnapshotChunk {
        /// The whole descriptor's length.
        total_len_bytes: u64,
        /// Where these bytes go.
        offset: u64,
        /// At most [`CHUNK_LEN_BYTES`].
        bytes: &'a [u8],
    },
    /// Source: the snapshot stores page `page_index` with the contents the
    /// live state has (sent already): the target shares that block.
    SnapshotPageShared {
        /// Which page.
        page_index: u64,
    },
    /// Source: the snapshot's pages are all sent.
    SnapshotEnd {
        /// Pages the snapshot stores.
        pages_stored: u64,
        /// [`super::pages_digest`] of them.
        pages_digest: u32,
    },
    /// Source: the round's changes are all sent.
    EndRound {
        /// The round, from 0.
        round: u32,
        /// Pre-copy or final.
        kind: RoundKind,
        /// Page and page-removed messages in this round.
        changes: u64,
        /// Pages the source's snapshot stores.
        pages_stored: u64,
        /// [`super::pages_digest`] of the source's snapshot.
        pages_digest: u32,
    },
    /// Source: it has committed the domain as moved away; run it.
    HandOver {
        /// The migration.
        migration_id: MigrationId,
    },
    /// Source: the migration is abandoned; discard the copy.
    Abort {
        /// The migration.
        migration_id: MigrationId,
    },
    /// Target: the round has arrived (staged on the spare disk; only the
    /// final round is committed).
    RoundReceived {
        /// The round.
        round: u32,
    },
    /// Target: the complete final state is durable and parked.
    Durable {
        /// The migration.
        migration_id: MigrationId,
    },
    /// Target: it owns and runs the domain; the source's tombstone may go.
    Running {
        /// The migration.
        migration_id: MigrationId,
    },
    /// Target: it cannot go on.
    Refused {
        /// Why.
        reason: Refusal,
    },
    /// Parked target: did you give this domain up?
    Query {
        /// The migration.
        migration_id: MigrationId,
        /// The domain.
        domain_id: DomainId,
    },
    /// Source: the answer to a query.
    Answer {
        /// The migration.
        migration_id: MigrationId,
        /// The answer.
        verdict: Verdict,
    },
}

const KIND_BEGIN: u8 = 1;
const KIND_MODULE_CHUNK: u8 = 2;
const KIND_METADATA_CHUNK: u8 = 3;
const KIND_PAGE: u8 = 4;
const KIND_PAGE_REMOVED: u8 = 5;
const KIND_END_ROUND: u8 = 6;
const KIND_HAND_OVER: u8 = 7;
const KIND_ABORT: u8 = 8;
const KIND_ROUND_RECEIVED: u8 = 9;
const KIND_DURABLE: u8 = 10;
const KIND_RUNNING: u8 = 11;
const KIND_REFUSED: u8 = 12;
const KIND_QUERY: u8 = 13;
const KIND_ANSWER: u8 = 14;
const KIND_SNAPSHOT_CHUNK: u8 = 15;
const KIND_SNAPSHOT_PAGE_SHARED: u8 = 16;
const KIND_SNAPSHOT_END: u8 = 17;

impl WireMessage<'_> {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Begin { .. } => "begin",
            Self::ModuleChunk { .. } => "module chunk",
            Self::MetadataChunk { .. } => "metadata chunk",
            Self::Page { .. } => "page",
            Self::PageRemoved { .. } => "page removed",
            Self::EndRound { .. } => "end of round",
            Self::HandOver { .. } => "hand-over",
            Self::Abort { .. } => "abort",
            Self::RoundReceived { .. } => "round received",
            Self::Durable { .. } => "durable",
            Self::Running { .. } => "running",
            Self::Refused { .. } => "refused",
            Self::Query { .. } => "query",
            Self::Answer { .. } => "answer",
            Self::SnapshotChunk { .. } => "snapshot chunk",
            Self::SnapshotPageShared { .. } => "snapshot page shared",
            Self::SnapshotEnd { .. } => "end of snapshot",
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Self::Begin { .. } => KIND_BEGIN,
            Self::ModuleChunk { .. } => KIND_MODULE_CHUNK,
            Self::MetadataChunk { .. } => KIND_METADATA_CHUNK,
            Self::Page { .. } => KIND_PAGE,
            Self::PageRemoved { .. } => KIND_PAGE_REMOVED,
            Self::EndRound { .. } => KIND_END_ROUND,
            Self::HandOver { .. } => KIND_HAND_OVER,
            Self::Abort { .. } => KIND_ABORT,
            Self::RoundReceived { .. } => KIND_ROUND_RECEIVED,
            Self::Durable { .. } => KIND_DURABLE,
            Self::Running { .. } => KIND_RUNNING,
            Self::Refused { .. } => KIND_REFUSED,
            Self::Query { .. } => KIND_QUERY,
            Self::Answer { .. } => KIND_ANSWER,
            Self::SnapshotChunk { .. } => KIND_SNAPSHOT_CHUNK,
            Self::SnapshotPageShared { .. } => KIND_SNAPSHOT_PAGE_SHARED,
            Self::SnapshotEnd { .. } => KIND_SNAPSHOT_END,
        }
    }

    /// Writes the message as one frame into `out` (cleared first). Chunks
    /// longer than [`CHUNK_LEN_BYTES`] are a caller bug and are refused.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.clear();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        out.push(self.kind());
        out.push(0);
        out.extend_from_slice(&[0; 8]);
        match *self {
            Self::Begin {
                migration_id,
                domain_id,
                module_len_bytes,
                module_sha256,
            } => {
                out.extend_from_slice(&migration_id.to_le_bytes());
                out.extend_from_slice(&domain_id.to_le_bytes());
                out.extend_from_slice(&module_len_bytes.to_le_bytes());
                out.extend_from_slice(&module_sha256);
            }
            Self::ModuleChunk { offset, bytes } => {
                check_chunk(bytes)?;
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Self::MetadataChunk {
                total_len_bytes,
                offset,
                bytes,
            }
            | Self::SnapshotChunk {
                total_len_bytes,
                offset,
                bytes,
            } => {
                check_chunk(bytes)?;
                out.extend_from_slice(&total_len_bytes.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Self::Page {
                page_index,
                bytes,
                crc,
            } => {
                out.extend_from_slice(&page_index.to_le_bytes());
                out.extend_from_slice(bytes);
                let payload_len = out.len() - HEADER_LEN;
                out[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
                let crc = page_frame_crc(&out[..12], &page_index.to_le_bytes(), crc);
                out[12..16].copy_from_slice(&crc.to_le_bytes());
                return Ok(());
            }
            Self::PageRemoved { page_index } | Self::SnapshotPageShared { page_index } => {
                out.extend_from_slice(&page_index.to_le_bytes())
            }
            Self::SnapshotEnd {
                pages_stored,
                pages_digest,
            } => {
                out.extend_from_slice(&pages_stored.to_le_bytes());
                out.extend_from_slice(&pages_digest.to_le_bytes());
            }
            Self::EndRound {
                round,
                kind,
                changes,
                pages_stored,
                pages_digest,
            } => {
                out.extend_from_slice(&round.to_le_bytes());
                out.push(match kind {
                    RoundKind::PreCopy => 0,
                    RoundKind::Final => 1,
                });
                out.extend_from_slice(&changes.to_le_bytes());
                out.extend_from_slice(&pages_stored.to_le_bytes());
                out.extend_from_slice(&pages_digest.to_le_bytes());
            }
            Self::HandOver { migration_id }
            | Self::Abort { migration_id }
            | Self::Durable { migration_id }
            | Self::Running { migration_id } => {
                out.extend_from_slice(&migration_id.to_le_bytes());
            }
            Self::RoundReceived { round } => out.extend_from_slice(&round.to_le_bytes()),
            Self::Refused { reason } => out.push(reason.code()),
            Self::Query {
                migration_id,
                domain_id,
            } => {
                out.extend_from_slice(&migration_id.to_le_bytes());
                out.extend_from_slice(&domain_id.to_le_bytes());
            }
            Self::Answer {
                migration_id,
                verdict,
            } => {
                out.extend_from_slice(&migration_id.to_le_bytes());
                out.push(match verdict {
                    Verdict::HandedOver => 0,
                    Verdict::Aborted => 1,
                    Verdict::Unknown => 2,
                });
            }
        }
        let payload_len = out.len() - HEADER_LEN;
        out[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
        let crc = frame_crc(&out[..12], &out[HEADER_LEN..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Decodes one whole frame, checking magic, version, length, checksum
    /// and every field.
    pub fn decode(frame: &[u8]) -> Result<WireMessage<'_>, Error> {
        let total_len = message_len(frame)?;
        if frame.len() != total_len {
            return Err(if frame.len() < total_len {
                Error::Truncated {
                    needed_bytes: total_len,
                    got_bytes: frame.len(),
                }
            } else {
                Error::TrailingBytes {
                    extra_bytes: frame.len() - total_len,
                }
            });
        }
        let stored_crc = u32::from_le_bytes([frame[12], frame[13], frame[14], frame[15]]);
        let payload = &frame[HEADER_LEN..];
        let kind = frame[6];
        // A page's checksum is computed once, for the frame and the image.
        let mut page_crc = 0;
        let crc = match payload.split_at_checked(8) {
            Some((index, page)) if kind == KIND_PAGE && page.len() == PAGE_SIZE => {
                page_crc = crate::crc32c(page);
                page_frame_crc(&frame[..12], index, page_crc)
            }
            _ => frame_crc(&frame[..12], payload),
        };
        if crc != stored_crc {
            return Err(Error::ChecksumMismatch);
        }
        let mut fields = Fields { bytes: payload };
        let message = match kind {
            KIND_BEGIN => {
                fields.expect_len(16 + 16 + 8 + 32, "begin")?;
                WireMessage::Begin {
                    migration_id: fields.u128(),
                    domain_id: DomainId(fields.u128()),
                    module_len_bytes: fields.u64(),
                    module_sha256: fields.array::<32>(),
                }
            }
            KIND_MODULE_CHUNK => {
                fields.expect_chunk(8, "module chunk")?;
                WireMessage::ModuleChunk {
                    offset: fields.u64(),
                    bytes: fields.rest(),
                }
            }
            KIND_METADATA_CHUNK => {
                fields.expect_chunk(16, "metadata chunk")?;
                WireMessage::MetadataChunk {
                    total_len_bytes: fields.u64(),
                    offset: fields.u64(),
                    bytes: fields.rest(),
                }
            }
            KIND_SNAPSHOT_CHUNK => {
                fields.expect_chunk(16, "snapshot chunk")?;
                WireMessage::SnapshotChunk {
                    total_len_bytes: fields.u64(),
                    offset: fields.u64(),
                    bytes: fields.rest(),
                }
            }
            KIND_SNAPSHOT_PAGE_SHARED => {
                fields.expect_len(8, "snapshot page shared")?;
                WireMessage::SnapshotPageShared {
                    page_index: fields.u64(),
                }
            }
            KIND_SNAPSHOT_END => {
                fields.expect_len(8 + 4, "end of snapshot")?;
                WireMessage::SnapshotEnd {
                    pages_stored: fields.u64(),
                    pages_digest: fields.u32(),
                }
            }
            KIND_PAGE => {
                fields.expect_len(8 + PAGE_SIZE, "page")?;
                let page_index = fields.u64();
                let bytes = fields.rest().try_into().map_err(|_| Error::BadLength {
                    message: "page",
                    len_bytes: payload.len(),
                })?;
                WireMessage::Page {
                    page_index,
                    bytes,
                    crc: page_crc,
                }
            }
            KIND_PAGE_REMOVED => {
                fields.expect_len(8, "page removed")?;
                WireMessage::PageRemoved {
                    page_index: fields.u64(),
                }
            }
            KIND_END_ROUND => {
                fields.expect_len(4 + 1 + 8 + 8 + 4, "end of round")?;
                let round = fields.u32();
                let kind = match fields.u8() {
                    0 => RoundKind::PreCopy,
                    1 => RoundKind::Final,
                    _ => {
                        return Err(Error::BadValue {
                            field: "round kind",
                        });
                    }
                };
                WireMessage::EndRound {
                    round,
                    kind,
                    changes: fields.u64(),
                    pages_stored: fields.u64(),
                    pages_digest: fields.u32(),
                }
            }
            KIND_HAND_OVER | KIND_ABORT | KIND_DURABLE | KIND_RUNNING => {
                fields.expect_len(16, "migration message")?;
                let migration_id = fields.u128();
                match kind {
                    KIND_HAND_OVER => WireMessage::HandOver { migration_id },
                    KIND_ABORT => WireMessage::Abort { migration_id },
                    KIND_DURABLE => WireMessage::Durable { migration_id },
                    _ => WireMessage::Running { migration_id },
                }
            }
            KIND_ROUND_RECEIVED => {
                fields.expect_len(4, "round received")?;
                WireMessage::RoundReceived {
                    round: fields.u32(),
                }
            }
            KIND_REFUSED => {
                fields.expect_len(1, "refused")?;
                let reason =
                    Refusal::from_code(fields.u8()).ok_or(Error::BadValue { field: "refusal" })?;
                WireMessage::Refused { reason }
            }
            KIND_QUERY => {
                fields.expect_len(32, "query")?;
                WireMessage::Query {
                    migration_id: fields.u128(),
                    domain_id: DomainId(fields.u128()),
                }
            }
            KIND_ANSWER => {
                fields.expect_len(17, "answer")?;
                let migration_id = fields.u128();
                let verdict = match fields.u8() {
                    0 => Verdict::HandedOver,
                    1 => Verdict::Aborted,
                    2 => Verdict::Unknown,
                    _ => return Err(Error::BadValue { field: "verdict" }),
                };
                WireMessage::Answer {
                    migration_id,
                    verdict,
                }
            }
            other => return Err(Error::UnknownKind { kind: other }),
        };
        Ok(message)
    }
}

/// The length of the whole frame that starts with `header` (at least its
/// first [`HEADER_LEN`] bytes), after checking magic, version and the
/// payload bound: what a stream transport reads next.
pub fn message_len(header: &[u8]) -> Result<usize, Error> {
    if header.len() < HEADER_LEN {
        return Err(Error::Truncated {
            needed_bytes: HEADER_LEN,
            got_bytes: header.len(),
        });
    }
    if header[..4] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != WIRE_VERSION {
        return Err(Error::UnsupportedWireVersion {
            found: version,
            supported: WIRE_VERSION,
        });
    }
    if header[7] != 0 {
        return Err(Error::BadValue {
            field: "reserved header byte",
        });
    }
    let payload_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(Error::PayloadTooLong {
            len_bytes: payload_len,
            max_bytes: MAX_PAYLOAD_LEN,
        });
    }
    Ok(HEADER_LEN + payload_len)
}

fn frame_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(header);
    digest.update(payload);
    digest.finalize()
}

/// The frame checksum of a page message from the header's first 12 bytes,
/// the page index's 8 bytes and the page's own CRC-32C, without reading the
/// page again: CRC(a ‖ b) = CRC(a)·x^(8·|b|) mod P ⊕ CRC(b) for CRC-32C
/// (its initial value and final XOR cancel out; zlib's `crc32_combine`).
fn page_frame_crc(header: &[u8], page_index: &[u8], page_crc: u32) -> u32 {
    let mut digest = CRC.digest();
    digest.update(header);
    digest.update(page_index);
    multiply_modulo(X_TO_PAGE_BITS, digest.finalize()) ^ page_crc
}

/// CRC-32C's polynomial, bit-reversed (the CRC is computed reflected).
const POLYNOMIAL_REFLECTED: u32 = 0x82F6_3B78;

/// x^(8·PAGE_SIZE) mod P, reflected: appending a page's bytes to a message
/// multiplies its CRC by this (x^1 squared 15 times is x^(2^15), and
/// 8·4096 = 2^15).
const X_TO_PAGE_BITS: u32 = {
    assert!(8 * PAGE_SIZE == 1 << 15);
    let mut power = 1 << 30;
    let mut squarings = 0;
    while squarings < 15 {
        power = multiply_modulo(power, power);
        squarings += 1;
    }
    power
};

/// a·b mod P for reflected CRC-32C polynomials (zlib's `multmodp`).
const fn multiply_modulo(a: u32, mut b: u32) -> u32 {
    let mut bit = 1u32 << 31;
    let mut product = 0;
    loop {
        if a & bit != 0 {
            product ^= b;
            if a & (bit - 1) == 0 {
                break;
            }
        }
        bit >>= 1;
        if bit == 0 {
            break;
        }
        b = if b & 1 != 0 {
            (b >> 1) ^ POLYNOMIAL_REFLECTED
        } else {
            b >> 1
        };
    }
    product
}

/// CRC-32C (the image's checksum) for checksums over several slices, with
/// the slice-by-16 tables the image uses: every page crosses this twice,
/// and the byte-at-a-time table made it most of a migration's CPU time.
pub(crate) const CRC: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

fn check_chunk(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > CHUNK_LEN_BYTES {
        return Err(Error::BadLength {
            message: "chunk",
            len_bytes: bytes.len(),
        });
    }
    Ok(())
}

/// A cursor over a payload whose length was checked first, so the readers
/// below cannot run past the end.
struct Fields<'a> {
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn expect_len(&self, len_bytes: usize, message: &'static str) -> Result<(), Error> {
        if self.bytes.len() != len_bytes {
            return Err(Error::BadLength {
                message,
                len_bytes: self.bytes.len(),
            });
        }
        Ok(())
    }

    fn expect_chunk(&self, fixed_len: usize, message: &'static str) -> Result<(), Error> {
        if self.bytes.len() < fixed_len || self.bytes.len() - fixed_len > CHUNK_LEN_BYTES {
            return Err(Error::BadLength {
                message,
                len_bytes: self.bytes.len(),
            });
        }
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut value = [0u8; N];
        let len = N.min(self.bytes.len());
        value[..len].copy_from_slice(&self.bytes[..len]);
        self.bytes = &self.bytes[len..];
        value
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take()
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn round_trip(message: WireMessage<'_>) {
        let mut frame = Vec::new();
        message.encode(&mut frame).unwrap();
        assert!(frame.len() <= MAX_MESSAGE_LEN);
        assert_eq!(message_len(&frame), Ok(frame.len()));
        assert_eq!(WireMessage::decode(&frame), Ok(message));
        // Every truncation and every single flipped bit is refused.
        for len in 0..frame.len() {
            assert!(WireMessage::decode(&frame[..len]).is_err());
        }
        for bit in 0..frame.len() * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                WireMessage::decode(&damaged).is_err(),
                "bit {bit} of {message:?}"
            );
        }
    }

    #[test]
    fn a_page_frame_checksum_is_the_checksum_of_its_bytes() {
        // Pages of assorted contents: the combined CRC equals the CRC
        // computed over the header and payload the slow way.
        for seed in 0u32..64 {
            let mut page = [0u8; PAGE_SIZE];
            let mut state = seed.wrapping_mul(0x9E37_79B9) | 1;
            for byte in page.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *byte = state as u8;
            }
            let header = [seed as u8; 12];
            let index = u64::from(seed).to_le_bytes();
            let mut payload = index.to_vec();
            payload.extend_from_slice(&page);
            assert_eq!(
                page_frame_crc(&header, &index, crate::crc32c(&page)),
                frame_crc(&header, &payload)
            );
        }
    }

    #[test]
    fn a_page_with_a_wrong_crc_never_decodes() {
        let page = [0x5a; PAGE_SIZE];
        let mut frame = Vec::new();
        WireMessage::Page {
            page_index: 1,
            bytes: &page,
            crc: crate::crc32c(&page) ^ 1,
        }
        .encode(&mut frame)
        .unwrap();
        assert_eq!(WireMessage::decode(&frame), Err(Error::ChecksumMismatch));
    }

    #[test]
    fn every_kind_round_trips_and_damage_is_caught() {
        let page = [0x5a; PAGE_SIZE];
        let chunk = vec![7u8; CHUNK_LEN_BYTES];
        for message in [
            WireMessage::Begin {
                migration_id: 1,
                domain_id: DomainId(u128::MAX),
                module_len_bytes: 99,
                module_sha256: [3; 32],
            },
            WireMessage::ModuleChunk {
                offset: 8192,
                bytes: &chunk,
            },
            WireMessage::MetadataChunk {
                total_len_bytes: 10,
                offset: 0,
                bytes: &chunk[..10],
            },
            WireMessage::Page {
                page_index: 12,
                bytes: &page,
                crc: crate::crc32c(&page),
            },
            WireMessage::PageRemoved { page_index: 3 },
            WireMessage::EndRound {
                round: 2,
                kind: RoundKind::Final,
                changes: 5,
                pages_stored: 9,
                pages_digest: 0xdead_beef,
            },
            WireMessage::HandOver { migration_id: 5 },
            WireMessage::Abort { migration_id: 5 },
            WireMessage::RoundReceived { round: 4 },
            WireMessage::Durable { migration_id: 5 },
            WireMessage::Running { migration_id: 5 },
            WireMessage::Refused {
                reason: Refusal::Storage,
            },
            WireMessage::Refused {
                reason: Refusal::NameTaken,
            },
            WireMessage::Refused {
                reason: Refusal::NoSpare,
            },
            WireMessage::Query {
                migration_id: 5,
                domain_id: DomainId(6),
            },
            WireMessage::Answer {
                migration_id: 5,
                verdict: Verdict::Unknown,
            },
            WireMessage::SnapshotChunk {
                total_len_bytes: 20_000,
                offset: 8192,
                bytes: &chunk,
            },
            WireMessage::SnapshotPageShared { page_index: 77 },
            WireMessage::SnapshotEnd {
                pages_stored: 3,
                pages_digest: 0x1234_5678,
            },
        ] {
            round_trip(message);
        }
    }

    #[test]
    fn an_oversized_chunk_is_refused_on_both_sides() {
        let chunk = vec![0u8; CHUNK_LEN_BYTES + 1];
        let mut frame = Vec::new();
        let message = WireMessage::ModuleChunk {
            offset: 0,
            bytes: &chunk,
        };
        assert!(message.encode(&mut frame).is_err());
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&WIRE_VERSION.to_le_bytes());
        header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            message_len(&header),
            Err(Error::PayloadTooLong { .. })
        ));
    }
}

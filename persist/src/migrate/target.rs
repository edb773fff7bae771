//! The target side: build a parked copy on a spare disk, then take over.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::image::Image;
use crate::metadata::{
    DomainId, MAX_NAME_LEN, Metadata, ModuleSha256, StoredStatus, module_sha256,
};
use crate::{MIN_IMAGE_BLOCKS, PAGE_SIZE};

use super::error::Error;
use super::record::{IncomingPhase, MAX_PEER_NAME_LEN, Migration, MigrationId};
use super::snapshot::{committed_locations, pages_digest};
use super::wire::{Refusal, RoundKind, WireMessage};

/// The largest module a migration carries: the vm's bound, so that a module
/// no domain could run is refused at `Begin`, before a byte is buffered.
pub const MAX_MODULE_LEN_BYTES: u64 = abi::MAX_MODULE_BYTES as u64;

/// Bytes a stored message takes besides its payload (its peer's 16-byte ID,
/// a sequence number and the payload's length, postcard-encoded), rounded up.
const MESSAGE_OVERHEAD_BYTES: u64 = 40;

/// The most receivers a migrating domain's outbox is bounded for: each may
/// hold [`abi::MAX_OUTBOX_BYTES`] of it. A domain with full outboxes to more
/// receivers than this is refused, with [`Refusal::TooLarge`].
pub const MAX_OUTBOX_RECEIVERS: u64 = 16;

/// The most peers a record counts messages with, each way.
const MAX_COUNTED_PEERS: u64 = 1024;

/// The record besides its messages: the name, at most 1,000 globals (wasmi's
/// strict limits) of at most 16 bytes, the suspension, the arguments and
/// environment, the counters.
const RECORD_BYTES: u64 = 64 * 1024;

/// The largest encoded metadata record a migration carries: what a
/// legitimate domain's record can be, from the ABI's mailbox and outbox
/// limits. About 6.9 MiB; each record is held twice while it is decoded.
pub const MAX_METADATA_LEN_BYTES: u64 = RECORD_BYTES
    + abi::MAX_MAILBOX_BYTES as u64
    + abi::MAX_MAILBOX_MESSAGES as u64 * MESSAGE_OVERHEAD_BYTES
    + MAX_OUTBOX_RECEIVERS
        * (abi::MAX_OUTBOX_BYTES as u64 + abi::MAX_OUTBOX_MESSAGES as u64 * MESSAGE_OVERHEAD_BYTES)
    + 2 * MAX_COUNTED_PEERS * MESSAGE_OVERHEAD_BYTES;

/// What the machine says about an incoming migration while it arrives: how
/// much heap the target may take for its buffers, and whether it takes the
/// domain at all. The target asks before each large allocation and before
/// it acknowledges `Durable`, so every refusal leaves the domain with the
/// source.
pub trait Admission {
    /// Heap bytes the target may allocate now for the module or for a
    /// metadata record (the machine keeps its own margin out of it).
    fn room_bytes(&self) -> u64;

    /// Whether the machine takes the domain `metadata` describes (its name
    /// and ID are free here): asked when the first metadata arrives and
    /// again at the end of the final round, before `Durable`.
    fn admit(&self, metadata: &Metadata) -> Result<(), Refusal>;
}

/// Admits every domain, with as much room as the bounds allow: for tools
/// and tests that have no machine to ask.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn room_bytes(&self) -> u64 {
        u64::MAX
    }

    fn admit(&self, _metadata: &Metadata) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Staged pages past which a pre-copy round is committed (32 MiB): fewer
/// cost the final commit, in the pause, less than the two flushes of a
/// commit of their own.
const PRE_COPY_COMMIT_PAGES: u64 = 8192;

/// What a message meant to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetEvent {
    /// Nothing to answer.
    Nothing,
    /// Send the reply `receive` wrote.
    Reply,
    /// The complete copy is durable and parked; send the reply (`Durable`).
    Parked,
    /// The domain is this machine's now: send the reply (`Running`), take
    /// the image with [`Target::into_image`] and run it.
    Running,
    /// The source abandoned the migration: discard the copy
    /// ([`Target::discard`]).
    Aborted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingBegin,
    Module,
    Metadata,
    Pages,
    Parked,
    Running,
    Aborted,
    Failed,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitingBegin => "waiting for a migration to begin",
            Self::Module => "receiving the module",
            Self::Metadata => "receiving the metadata",
            Self::Pages => "receiving pages",
            Self::Parked => "parked",
            Self::Running => "running",
            Self::Aborted => "aborted",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug)]
enum Disk<D> {
    Spare(D),
    // Boxed: an image holds a superblock and maps, a spare disk a handle.
    Image(Box<Image<D>>),
    Gone,
}

/// The receiving side of one migration, over a spare disk.
///
/// Pages go to the disk as they arrive (staged copy-on-write, committed at
/// the end of the final round, and of a pre-copy round once many are
/// staged); only the module and the metadata record are held
/// in RAM, both bounded.
#[derive(Debug)]
pub struct Target<D> {
    source: String,
    disk: Disk<D>,
    state: State,
    migration_id: MigrationId,
    domain_id: DomainId,
    module: Vec<u8>,
    module_len_bytes: u64,
    module_sha256: ModuleSha256,
    metadata_bytes: Vec<u8>,
    metadata_len_bytes: u64,
    /// The final round's metadata and the domain's log, staged at its end.
    final_metadata: Option<(Metadata, Vec<u8>)>,
    /// The descriptor of the snapshot arriving, while it is chunked.
    snapshot_bytes: Vec<u8>,
    snapshot_len_bytes: u64,
    /// The snapshot whose pages are arriving.
    snapshot: Option<IncomingSnapshot>,
    /// Snapshots imported so far.
    snapshots_received: usize,
    round_changes: u64,
    pages_received: u64,
}

impl<D: BlockDevice> Target<D> {
    /// Waits for a migration from `source` (the transport's name for it,
    /// recorded in the copy so that a reboot knows whom to ask) onto
    /// `spare`, whose contents will be replaced. Pass `&mut disk` to keep
    /// the disk whatever happens.
    pub fn new(spare: D, source: &str) -> Result<Self, Error> {
        if source.len() > MAX_PEER_NAME_LEN {
            return Err(Error::Image(crate::Error::InvalidMetadata {
                reason: "a migration peer name is longer than 255 bytes",
            }));
        }
        if spare.block_count() < MIN_IMAGE_BLOCKS {
            return Err(Error::Image(crate::Error::DeviceTooSmall {
                needed_blocks: MIN_IMAGE_BLOCKS,
                device_blocks: spare.block_count(),
            }));
        }
        Ok(Self {
            source: source.into(),
            disk: Disk::Spare(spare),
            state: State::AwaitingBegin,
            migration_id: 0,
            domain_id: DomainId(0),
            module: Vec::new(),
            module_len_bytes: 0,
            module_sha256: [0; 32],
            metadata_bytes: Vec::new(),
            metadata_len_bytes: 0,
            final_metadata: None,
            snapshot_bytes: Vec::new(),
            snapshot_len_bytes: 0,
            snapshot: None,
            snapshots_received: 0,
            round_changes: 0,
            pages_received: 0,
        })
    }

    /// Page messages received and stored so far, over all rounds.
    pub fn pages_received(&self) -> u64 {
        self.pages_received
    }

    /// The migration being received (0 before it begins).
    pub fn migration_id(&self) -> MigrationId {
        self.migration_id
    }

    /// The domain's module once it has all arrived and matched its hash
    /// (`None` before, and after a failure): the caller may compile it
    /// while the pages arrive.
    pub fn module(&self) -> Option<&[u8]> {
        match self.state {
            State::Metadata | State::Pages | State::Parked | State::Running => Some(&self.module),
            State::AwaitingBegin | State::Module | State::Aborted | State::Failed => None,
        }
    }

    /// Handles one message from the source, writing any reply into `reply`
    /// (cleared first). After an error the target is failed: send
    /// [`refusal`] of the error and discard the copy.
    pub fn receive(&mut self, frame: &[u8], reply: &mut Vec<u8>) -> Result<TargetEvent, Error> {
        self.receive_admitted(frame, reply, &AdmitAll)
    }

    /// [`Target::receive`], asking `admission` for heap room before the
    /// module and metadata buffers are allocated, and whether the domain is
    /// taken before the copy is created and before `Durable`.
    pub fn receive_admitted(
        &mut self,
        frame: &[u8],
        reply: &mut Vec<u8>,
        admission: &impl Admission,
    ) -> Result<TargetEvent, Error> {
        reply.clear();
        let result = self.handle(frame, reply, admission);
        if result.is_err() && self.state != State::Parked {
            self.state = State::Failed;
        }
        result
    }

    fn handle(
        &mut self,
        frame: &[u8],
        reply: &mut Vec<u8>,
        admission: &impl Admission,
    ) -> Result<TargetEvent, Error> {
        let message = WireMessage::decode(frame)?;
        let unexpected = Error::Unexpected {
            message: message.name(),
            state: self.state.name(),
        };
        match (self.state, message) {
            (
                State::AwaitingBegin,
                WireMessage::Begin {
                    migration_id,
                    domain_id,
                    module_len_bytes,
                    module_sha256,
                },
            ) => {
                if module_len_bytes > MAX_MODULE_LEN_BYTES {
                    return Err(Error::TooLarge {
                        what: "module",
                        len_bytes: module_len_bytes,
                        max_bytes: MAX_MODULE_LEN_BYTES,
                    });
                }
                reserve(&mut self.module, "module", module_len_bytes, admission)?;
                self.migration_id = migration_id;
                self.domain_id = domain_id;
                self.module_len_bytes = module_len_bytes;
                self.module_sha256 = module_sha256;
                self.state = State::Module;
                self.finish_module()?;
                Ok(TargetEvent::Nothing)
            }
            (State::Module, WireMessage::ModuleChunk { offset, bytes }) => {
                let expected = self.module.len() as u64;
                if offset != expected {
                    return Err(Error::OutOfOrderChunk {
                        what: "module",
                        expected_offset: expected,
                        found_offset: offset,
                    });
                }
                if expected + bytes.len() as u64 > self.module_len_bytes {
                    return Err(Error::TooLarge {
                        what: "module",
                        len_bytes: expected + bytes.len() as u64,
                        max_bytes: self.module_len_bytes,
                    });
                }
                self.module.extend_from_slice(bytes);
                self.finish_module()?;
                Ok(TargetEvent::Nothing)
            }
            (
                State::Metadata | State::Pages,
                WireMessage::MetadataChunk {
                    total_len_bytes,
                    offset,
                    bytes,
                },
            ) => {
                let chunk = self.metadata_chunk(total_len_bytes, offset, bytes, admission)?;
                if let Some((metadata, log)) = chunk {
                    if self.state == State::Metadata {
                        admit(admission, &metadata)?;
                        self.create_copy(metadata)?;
                        self.state = State::Pages;
                    } else {
                        if metadata.name != self.image()?.metadata().name {
                            return Err(Error::BadMetadata {
                                reason: "the final metadata names the domain otherwise",
                            });
                        }
                        self.final_metadata = Some((metadata, log));
                    }
                }
                Ok(TargetEvent::Nothing)
            }
            (
                State::Pages,
                WireMessage::Page {
                    page_index,
                    bytes,
                    crc,
                },
            ) => {
                if self.snapshot.is_some() {
                    return self.snapshot_page(page_index, Some((bytes, crc)), admission);
                }
                // `decode` computed the CRC and checked the frame with it.
                self.image()?.stage_page_with_crc(page_index, bytes, crc)?;
                self.round_changes += 1;
                self.pages_received += 1;
                Ok(TargetEvent::Nothing)
            }
            (
                State::Pages,
                WireMessage::SnapshotChunk {
                    total_len_bytes,
                    offset,
                    bytes,
                },
            ) if self.final_metadata.is_some() && self.snapshot.is_none() => {
                self.snapshot_chunk(total_len_bytes, offset, bytes, admission)?;
                Ok(TargetEvent::Nothing)
            }
            (State::Pages, WireMessage::SnapshotPageShared { page_index })
                if self.snapshot.is_some() =>
            {
                self.snapshot_page(page_index, None, admission)
            }
            (
                State::Pages,
                WireMessage::SnapshotEnd {
                    pages_stored,
                    pages_digest: digest,
                },
            ) if self.snapshot.is_some() => {
                self.import_snapshot(pages_stored, digest)?;
                Ok(TargetEvent::Nothing)
            }
            (State::Pages, WireMessage::PageRemoved { page_index }) if self.snapshot.is_none() => {
                self.image()?.stage_page(page_index, &[0; PAGE_SIZE])?;
                self.round_changes += 1;
                Ok(TargetEvent::Nothing)
            }
            (
                State::Pages,
                WireMessage::EndRound {
                    round,
                    kind,
                    changes,
                    pages_stored,
                    pages_digest,
                },
            ) if self.snapshot.is_none() && self.snapshot_bytes.is_empty() => {
                if changes != self.round_changes {
                    return Err(Error::RoundMismatch {
                        what: "page messages in the round",
                        expected: changes,
                        found: self.round_changes,
                    });
                }
                self.round_changes = 0;
                if kind == RoundKind::PreCopy {
                    // A pre-copy round stays staged: nothing but the final
                    // round can make the copy useful (an incomplete copy is
                    // blanked after a power cut), and the final round
                    // checks every page. Committing only bounds the page
                    // map the final commit writes while the domain is
                    // paused: once many pages are staged, they are
                    // committed now, outside the pause.
                    let image = self.image()?;
                    if image.stats().pages_staged > PRE_COPY_COMMIT_PAGES {
                        image.commit()?;
                    }
                    WireMessage::RoundReceived { round }.encode(reply)?;
                    return Ok(TargetEvent::Reply);
                }
                let (metadata, log) = self.final_metadata.take().ok_or(Error::Unexpected {
                    message: "end of the final round",
                    state: "no final metadata was received",
                })?;
                // Asked again here, before `Durable`: since the first
                // metadata the machine may have come to know another domain
                // of that name, and a refusal now still leaves the domain
                // with the source (this incomplete copy is blanked).
                admit(admission, &metadata)?;
                // Complete at once: a copy marked complete runs only once
                // the source hands it over, which it does only after
                // `Durable`, sent below once every page is checked. If the
                // check fails the copy is discarded (`discard`), and after a
                // power cut before `Durable` the source, asked, answers
                // that it kept the domain. Twice, so that both superblock
                // slots say so: a damaged newest superblock must not bring
                // back an incomplete copy, which would be discarded while
                // the source has handed over.
                self.stage_incoming(metadata, IncomingPhase::Complete)?;
                let image = self.image()?;
                image.set_log(&log);
                image.commit()?;
                check_pages(image, pages_stored, pages_digest)?;
                image.commit()?;
                self.state = State::Parked;
                WireMessage::Durable {
                    migration_id: self.migration_id,
                }
                .encode(reply)?;
                Ok(TargetEvent::Parked)
            }
            (State::Parked, WireMessage::HandOver { migration_id }) => {
                self.check_migration(migration_id)?;
                let image = self.image()?;
                take_ownership(image)?;
                self.state = State::Running;
                WireMessage::Running { migration_id }.encode(reply)?;
                Ok(TargetEvent::Running)
            }
            (
                State::AwaitingBegin
                | State::Module
                | State::Metadata
                | State::Pages
                | State::Parked
                | State::Failed,
                WireMessage::Abort { migration_id },
            ) => {
                self.check_migration(migration_id)?;
                self.state = State::Aborted;
                Ok(TargetEvent::Aborted)
            }
            _ => Err(unexpected),
        }
    }

    /// Once the whole module is here: check its hash, go on to metadata.
    fn finish_module(&mut self) -> Result<(), Error> {
        if self.module.len() as u64 == self.module_len_bytes {
            if module_sha256(&self.module) != self.module_sha256 {
                return Err(Error::ModuleSha256Mismatch);
            }
            self.state = State::Metadata;
        }
        Ok(())
    }

    /// Adds a metadata chunk; returns the metadata once complete.
    fn metadata_chunk(
        &mut self,
        total_len_bytes: u64,
        offset: u64,
        bytes: &[u8],
        admission: &impl Admission,
    ) -> Result<Option<(Metadata, Vec<u8>)>, Error> {
        if offset == 0 {
            if total_len_bytes > MAX_METADATA_LEN_BYTES {
                return Err(Error::TooLarge {
                    what: "metadata",
                    len_bytes: total_len_bytes,
                    max_bytes: MAX_METADATA_LEN_BYTES,
                });
            }
            self.metadata_bytes = Vec::new();
            // Decoding holds the record a second time.
            let room_needed = total_len_bytes.saturating_mul(2);
            let room_bytes = admission.room_bytes();
            if room_needed > room_bytes {
                return Err(Error::NoRoom {
                    what: "metadata",
                    len_bytes: room_needed,
                    room_bytes,
                });
            }
            reserve(
                &mut self.metadata_bytes,
                "metadata",
                total_len_bytes,
                admission,
            )?;
            self.metadata_len_bytes = total_len_bytes;
        }
        let expected = self.metadata_bytes.len() as u64;
        if offset != expected || total_len_bytes != self.metadata_len_bytes {
            return Err(Error::OutOfOrderChunk {
                what: "metadata",
                expected_offset: expected,
                found_offset: offset,
            });
        }
        if expected + bytes.len() as u64 > total_len_bytes {
            return Err(Error::TooLarge {
                what: "metadata",
                len_bytes: expected + bytes.len() as u64,
                max_bytes: total_len_bytes,
            });
        }
        self.metadata_bytes.extend_from_slice(bytes);
        if (self.metadata_bytes.len() as u64) < total_len_bytes {
            return Ok(None);
        }
        let (mut metadata, rest): (Metadata, &[u8]) =
            postcard::take_from_bytes(&self.metadata_bytes).map_err(|_| Error::BadMetadata {
                reason: "undecodable metadata record",
            })?;
        // The message counts, the outbox, the network record and the log
        // follow the record (source.rs).
        let log = crate::metadata::decode_messaging(rest, &mut metadata)
            .map_err(|reason| Error::BadMetadata { reason })?;
        if log.len() > crate::LOG_CAPACITY_BYTES {
            return Err(Error::TooLarge {
                what: "log",
                len_bytes: log.len() as u64,
                max_bytes: crate::LOG_CAPACITY_BYTES as u64,
            });
        }
        let log = log.to_vec();
        self.metadata_bytes = Vec::new();
        if metadata.id != self.domain_id {
            return Err(Error::BadMetadata {
                reason: "the metadata names another domain",
            });
        }
        if metadata.name.is_empty() || metadata.name.len() > MAX_NAME_LEN {
            return Err(Error::BadMetadata {
                reason: "the name must be 1 to 255 bytes",
            });
        }
        // Held to the rules a local image is (mailbox and outbox limits,
        // counts that make sense), before anything reaches the spare disk.
        crate::validate(&metadata).map_err(Error::MetadataRefused)?;
        Ok(Some((metadata, log)))
    }

    /// Adds a chunk of a snapshot's descriptor; once whole, decodes and
    /// checks it and waits for the snapshot's pages.
    fn snapshot_chunk(
        &mut self,
        total_len_bytes: u64,
        offset: u64,
        bytes: &[u8],
        admission: &impl Admission,
    ) -> Result<(), Error> {
        if offset == 0 {
            if self.snapshots_received >= crate::MAX_SNAPSHOTS {
                return Err(Error::TooLarge {
                    what: "snapshots",
                    len_bytes: self.snapshots_received as u64 + 1,
                    max_bytes: crate::MAX_SNAPSHOTS as u64,
                });
            }
            // A tag, a time and a record like the live one.
            let max_bytes = MAX_METADATA_LEN_BYTES + 128;
            if total_len_bytes > max_bytes {
                return Err(Error::TooLarge {
                    what: "snapshot record",
                    len_bytes: total_len_bytes,
                    max_bytes,
                });
            }
            self.snapshot_bytes = Vec::new();
            reserve(
                &mut self.snapshot_bytes,
                "snapshot record",
                total_len_bytes,
                admission,
            )?;
            self.snapshot_len_bytes = total_len_bytes;
        }
        let expected = self.snapshot_bytes.len() as u64;
        if offset != expected || total_len_bytes != self.snapshot_len_bytes {
            return Err(Error::OutOfOrderChunk {
                what: "snapshot record",
                expected_offset: expected,
                found_offset: offset,
            });
        }
        if expected + bytes.len() as u64 > total_len_bytes {
            return Err(Error::TooLarge {
                what: "snapshot record",
                len_bytes: expected + bytes.len() as u64,
                max_bytes: total_len_bytes,
            });
        }
        self.snapshot_bytes.extend_from_slice(bytes);
        if (self.snapshot_bytes.len() as u64) < total_len_bytes {
            return Ok(());
        }
        let bytes = core::mem::take(&mut self.snapshot_bytes);
        let undecodable = |_| Error::BadMetadata {
            reason: "undecodable snapshot record",
        };
        let ((tag, created), rest): ((String, u64), &[u8]) =
            postcard::take_from_bytes(&bytes).map_err(undecodable)?;
        let (mut metadata, rest): (Metadata, &[u8]) =
            postcard::take_from_bytes(rest).map_err(undecodable)?;
        crate::metadata::decode_messaging(rest, &mut metadata)
            .map_err(|reason| Error::BadMetadata { reason })?;
        // The same domain, held to the rules a local image is; the tag is
        // checked when the snapshot is imported.
        if metadata.id != self.domain_id || metadata.migration.is_some() {
            return Err(Error::BadMetadata {
                reason: "a snapshot's record names another domain or a migration",
            });
        }
        crate::validate(&metadata).map_err(Error::MetadataRefused)?;
        let page_limit = metadata.page_limit();
        self.snapshot = Some(IncomingSnapshot {
            tag,
            created,
            metadata,
            page_limit,
            pages: Vec::new(),
        });
        Ok(())
    }

    /// Takes the next page of the snapshot arriving: `page` written to a
    /// free block, or (`None`) the live state's block for it.
    fn snapshot_page(
        &mut self,
        page_index: u64,
        page: Option<(&[u8; PAGE_SIZE], u32)>,
        admission: &impl Admission,
    ) -> Result<TargetEvent, Error> {
        let no_snapshot = || Error::Unexpected {
            message: "snapshot page",
            state: "no snapshot is arriving",
        };
        let snapshot = self.snapshot.as_mut().ok_or_else(no_snapshot)?;
        let is_next = snapshot
            .pages
            .last()
            .is_none_or(|&(last, _)| last < page_index);
        if !is_next || page_index >= snapshot.page_limit {
            return Err(Error::BadMetadata {
                reason: "a snapshot's pages come out of order or past its memory",
            });
        }
        if snapshot.pages.len() == snapshot.pages.capacity() {
            // Grown by doubling, each time within the machine's room.
            let more = snapshot.pages.len().max(64);
            let entry_bytes = core::mem::size_of::<(u64, crate::layout::Pointer)>();
            let room_bytes = admission.room_bytes();
            let no_room = Error::NoRoom {
                what: "snapshot pages",
                len_bytes: ((snapshot.pages.len() + more) * entry_bytes) as u64,
                room_bytes,
            };
            if (more * entry_bytes) as u64 > room_bytes {
                return Err(no_room);
            }
            snapshot.pages.try_reserve(more).map_err(|_| no_room)?;
        }
        let image = self.image()?;
        let pointer = match page {
            Some((bytes, crc)) => image.write_free_page(bytes, crc)?,
            None => {
                let pointer = image.live_page_pointer(page_index)?;
                if pointer.is_none() {
                    return Err(Error::BadMetadata {
                        reason: "a snapshot shares a page the live state does not store",
                    });
                }
                pointer
            }
        };
        let snapshot = self.snapshot.as_mut().ok_or_else(no_snapshot)?;
        snapshot.pages.push((page_index, pointer));
        self.pages_received += 1;
        Ok(TargetEvent::Nothing)
    }

    /// Checks the snapshot's pages against the source's count and digest
    /// and keeps it in the copy (one commit, which also commits the pages
    /// staged so far: the copy is still incomplete and never runs).
    fn import_snapshot(&mut self, pages_stored: u64, digest: u32) -> Result<(), Error> {
        let Some(snapshot) = self.snapshot.take() else {
            return Err(Error::Unexpected {
                message: "end of snapshot",
                state: "no snapshot is arriving",
            });
        };
        let found = snapshot.pages.len() as u64;
        if found != pages_stored {
            return Err(Error::RoundMismatch {
                what: "pages of a snapshot",
                expected: pages_stored,
                found,
            });
        }
        let found = pages_digest(
            snapshot
                .pages
                .iter()
                .map(|(index, pointer)| (*index, pointer.crc.get())),
        );
        if found != digest {
            return Err(Error::RoundMismatch {
                what: "page digest of a snapshot",
                expected: u64::from(digest),
                found: u64::from(found),
            });
        }
        self.image()?.snapshot_import(
            &snapshot.tag,
            snapshot.created,
            snapshot.metadata,
            snapshot.pages,
        )?;
        self.snapshots_received += 1;
        Ok(())
    }

    /// Formats the spare disk as the incoming copy: its very first commit
    /// already says it is an incomplete incoming copy, so no power cut can
    /// leave a runnable image behind.
    fn create_copy(&mut self, metadata: Metadata) -> Result<(), Error> {
        let incoming = self.incoming(metadata, IncomingPhase::Copying);
        let Disk::Spare(device) = core::mem::replace(&mut self.disk, Disk::Gone) else {
            return Err(Error::Unexpected {
                message: "metadata",
                state: "the spare disk is already in use",
            });
        };
        // The module stays here too: `module` lends it to be compiled.
        self.disk = Disk::Image(Box::new(Image::create_from(
            device,
            incoming,
            &self.module,
        )?));
        Ok(())
    }

    fn stage_incoming(&mut self, metadata: Metadata, phase: IncomingPhase) -> Result<(), Error> {
        let incoming = self.incoming(metadata, phase);
        let image = self.image()?;
        // The counters of the copy go on from the source's.
        image.stage_metadata(incoming);
        Ok(())
    }

    /// `metadata` as a parked incoming copy stores it.
    fn incoming(&self, mut metadata: Metadata, phase: IncomingPhase) -> Metadata {
        let resume_status = core::mem::replace(&mut metadata.status, StoredStatus::MovedAway);
        metadata.migration = Some(Migration::Incoming {
            migration_id: self.migration_id,
            source: self.source.clone(),
            phase,
            resume_status,
        });
        metadata
    }

    fn image(&mut self) -> Result<&mut Image<D>, Error> {
        match &mut self.disk {
            Disk::Image(image) => Ok(image),
            _ => Err(Error::Unexpected {
                message: "page",
                state: "no copy has been created",
            }),
        }
    }

    fn check_migration(&self, found: MigrationId) -> Result<(), Error> {
        if found != self.migration_id {
            return Err(Error::WrongMigration {
                expected: self.migration_id,
                found,
            });
        }
        Ok(())
    }

    /// The image, once the domain runs here (`None` before).
    pub fn into_image(self) -> Option<Image<D>> {
        match (self.state, self.disk) {
            (State::Running, Disk::Image(image)) => Some(*image),
            _ => None,
        }
    }

    /// The complete, parked copy, when the link failed before the hand-over
    /// arrived: it must wait for the source's answer ([`super::query_for`],
    /// [`super::apply_answer`]) and never run before. `Err(self)` in any
    /// other state (boxed: a target is large).
    pub fn into_parked(self) -> Result<Image<D>, Box<Self>> {
        match (self.state, self.disk) {
            (State::Parked, Disk::Image(image)) => Ok(*image),
            (state, disk) => Err(Box::new(Self {
                state,
                disk,
                ..self
            })),
        }
    }

    /// Gives up the copy after an abort or a failure: the spare disk is
    /// blanked (when a copy was created) and returned. A parked copy is
    /// given up only after an abort, never on a failure (only the source's
    /// answer may decide it), and a running one never: both
    /// [`Error::NotDiscardable`].
    pub fn discard(self) -> Result<Option<D>, Error> {
        match (self.state, self.disk) {
            (State::Running | State::Parked, _) => Err(Error::NotDiscardable),
            (_, Disk::Spare(device)) => Ok(Some(device)),
            (_, Disk::Image(image)) => super::resolve::discard(*image).map(Some),
            (_, Disk::Gone) => Ok(None),
        }
    }
}

/// A named snapshot arriving in the final round.
#[derive(Debug)]
struct IncomingSnapshot {
    tag: String,
    created: u64,
    metadata: Metadata,
    /// What the snapshot's memory allows.
    page_limit: u64,
    /// Its pages so far, ascending, and where this image keeps each.
    pages: Vec<(u64, crate::layout::Pointer)>,
}

/// Makes a parked copy the owner: its status as it was on the source, no
/// migration record.
pub(crate) fn take_ownership<D: BlockDevice>(image: &mut Image<D>) -> Result<(), Error> {
    let before = image.metadata().clone();
    let metadata = image.metadata_mut();
    if let Some(Migration::Incoming { resume_status, .. }) = metadata.migration.take() {
        metadata.status = resume_status;
    }
    if let Err(error) = image.commit() {
        image.stage_metadata(before);
        return Err(error.into());
    }
    Ok(())
}

/// Checks the committed pages against the source's count and digest.
fn check_pages<D: BlockDevice>(
    image: &mut Image<D>,
    pages_stored: u64,
    digest: u32,
) -> Result<(), Error> {
    let locations = committed_locations(image)?;
    if locations.len() as u64 != pages_stored {
        return Err(Error::RoundMismatch {
            what: "pages stored",
            expected: pages_stored,
            found: locations.len() as u64,
        });
    }
    let found = pages_digest(
        locations
            .iter()
            .map(|(page_index, location)| (*page_index, location.crc)),
    );
    if found != digest {
        return Err(Error::RoundMismatch {
            what: "page digest",
            expected: u64::from(digest),
            found: u64::from(found),
        });
    }
    Ok(())
}

/// Reserves exactly `len_bytes` in the empty `buffer`, once the machine
/// says it has the room: a refusal, never a failed allocation.
fn reserve(
    buffer: &mut Vec<u8>,
    what: &'static str,
    len_bytes: u64,
    admission: &impl Admission,
) -> Result<(), Error> {
    let room_bytes = admission.room_bytes();
    let no_room = Error::NoRoom {
        what,
        len_bytes,
        room_bytes,
    };
    if len_bytes > room_bytes {
        return Err(no_room);
    }
    let len = usize::try_from(len_bytes).map_err(|_| no_room.clone())?;
    buffer.try_reserve_exact(len).map_err(|_| no_room)
}

/// Asks `admission` whether the domain of `metadata` is taken here.
fn admit(admission: &impl Admission, metadata: &Metadata) -> Result<(), Error> {
    admission
        .admit(metadata)
        .map_err(|reason| Error::NotAdmitted { reason })
}

/// The refusal to send the source after `error` on the target.
pub fn refusal(error: &Error, reply: &mut Vec<u8>) -> Result<(), Error> {
    let reason = match error {
        Error::Image(_) => Refusal::Storage,
        Error::TooLarge { .. } => Refusal::TooLarge,
        Error::NoRoom { .. } => Refusal::NoRoom,
        Error::NotAdmitted { reason } => *reason,
        _ => Refusal::Protocol,
    };
    WireMessage::Refused { reason }.encode(reply)
}

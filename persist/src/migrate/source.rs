//! The source side: stream committed state in rounds, then hand over.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::image::{Image, PageLocation};
use crate::metadata::{DomainId, StoredStatus};

use super::error::Error;
use super::record::{MAX_PEER_NAME_LEN, Migration, MigrationId};
use super::snapshot::{committed_locations, pages_digest, read_location};
use super::wire::{CHUNK_LEN_BYTES, RoundKind, Verdict, WireMessage};

/// What the caller does after [`Source::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStep {
    /// Send the message `poll` wrote, then poll again.
    Send,
    /// Round `round` is sent (`changes` pages in it). Call
    /// [`Source::begin_delta_round`] for another pre-copy round, or pause
    /// the domain at a safe point, commit it and call
    /// [`Source::begin_final_round`].
    RoundSent {
        /// The round.
        round: u32,
        /// Page messages it carried.
        changes: u64,
    },
    /// Wait for the target's next message and pass it to
    /// [`Source::receive`].
    AwaitingReply,
    /// The target runs the domain; this image is a tombstone that may be
    /// discarded ([`super::discard`]).
    Finished,
    /// The migration was abandoned before the hand-over: the domain is
    /// still this machine's; resume it.
    Aborted,
}

/// What a target's message meant to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    /// The target received a round (progress only).
    RoundReceived {
        /// The round.
        round: u32,
    },
    /// The hand-over is durable here: the domain must never run on this
    /// machine again. Poll to send the hand-over to the target.
    HandedOver,
    /// The target runs the domain.
    TargetRunning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Begin,
    Module,
    Metadata,
    Pages,
    /// The final round: the next snapshot's descriptor, then its pages.
    SnapshotDescriptor,
    SnapshotPages,
    EndRound,
    RoundSent,
    AwaitingDurable,
    HandOver,
    AwaitingRunning,
    Finished,
    Aborted,
    /// The hand-over commit failed: only the durable image can tell who
    /// owns the domain now.
    Uncertain,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Begin
            | Self::Module
            | Self::Metadata
            | Self::Pages
            | Self::SnapshotDescriptor
            | Self::SnapshotPages
            | Self::EndRound => "sending a round",
            Self::RoundSent => "between rounds",
            Self::AwaitingDurable => "waiting for the target to make the copy durable",
            Self::HandOver | Self::AwaitingRunning => "handing over",
            Self::Finished => "finished",
            Self::Aborted => "aborted",
            Self::Uncertain => "uncertain after a failed hand-over commit",
        }
    }

    fn is_handed_over(self) -> bool {
        matches!(
            self,
            Self::HandOver | Self::AwaitingRunning | Self::Finished
        )
    }
}

/// The sending side of one migration, over the source's open image.
///
/// It never owns the image: the domain keeps running (and committing) on it
/// between calls during the pre-copy rounds. Memory use is one location per
/// stored page (what the target holds) plus the round's list of changes;
/// pages are read one at a time as they are sent.
#[derive(Debug)]
pub struct Source {
    migration_id: MigrationId,
    target: String,
    domain_id: DomainId,
    state: State,
    /// What the target holds, as of the messages produced so far.
    sent: BTreeMap<u64, PageLocation>,
    /// The round's changes: each page and where the snapshot had it.
    changes: Vec<(u64, Option<PageLocation>)>,
    next_change: usize,
    round: u32,
    kind: RoundKind,
    round_changes: u64,
    snapshot_sequence: u64,
    /// Module bytes (Begin only) or metadata bytes being chunked.
    bulk: Vec<u8>,
    bulk_offset: usize,
    metadata_bytes: Vec<u8>,
    /// The page map of the commit numbered `current_sequence`, when the
    /// image committed after the round's snapshot.
    current: Vec<(u64, PageLocation)>,
    current_sequence: Option<u64>,
    /// The final round: the named snapshots still to send (tag and
    /// creation time, oldest first), and the pages of the one being sent.
    snapshots_to_send: alloc::collections::VecDeque<(String, u64)>,
    snapshot_pages: Vec<(u64, crate::layout::Pointer)>,
    next_snapshot_page: usize,
}

impl Source {
    /// Starts migration `migration_id` of the domain in `image` to `target`
    /// (the transport's name for it, recorded in the tombstone). Takes the
    /// first snapshot: every page the last commit stores.
    pub fn new<D: BlockDevice>(
        image: &mut Image<D>,
        migration_id: MigrationId,
        target: &str,
    ) -> Result<Self, Error> {
        if target.len() > MAX_PEER_NAME_LEN {
            return Err(Error::Image(crate::Error::InvalidMetadata {
                reason: "a migration peer name is longer than 255 bytes",
            }));
        }
        let module = image.module()?;
        let mut source = Self {
            migration_id,
            target: target.into(),
            domain_id: image.metadata().id,
            state: State::Begin,
            sent: BTreeMap::new(),
            changes: Vec::new(),
            next_change: 0,
            round: 0,
            kind: RoundKind::PreCopy,
            round_changes: 0,
            snapshot_sequence: 0,
            bulk: module,
            bulk_offset: 0,
            metadata_bytes: Vec::new(),
            current: Vec::new(),
            current_sequence: None,
            snapshots_to_send: Default::default(),
            snapshot_pages: Vec::new(),
            next_snapshot_page: 0,
        };
        source.snapshot(image)?;
        Ok(source)
    }

    /// The migration's identity.
    pub fn migration_id(&self) -> MigrationId {
        self.migration_id
    }

    /// The round being sent or last sent.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Pages the target holds so far.
    pub fn pages_sent(&self) -> u64 {
        self.sent.len() as u64
    }

    /// Compares the last commit's page map with what the target holds and
    /// queues the differences; encodes the metadata to send first.
    fn snapshot<D: BlockDevice>(&mut self, image: &mut Image<D>) -> Result<u64, Error> {
        let current = committed_locations(image)?;
        self.snapshot_sequence = image.sequence();
        self.changes.clear();
        self.next_change = 0;
        self.round_changes = 0;
        let mut held = self.sent.iter().peekable();
        for (page_index, location) in &current {
            while let Some(&(&held_index, _)) = held.peek() {
                if held_index >= *page_index {
                    break;
                }
                self.changes.push((held_index, None));
                held.next();
            }
            match held.peek() {
                Some(&(&held_index, held_location)) if held_index == *page_index => {
                    if *held_location != *location {
                        self.changes.push((*page_index, Some(*location)));
                    }
                    held.next();
                }
                _ => self.changes.push((*page_index, Some(*location))),
            }
        }
        for (&held_index, _) in held {
            self.changes.push((held_index, None));
        }
        let mut metadata = image.metadata().clone();
        metadata.migration = None;
        // The message counts, the outbox, the network record and the
        // domain's log follow the record (target.rs).
        let log = image.log()?;
        let unencodable = |_| crate::Error::InvalidMetadata {
            reason: "the metadata cannot be encoded",
        };
        let bytes = postcard::to_allocvec(&metadata).map_err(unencodable)?;
        self.metadata_bytes = crate::metadata::encode_messaging(&metadata, bytes, &log)?;
        Ok(self.changes.len() as u64)
    }

    /// Starts another pre-copy round: the pages whose committed contents
    /// changed since the last snapshot. Returns how many; when few, pause
    /// the domain and go to the final round.
    pub fn begin_delta_round<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
    ) -> Result<u64, Error> {
        self.begin_round(image, RoundKind::PreCopy)
    }

    /// Starts the final round. The caller has paused the domain at a safe
    /// point and committed it, and commits nothing more to this image until
    /// the migration is finished or aborted; the round carries the metadata,
    /// the last changed pages and then every named snapshot (its record and
    /// its pages: those the live state shares are named, not sent). Returns
    /// how many pages change.
    pub fn begin_final_round<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
    ) -> Result<u64, Error> {
        if image.stats().pages_staged != 0 {
            return Err(Error::Unexpected {
                message: "final round",
                state: "pages are staged and not committed",
            });
        }
        self.snapshots_to_send = image.snapshot_entries().into();
        self.begin_round(image, RoundKind::Final)
    }

    fn begin_round<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
        kind: RoundKind,
    ) -> Result<u64, Error> {
        if self.state != State::RoundSent {
            return Err(Error::Unexpected {
                message: "new round",
                state: self.state.name(),
            });
        }
        let changes = self.snapshot(image)?;
        self.round += 1;
        self.kind = kind;
        self.state = match kind {
            RoundKind::PreCopy => State::Pages,
            RoundKind::Final => {
                self.bulk = core::mem::take(&mut self.metadata_bytes);
                self.bulk_offset = 0;
                State::Metadata
            }
        };
        Ok(changes)
    }

    /// Writes the next message into `message` (cleared first) and says what
    /// to do with it. Reads at most one page from `image`.
    pub fn poll<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
        message: &mut Vec<u8>,
    ) -> Result<SourceStep, Error> {
        message.clear();
        loop {
            match self.state {
                State::Begin => {
                    WireMessage::Begin {
                        migration_id: self.migration_id,
                        domain_id: self.domain_id,
                        module_len_bytes: self.bulk.len() as u64,
                        module_sha256: image.module_sha256(),
                    }
                    .encode(message)?;
                    self.state = State::Module;
                    return Ok(SourceStep::Send);
                }
                State::Module => {
                    if let Some(bytes) = next_chunk(&self.bulk, &mut self.bulk_offset) {
                        let offset = (self.bulk_offset - bytes.len()) as u64;
                        WireMessage::ModuleChunk { offset, bytes }.encode(message)?;
                        return Ok(SourceStep::Send);
                    }
                    self.bulk = core::mem::take(&mut self.metadata_bytes);
                    self.bulk_offset = 0;
                    self.state = State::Metadata;
                }
                State::Metadata => {
                    if let Some(bytes) = next_chunk(&self.bulk, &mut self.bulk_offset) {
                        let offset = (self.bulk_offset - bytes.len()) as u64;
                        WireMessage::MetadataChunk {
                            total_len_bytes: self.bulk.len() as u64,
                            offset,
                            bytes,
                        }
                        .encode(message)?;
                        return Ok(SourceStep::Send);
                    }
                    self.bulk = Vec::new();
                    self.state = State::Pages;
                }
                State::Pages => {
                    if self.next_page(image, message)? {
                        return Ok(SourceStep::Send);
                    }
                    self.state = match self.kind {
                        RoundKind::PreCopy => State::EndRound,
                        RoundKind::Final => State::SnapshotDescriptor,
                    };
                }
                State::SnapshotDescriptor => {
                    if let Some(bytes) = next_chunk(&self.bulk, &mut self.bulk_offset) {
                        let offset = (self.bulk_offset - bytes.len()) as u64;
                        WireMessage::SnapshotChunk {
                            total_len_bytes: self.bulk.len() as u64,
                            offset,
                            bytes,
                        }
                        .encode(message)?;
                        return Ok(SourceStep::Send);
                    }
                    if !self.bulk.is_empty() {
                        self.bulk = Vec::new();
                        self.state = State::SnapshotPages;
                        continue;
                    }
                    match self.snapshots_to_send.pop_front() {
                        Some((tag, created)) => self.load_snapshot(image, &tag, created)?,
                        None => self.state = State::EndRound,
                    }
                }
                State::SnapshotPages => {
                    if self.next_snapshot_page(image, message)? {
                        return Ok(SourceStep::Send);
                    }
                    WireMessage::SnapshotEnd {
                        pages_stored: self.snapshot_pages.len() as u64,
                        pages_digest: pages_digest(
                            self.snapshot_pages
                                .iter()
                                .map(|(index, pointer)| (*index, pointer.crc.get())),
                        ),
                    }
                    .encode(message)?;
                    self.snapshot_pages = Vec::new();
                    self.state = State::SnapshotDescriptor;
                    return Ok(SourceStep::Send);
                }
                State::EndRound => {
                    WireMessage::EndRound {
                        round: self.round,
                        kind: self.kind,
                        changes: self.round_changes,
                        pages_stored: self.sent.len() as u64,
                        pages_digest: pages_digest(
                            self.sent
                                .iter()
                                .map(|(&index, location)| (index, location.crc)),
                        ),
                    }
                    .encode(message)?;
                    self.state = match self.kind {
                        RoundKind::PreCopy => State::RoundSent,
                        RoundKind::Final => State::AwaitingDurable,
                    };
                    return Ok(SourceStep::Send);
                }
                State::RoundSent => {
                    return Ok(SourceStep::RoundSent {
                        round: self.round,
                        changes: self.round_changes,
                    });
                }
                State::HandOver => {
                    WireMessage::HandOver {
                        migration_id: self.migration_id,
                    }
                    .encode(message)?;
                    self.state = State::AwaitingRunning;
                    return Ok(SourceStep::Send);
                }
                State::AwaitingDurable | State::AwaitingRunning | State::Uncertain => {
                    return Ok(SourceStep::AwaitingReply);
                }
                State::Finished => return Ok(SourceStep::Finished),
                State::Aborted => return Ok(SourceStep::Aborted),
            }
        }
    }

    /// Encodes the next page change of the round; false when there is none.
    fn next_page<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
        message: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        while let Some(&(page_index, snapshot_location)) = self.changes.get(self.next_change) {
            self.next_change += 1;
            let location = if image.sequence() == self.snapshot_sequence {
                // The snapshot's blocks are the newest commit's: intact.
                snapshot_location
            } else if self.kind == RoundKind::Final {
                return Err(Error::CommittedDuringFinalRound);
            } else {
                // The domain committed since the snapshot and may have
                // reused the snapshot's blocks: send what is committed now,
                // from that commit's whole map, read once per commit (a
                // lookup per page would read the map's path for each).
                if self.current_sequence != Some(image.sequence()) {
                    self.current = committed_locations(image)?;
                    self.current_sequence = Some(image.sequence());
                }
                self.current
                    .binary_search_by_key(&page_index, |&(index, _)| index)
                    .ok()
                    .map(|position| self.current[position].1)
            };
            match location {
                Some(location) => {
                    let page = read_location(image, location)?;
                    // `read_location` checked the page against this CRC.
                    WireMessage::Page {
                        page_index,
                        bytes: &page,
                        crc: location.crc,
                    }
                    .encode(message)?;
                    self.sent.insert(page_index, location);
                }
                None => {
                    if self.sent.remove(&page_index).is_none() {
                        continue;
                    }
                    WireMessage::PageRemoved { page_index }.encode(message)?;
                }
            }
            self.round_changes += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads snapshot `tag` (its record and page map) and encodes its
    /// descriptor for [`WireMessage::SnapshotChunk`]s: the tag and
    /// creation time, then the record as the final metadata is sent.
    fn load_snapshot<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
        tag: &str,
        created: u64,
    ) -> Result<(), Error> {
        let (mut metadata, pages) = image.snapshot_state(tag)?;
        metadata.migration = None;
        let unencodable = |_| crate::Error::InvalidMetadata {
            reason: "a snapshot's metadata cannot be encoded",
        };
        let bytes = postcard::to_allocvec(&(tag, created)).map_err(unencodable)?;
        let bytes = postcard::to_extend(&metadata, bytes).map_err(unencodable)?;
        self.bulk = crate::metadata::encode_messaging(&metadata, bytes, &[])?;
        self.bulk_offset = 0;
        self.snapshot_pages = pages;
        self.next_snapshot_page = 0;
        Ok(())
    }

    /// Encodes the next page of the snapshot being sent: a reference to the
    /// live page the target has when it is the same block here, else its
    /// bytes. False when none is left.
    fn next_snapshot_page<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
        message: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        let Some(&(page_index, pointer)) = self.snapshot_pages.get(self.next_snapshot_page) else {
            return Ok(false);
        };
        self.next_snapshot_page += 1;
        let location = PageLocation {
            block: pointer.block.get(),
            crc: pointer.crc.get(),
        };
        if self.sent.get(&page_index) == Some(&location) {
            WireMessage::SnapshotPageShared { page_index }.encode(message)?;
        } else {
            let page = read_location(image, location)?;
            WireMessage::Page {
                page_index,
                bytes: &page,
                crc: location.crc,
            }
            .encode(message)?;
        }
        Ok(true)
    }

    /// Handles a message from the target. On `Durable` this commits the
    /// hand-over to `image` (status [`StoredStatus::MovedAway`] and an outgoing
    /// record, committed twice so that both superblock slots hold it).
    ///
    /// If that commit fails the returned error says so and the source is
    /// left uncertain: reopen the image, whose durable record decides
    /// ([`super::ownership`], [`super::answer_query`]).
    pub fn receive<D: BlockDevice>(
        &mut self,
        image: &mut Image<D>,
        frame: &[u8],
    ) -> Result<SourceEvent, Error> {
        let message = WireMessage::decode(frame)?;
        let unexpected = Error::Unexpected {
            message: message.name(),
            state: self.state.name(),
        };
        match message {
            WireMessage::RoundReceived { round } if !self.state.is_handed_over() => {
                Ok(SourceEvent::RoundReceived { round })
            }
            WireMessage::Durable { migration_id } if self.state == State::AwaitingDurable => {
                self.check_migration(migration_id)?;
                if image.sequence() != self.snapshot_sequence {
                    return Err(Error::CommittedDuringFinalRound);
                }
                self.commit_hand_over(image)?;
                self.state = State::HandOver;
                Ok(SourceEvent::HandedOver)
            }
            WireMessage::Running { migration_id } if self.state == State::AwaitingRunning => {
                self.check_migration(migration_id)?;
                self.state = State::Finished;
                Ok(SourceEvent::TargetRunning)
            }
            WireMessage::Refused { reason } if !self.state.is_handed_over() => {
                if self.state != State::Uncertain {
                    self.state = State::Aborted;
                }
                Err(Error::Refused { reason })
            }
            _ => Err(unexpected),
        }
    }

    fn commit_hand_over<D: BlockDevice>(&mut self, image: &mut Image<D>) -> Result<(), Error> {
        let before = image.metadata().clone();
        let metadata = image.metadata_mut();
        metadata.status = StoredStatus::MovedAway;
        metadata.migration = Some(Migration::Outgoing {
            migration_id: self.migration_id,
            target: self.target.clone(),
        });
        if let Err(error) = image.commit() {
            // Not durable, or the disk holds either commit: the caller must
            // not run the domain before reopening the image to find out.
            image.stage_metadata(before);
            self.state = State::Uncertain;
            return Err(error.into());
        }
        // Once more, so that the older slot holds the record too: a damaged
        // newest superblock then cannot bring back the pre-hand-over state.
        // A failure here changes nothing: the record is already durable.
        let _ = image.commit();
        self.snapshot_sequence = image.sequence();
        Ok(())
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

    /// Abandons the migration before the hand-over and writes the abort
    /// message for the target into `message` (send it if the link is up).
    /// The domain stays this machine's: resume it. After the hand-over it
    /// is too late: [`Error::AlreadyHandedOver`].
    pub fn abort(&mut self, message: &mut Vec<u8>) -> Result<(), Error> {
        if self.state.is_handed_over() {
            return Err(Error::AlreadyHandedOver);
        }
        if self.state == State::Uncertain {
            return Err(Error::Unexpected {
                message: "abort",
                state: self.state.name(),
            });
        }
        self.state = State::Aborted;
        WireMessage::Abort {
            migration_id: self.migration_id,
        }
        .encode(message)
    }

    /// Answers a parked target that asks about this migration while it is
    /// still in flight (after a reconnect). Before the hand-over the answer
    /// aborts the migration, so it can never be handed over later.
    pub fn answer(&mut self, migration_id: MigrationId) -> Verdict {
        if migration_id != self.migration_id {
            return Verdict::Aborted;
        }
        if self.state.is_handed_over() {
            return Verdict::HandedOver;
        }
        if self.state != State::Uncertain {
            self.state = State::Aborted;
        }
        // Uncertain: the durable image decides, and the caller must answer
        // from it after reopening; until then say nothing definite.
        match self.state {
            State::Aborted => Verdict::Aborted,
            _ => Verdict::Unknown,
        }
    }
}

/// The next chunk of `bytes` from `offset`, advancing it.
fn next_chunk<'a>(bytes: &'a [u8], offset: &mut usize) -> Option<&'a [u8]> {
    if *offset >= bytes.len() {
        return None;
    }
    let end = bytes.len().min(*offset + CHUNK_LEN_BYTES);
    let chunk = &bytes[*offset..end];
    *offset = end;
    Some(chunk)
}

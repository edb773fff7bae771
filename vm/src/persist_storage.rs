//! [`Storage`] over a persist domain image: the one place vm meets persist.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use persist::{BlockDevice, Image, PageLocation};

use crate::error::Error;
use crate::memory_backing::PAGE_BYTES;
use crate::storage::{
    BlockingImport, Commit, DomainId, DomainRecord, DomainStatus, GlobalValue, MailboxMessage,
    OutboxMessage, PagerStorage, SavedGlobal, Storage, Suspension,
};

/// A domain image on a block device, seen as vm storage.
#[derive(Debug)]
pub struct PersistStorage<D: BlockDevice> {
    image: Image<D>,
    /// Where the last commit put its pages, for a pager.
    last_commit: Vec<(u64, Option<PageLocation>)>,
}

impl<D: BlockDevice> PersistStorage<D> {
    /// Wraps an open image.
    pub fn new(image: Image<D>) -> Self {
        Self {
            image,
            last_commit: Vec::new(),
        }
    }

    /// The image (to inspect it or take its device back).
    pub fn into_image(self) -> Image<D> {
        self.image
    }

    /// The image, to read its metadata and statistics.
    pub fn image(&self) -> &Image<D> {
        &self.image
    }

    /// The image, for an embedder that works on it between commits (the
    /// kernel's migration reads pages and records hand-overs through it).
    pub fn image_mut(&mut self) -> &mut Image<D> {
        &mut self.image
    }
}

fn storage_error(error: persist::Error) -> Error {
    match error {
        // A full disk is not a broken one: the domain can wait for room.
        persist::Error::NoSpace { device_blocks } => Error::DiskFull { device_blocks },
        error => Error::Storage(error.to_string()),
    }
}

/// Version of the suspension record's byte layout.
const SUSPENSION_VERSION: u8 = 1;

/// Suspension record bytes: version u8, module hash [16], import u8,
/// save buffer u32 LE, has-deadline u8, deadline u64 LE (31 bytes).
fn encode_suspension(suspension: &Suspension) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(31);
    bytes.push(SUSPENSION_VERSION);
    bytes.extend_from_slice(&suspension.module_fingerprint);
    bytes.push(suspension.import as u8);
    bytes.extend_from_slice(&suspension.save_buffer.to_le_bytes());
    bytes.push(u8::from(suspension.deadline_ns.is_some()));
    bytes.extend_from_slice(&suspension.deadline_ns.unwrap_or(0).to_le_bytes());
    bytes
}

fn decode_suspension(bytes: &[u8]) -> Result<Option<Suspension>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str| Error::Storage(format!("bad suspension record: {what}"));
    if bytes.len() != 31 || bytes[0] != SUSPENSION_VERSION {
        return Err(bad("unknown version or length"));
    }
    let mut module_fingerprint = [0; 16];
    module_fingerprint.copy_from_slice(&bytes[1..17]);
    let import = BlockingImport::from_byte(bytes[17]).ok_or_else(|| bad("unknown import"))?;
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[18..22]);
    let save_buffer = u32::from_le_bytes(word);
    let mut long = [0; 8];
    long.copy_from_slice(&bytes[23..31]);
    let deadline_ns = (bytes[22] != 0).then(|| u64::from_le_bytes(long));
    Ok(Some(Suspension {
        module_fingerprint,
        import,
        save_buffer,
        deadline_ns,
    }))
}

fn to_persist_status(status: &DomainStatus) -> persist::StoredStatus {
    match status {
        DomainStatus::Running => persist::StoredStatus::Running,
        DomainStatus::Stopped => persist::StoredStatus::Stopped,
        // Exit codes are i32 to guests and u32 on disk: keep the bits.
        DomainStatus::Exited(code) => persist::StoredStatus::Exited(*code as u32),
        DomainStatus::Trapped(reason) => persist::StoredStatus::Trapped(reason.clone()),
        DomainStatus::MovedAway => persist::StoredStatus::MovedAway,
    }
}

fn from_persist_status(status: &persist::StoredStatus) -> DomainStatus {
    match status {
        persist::StoredStatus::Running => DomainStatus::Running,
        persist::StoredStatus::Stopped => DomainStatus::Stopped,
        persist::StoredStatus::Exited(code) => DomainStatus::Exited(*code as i32),
        persist::StoredStatus::Trapped(reason) => DomainStatus::Trapped(reason.clone()),
        persist::StoredStatus::MovedAway => DomainStatus::MovedAway,
    }
}

fn to_persist_global(global: &SavedGlobal) -> persist::StoredGlobal {
    let (value_type, bits) = match global.value {
        GlobalValue::I32(value) => (abi::ValueType::I32, u64::from(value as u32)),
        GlobalValue::I64(value) => (abi::ValueType::I64, value as u64),
        GlobalValue::F32(bits) => (abi::ValueType::F32, u64::from(bits)),
        GlobalValue::F64(bits) => (abi::ValueType::F64, bits),
    };
    persist::StoredGlobal {
        index: global.index,
        value_type,
        bits,
    }
}

fn from_persist_global(global: &persist::StoredGlobal) -> SavedGlobal {
    let value = match global.value_type {
        abi::ValueType::I32 => GlobalValue::I32(global.bits as u32 as i32),
        abi::ValueType::I64 => GlobalValue::I64(global.bits as i64),
        abi::ValueType::F32 => GlobalValue::F32(global.bits as u32),
        abi::ValueType::F64 => GlobalValue::F64(global.bits),
    };
    SavedGlobal {
        index: global.index,
        value,
    }
}

/// Message counts per peer as the vm keeps them.
fn from_persist_counts(counts: &[(DomainId, u64)]) -> BTreeMap<DomainId, u64> {
    counts.iter().copied().collect()
}

/// Message counts per peer as an image keeps them.
fn to_persist_counts(counts: &BTreeMap<DomainId, u64>) -> Vec<(DomainId, u64)> {
    counts.iter().map(|(&peer, &count)| (peer, count)).collect()
}

impl<D: BlockDevice + Send + 'static> Storage for PersistStorage<D> {
    fn load(&mut self) -> Result<DomainRecord, Error> {
        // Refuse before reading: reading a huge module is what would hurt.
        let len_bytes = self.image.stats().module_len_bytes;
        if len_bytes > crate::MAX_MODULE_BYTES as u64 {
            return Err(Error::ModuleTooLarge { len_bytes });
        }
        let module = self.image.module().map_err(storage_error)?;
        let metadata = self.image.metadata().clone();
        Ok(DomainRecord {
            id: metadata.id,
            name: metadata.name,
            module,
            args: metadata.args,
            environment: metadata.env,
            memory_pages: u32::try_from(metadata.memory_pages)
                .map_err(|_| Error::Storage("memory larger than 4 GiB".into()))?,
            memory_maximum_pages: Some(
                u32::try_from(metadata.memory_max_pages.min(65536)).unwrap_or(65536),
            ),
            // Image creation is not counted as a commit: the vm's first
            // commit is the memory as instantiation leaves it.
            is_initialized: metadata.counters.commits > 0,
            globals: metadata.globals.iter().map(from_persist_global).collect(),
            suspension: decode_suspension(&metadata.suspension)?,
            status: from_persist_status(&metadata.status),
            mailbox: metadata
                .mailbox
                .into_iter()
                .map(|message| MailboxMessage {
                    from: message.sender,
                    bytes: message.bytes,
                })
                .collect(),
            sent: from_persist_counts(&metadata.message_counts.sent),
            accepted: from_persist_counts(&metadata.message_counts.accepted),
            outbox: metadata
                .outbox
                .into_iter()
                .map(|message| OutboxMessage {
                    to: message.receiver,
                    sequence: message.sequence,
                    bytes: message.bytes,
                })
                .collect(),
            clock_ns: metadata.clock_ns,
            fuel_used: metadata.counters.fuel_used,
            commits: metadata.counters.commits,
            network: metadata.network,
        })
    }

    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), Error> {
        self.image
            .read_page(page_index, page)
            .map_err(storage_error)
    }

    fn stored_pages(&mut self) -> Result<Vec<u64>, Error> {
        self.image.stored_pages().map_err(storage_error)
    }

    fn stored_page_count(&self) -> Option<u64> {
        Some(self.image.stats().pages_stored)
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), Error> {
        let mut page = [0u8; PAGE_BYTES];
        for &(page_index, bytes) in commit.pages {
            page.fill(0);
            page[..bytes.len()].copy_from_slice(bytes);
            self.image
                .stage_page(page_index, &page)
                .map_err(storage_error)?;
        }
        let record = commit.record;
        let metadata = self.image.metadata_mut();
        metadata.memory_pages = u64::from(record.memory_pages);
        metadata.globals = record.globals.iter().map(to_persist_global).collect();
        metadata.status = to_persist_status(&record.status);
        metadata.network = record.network.clone();
        metadata.suspension = record
            .suspension
            .as_ref()
            .map(encode_suspension)
            .unwrap_or_default();
        metadata.mailbox = record
            .mailbox
            .iter()
            .map(|message| persist::StoredMessage {
                sender: message.from,
                bytes: message.bytes.clone(),
            })
            .collect();
        metadata.message_counts = persist::MessageCounts {
            sent: to_persist_counts(&record.sent),
            accepted: to_persist_counts(&record.accepted),
        };
        metadata.outbox = record
            .outbox
            .iter()
            .map(|message| persist::StoredOutboxMessage {
                receiver: message.to,
                sequence: message.sequence,
                bytes: message.bytes.clone(),
            })
            .collect();
        metadata.clock_ns = record.clock_ns;
        metadata.counters.fuel_used = record.fuel_used;
        // Staged pages land where they are staged: a pager's map of where
        // pages live stays right if it is told.
        let staged = self.image.staged_locations();
        // persist counts its own commits (and this one) in `counters.commits`.
        self.image.commit().map_err(storage_error)?;
        self.last_commit = staged;
        Ok(())
    }

    fn stage_log(&mut self, lines: &[u8]) {
        self.image.append_log(lines);
    }

    fn log(&mut self) -> Result<Vec<u8>, Error> {
        self.image.log().map_err(storage_error)
    }

    fn pager(&mut self) -> Option<&mut dyn PagerStorage> {
        Some(self)
    }
}

impl<D: BlockDevice + Send> PagerStorage for PersistStorage<D> {
    fn page_locations(&mut self) -> Result<Vec<(u64, PageLocation)>, Error> {
        self.image.page_locations().map_err(storage_error)
    }

    fn committed_locations(&mut self) -> Vec<(u64, Option<PageLocation>)> {
        core::mem::take(&mut self.last_commit)
    }

    fn reserve_blocks(&mut self, count: usize) -> Result<Vec<u64>, Error> {
        self.image.reserve_blocks(count).map_err(storage_error)
    }

    fn release_blocks(&mut self, blocks: &[u64]) {
        self.image.release_blocks(blocks);
    }

    fn adopt_page(&mut self, page_index: u64, location: PageLocation) -> Result<(), Error> {
        self.image
            .adopt_page(page_index, location)
            .map_err(storage_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspension_records_round_trip() {
        let suspension = Suspension {
            module_fingerprint: [5; 16],
            import: BlockingImport::AmberRecv,
            save_buffer: 0x20000,
            deadline_ns: Some(77),
        };
        let bytes = encode_suspension(&suspension);
        assert_eq!(decode_suspension(&bytes), Ok(Some(suspension)));
        assert_eq!(decode_suspension(&[]), Ok(None));
        assert!(decode_suspension(&bytes[..30]).is_err());
    }
}

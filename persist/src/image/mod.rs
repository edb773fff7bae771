//! The domain image: create, open, read and stage pages, commit.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use zerocopy::FromZeros;
use zerocopy::little_endian::{U32, U64};

use crate::PAGE_SIZE;
use crate::blob::{read_chain, read_checked, write_chain};
use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::{Counter, Error, PoisonCause, Structure};
use crate::layout::{
    ChainPointer, FORMAT_VERSION, MAGIC, MAX_IMAGE_BLOCKS, Pointer, Superblock, crc32c,
};
use crate::metadata::{
    Counters, DomainId, MAX_NAME_LEN, Metadata, MetadataRecord, ModuleRecord, ModuleSha256,
    PAGES_PER_WASM_PAGE, StoredStatus, module_sha256,
};
use crate::page_map::{self, UpdateCounts, Updater};
use crate::space::{self, SpaceMap};
use crate::superblock::MIN_IMAGE_BLOCKS;

mod export;
mod open;
mod paging;
pub(crate) mod snapshots;
pub use open::{RollbackRecord, Unopened};
pub use paging::PageLocation;

/// What a new domain starts with.
#[derive(Debug, Clone)]
pub struct NewDomain<'a> {
    /// Its stable ID.
    pub id: DomainId,
    /// Its name ([`crate::metadata::check_name`]: 1 to [`MAX_NAME_LEN`]
    /// ASCII letters, digits, `-`, `_` and `.`).
    pub name: &'a str,
    /// The module bytes.
    pub module: &'a [u8],
    /// Initial memory size, in 64 KiB WebAssembly pages.
    pub memory_pages: u64,
    /// Maximum memory size, in 64 KiB WebAssembly pages.
    pub memory_max_pages: u64,
    /// WASI arguments.
    pub args: Vec<String>,
    /// WASI environment, `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// The TCP ports it may listen on and whether its replies are durable
    /// (default: none, not durable); checked by [`crate::check_listen`].
    pub network: crate::network::NetworkDeclaration,
}

/// The image size, in blocks, that `cargo xtask image new` picks and the
/// kernel's `spawn` compares a spare disk with: three times the maximum
/// memory, so that a commit can rewrite all of it beside the last two
/// commits, plus the module and 4 MiB for the trees and the metadata. A
/// smaller image works until its domain fills it (then the domain pauses).
pub fn default_block_count(memory_max_pages: u64, module_len_bytes: u64) -> u64 {
    let memory_blocks = memory_max_pages.saturating_mul(PAGES_PER_WASM_PAGE);
    // A little under the module chain's 4072 payload bytes per block.
    let module_blocks = module_len_bytes.div_ceil(4000);
    memory_blocks
        .saturating_mul(3)
        .saturating_add(module_blocks)
        .saturating_add(1024)
}

/// What one commit wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// The commit's sequence number.
    pub sequence: u64,
    /// Pages staged since the previous commit (each written once).
    pub pages_written: u64,
    /// Blocks written since the previous commit: staged pages, page-map
    /// nodes, metadata, free space and the superblock.
    pub blocks_written: u64,
}

/// Sizes and counts of an open image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageStats {
    /// The last commit's sequence number.
    pub sequence: u64,
    /// Blocks in the image.
    pub block_count: u64,
    /// Blocks the last commit uses (superblocks included).
    pub blocks_used: u64,
    /// Blocks neither the last commit nor staged pages use.
    pub blocks_free: u64,
    /// Pages the last commit stores (absent pages read as zero).
    pub pages_stored: u64,
    /// Pages staged for the next commit.
    pub pages_staged: u64,
    /// Length of the module in bytes.
    pub module_len_bytes: u64,
}

/// What [`Image::prepare_commit`] wrote: the superblock to write, the free
/// space to install, the metadata chain's blocks and what the commit does
/// to the snapshots.
type PreparedCommit = (
    Superblock,
    space::WrittenSpace,
    Vec<u64>,
    Option<snapshots::SnapshotEffect>,
    Option<crate::log::PreparedLog>,
);

/// An open domain image on a block device.
#[derive(Debug)]
pub struct Image<D> {
    device: D,
    /// The last durable commit.
    superblock: Superblock,
    space: SpaceMap,
    metadata: Metadata,
    module: ModuleRecord,
    /// The blocks of the last commit's metadata chain, freed by the next one.
    metadata_blocks: Vec<u64>,
    /// Pages written to free blocks since the last commit (none = zero page).
    staged_pages: BTreeMap<u64, Pointer>,
    /// Free blocks handed to a pager (`reserve_blocks`), not yet adopted.
    pager_blocks: BTreeSet<u64>,
    blocks_written_since_commit: u64,
    pages_staged_since_commit: u64,
    /// The page limit of the last commit's metadata: what bounds a walk of
    /// its page map (staged metadata may say otherwise until committed).
    committed_page_limit: u64,
    /// The least sequence number the next commit may take: after a
    /// rollback, one past the discarded commit's in its slot, so that the
    /// intact commit's superblock is never overwritten and no number ever
    /// names two states. Zero otherwise.
    next_sequence_at_least: u64,
    poisoned: Option<PoisonCause>,
    /// The last commit's snapshot table (empty: none).
    snapshots: crate::snapshot::SnapshotTable,
    /// The blocks of its chain, freed when the table changes.
    snapshot_table_blocks: Vec<u64>,
    /// The change to the table the commit under way makes.
    pending_snapshot: Option<snapshots::SnapshotChange>,
    /// The payload of the last commit's last log block.
    log_tail: Vec<u8>,
    /// What the next commit adds to the log.
    staged_log: crate::log::StagedLog,
    /// The page-map nodes the last commits wrote (see [`page_map::NodeCache`]).
    node_cache: page_map::NodeCache,
}

impl<D: BlockDevice> Image<D> {
    /// Formats `device` as a new image of a domain and commits it (sequence
    /// 1). Whatever the device held before is lost.
    pub fn create(device: D, domain: NewDomain<'_>) -> Result<Self, Error> {
        let metadata = Metadata {
            id: domain.id,
            name: domain.name.into(),
            memory_pages: domain.memory_pages,
            memory_max_pages: domain.memory_max_pages,
            globals: Vec::new(),
            status: StoredStatus::Running,
            suspension: Vec::new(),
            mailbox: Vec::new(),
            clock_ns: 0,
            counters: Counters::default(),
            args: domain.args,
            env: domain.env,
            migration: None,
            message_counts: crate::metadata::MessageCounts::default(),
            outbox: Vec::new(),
            network: domain.network.to_record(),
        };
        Self::create_from(device, metadata, domain.module)
    }

    /// Formats `device` as a new image holding `metadata` and `module` as
    /// they are (an incoming migration's copy, whose first commit must
    /// already say it is parked) and commits it (sequence 1). Whatever the
    /// device held before is lost. A network record no domain can have
    /// ([`crate::validate::validate_network`]) is refused before the
    /// device is touched.
    pub fn create_from(mut device: D, metadata: Metadata, module: &[u8]) -> Result<Self, Error> {
        crate::metadata::check_name(&metadata.name).map_err(Error::InvalidName)?;
        crate::validate::validate_network(&metadata.network).map_err(Error::MetadataRefused)?;
        let block_count = device.block_count();
        if block_count < MIN_IMAGE_BLOCKS {
            return Err(Error::DeviceTooSmall {
                needed_blocks: MIN_IMAGE_BLOCKS,
                device_blocks: block_count,
            });
        }
        if block_count > MAX_IMAGE_BLOCKS {
            return Err(Error::DeviceTooLarge {
                device_blocks: block_count,
                max_blocks: MAX_IMAGE_BLOCKS,
            });
        }
        // An old image on the device must not outrank the new one.
        let zero = [0u8; BLOCK_SIZE];
        device.write_block(0, &zero)?;
        device.write_block(1, &zero)?;
        device.flush()?;

        let mut space = SpaceMap::fresh(block_count);
        let mut blocks_written = 2;
        let (module_pointer, _) =
            write_chain(&mut device, &mut space, module, &mut blocks_written)?;
        let mut superblock = Superblock::new_zeroed();
        superblock.magic = MAGIC;
        superblock.format_version = U32::new(FORMAT_VERSION);
        superblock.block_size = U32::new(BLOCK_SIZE as u32);
        superblock.block_count = U64::new(block_count);
        let committed_page_limit = metadata.page_limit();
        let mut image = Self {
            device,
            superblock,
            space,
            metadata,
            module: ModuleRecord {
                sha256: module_sha256(module),
                first_block: module_pointer.first.block.get(),
                first_crc: module_pointer.first.crc.get(),
                len_bytes: module.len() as u64,
            },
            metadata_blocks: Vec::new(),
            staged_pages: BTreeMap::new(),
            pager_blocks: BTreeSet::new(),
            blocks_written_since_commit: blocks_written,
            pages_staged_since_commit: 0,
            committed_page_limit,
            next_sequence_at_least: 0,
            poisoned: None,
            snapshots: Default::default(),
            snapshot_table_blocks: Vec::new(),
            pending_snapshot: None,
            log_tail: Vec::new(),
            staged_log: Default::default(),
            node_cache: Default::default(),
        };
        image.write_commit()?;
        Ok(image)
    }

    /// The metadata as staged (the last commit's, plus changes since).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Changes to the metadata, written by the next commit.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Replaces the metadata, written by the next commit.
    pub fn stage_metadata(&mut self, metadata: Metadata) {
        self.metadata = metadata;
    }

    /// SHA-256 of the module bytes.
    pub fn module_sha256(&self) -> ModuleSha256 {
        self.module.sha256
    }

    /// Reads the module bytes, checking every block and the hash.
    pub fn module(&mut self) -> Result<Vec<u8>, Error> {
        let image_blocks = self.image_blocks();
        let (bytes, _) = read_chain(
            &mut self.device,
            &self.module.chain_pointer(),
            image_blocks,
            Structure::Module,
        )?;
        if module_sha256(&bytes) != self.module.sha256 {
            return Err(Error::ModuleSha256Mismatch);
        }
        Ok(bytes)
    }

    /// The last commit's sequence number.
    pub fn sequence(&self) -> u64 {
        self.superblock.sequence.get()
    }

    fn image_blocks(&self) -> u64 {
        self.superblock.block_count.get()
    }

    /// What a walk of the last commit's page map may meet.
    pub(crate) fn committed_bounds(&self) -> page_map::Bounds {
        page_map::Bounds {
            image_blocks: self.image_blocks(),
            page_limit: self.committed_page_limit,
        }
    }

    fn check_not_poisoned(&self) -> Result<(), Error> {
        match self.poisoned {
            Some(cause) => Err(Error::Poisoned { cause }),
            None => Ok(()),
        }
    }

    fn check_page_index(&self, page_index: u64) -> Result<(), Error> {
        let limit = self.metadata.page_limit();
        if page_index >= limit {
            return Err(Error::PageOutOfRange { page_index, limit });
        }
        Ok(())
    }

    /// Reads page `page_index` ([`PAGE_SIZE`] bytes) as staged, or as last
    /// committed; an absent page reads as zeros. Checksums are verified.
    pub fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), Error> {
        self.check_page_index(page_index)?;
        let image_blocks = self.image_blocks();
        let pointer = match self.staged_pages.get(&page_index) {
            Some(pointer) => *pointer,
            None => page_map::lookup(
                &mut self.device,
                &self.superblock.page_map_root,
                page_index,
                image_blocks,
            )?,
        };
        if pointer.is_none() {
            page.fill(0);
            return Ok(());
        }
        *page = read_checked(&mut self.device, &pointer, image_blocks, Structure::Page)?;
        Ok(())
    }

    /// Writes page `page_index` copy-on-write into a free block now; the next
    /// commit makes it part of the image. A zero page takes no block.
    pub fn stage_page(&mut self, page_index: u64, page: &[u8; PAGE_SIZE]) -> Result<(), Error> {
        self.stage(page_index, page, None)
    }

    /// [`Image::stage_page`] of a page whose CRC-32C the caller computed
    /// already (a migration target checks each page on arrival): the page
    /// is not checksummed twice. A wrong `crc` makes the page read as
    /// damaged, never as other contents.
    pub(crate) fn stage_page_with_crc(
        &mut self,
        page_index: u64,
        page: &[u8; PAGE_SIZE],
        crc: u32,
    ) -> Result<(), Error> {
        self.stage(page_index, page, Some(crc))
    }

    fn stage(
        &mut self,
        page_index: u64,
        page: &[u8; PAGE_SIZE],
        crc: Option<u32>,
    ) -> Result<(), Error> {
        self.check_not_poisoned()?;
        self.check_page_index(page_index)?;
        let pointer = if page.iter().all(|&byte| byte == 0) {
            Pointer::NONE
        } else {
            let block = self.space.allocate()?;
            if let Err(error) = self.device.write_block(block, page) {
                self.space.free(block);
                return Err(error.into());
            }
            self.blocks_written_since_commit += 1;
            Pointer::new(block, crc.unwrap_or_else(|| crc32c(page)))
        };
        self.pages_staged_since_commit += 1;
        if let Some(replaced) = self.staged_pages.insert(page_index, pointer)
            && !replaced.is_none()
        {
            // Staged blocks belong to no commit: free for reuse at once.
            self.space.free(replaced.block.get());
        }
        Ok(())
    }

    /// Writes `page` (whose CRC-32C is `crc`) into a free block for a
    /// snapshot being imported ([`Image::snapshot_import`]) and returns
    /// where. The block belongs to nothing until that import commits.
    pub(crate) fn write_free_page(
        &mut self,
        page: &[u8; PAGE_SIZE],
        crc: u32,
    ) -> Result<Pointer, Error> {
        self.check_not_poisoned()?;
        let block = self.space.allocate()?;
        if let Err(error) = self.device.write_block(block, page) {
            self.space.free(block);
            return Err(error.into());
        }
        self.blocks_written_since_commit += 1;
        Ok(Pointer::new(block, crc))
    }

    /// Where the live state (staged, or as last committed) keeps page
    /// `page_index`: none for a page it does not store.
    pub(crate) fn live_page_pointer(&mut self, page_index: u64) -> Result<Pointer, Error> {
        self.check_page_index(page_index)?;
        if let Some(pointer) = self.staged_pages.get(&page_index) {
            return Ok(*pointer);
        }
        let image_blocks = self.image_blocks();
        page_map::lookup(
            &mut self.device,
            &self.superblock.page_map_root,
            page_index,
            image_blocks,
        )
    }

    /// Makes every staged page and the metadata durable as one commit.
    /// When it returns `Ok` the commit survives any power cut; when it
    /// returns an error the last commit is intact and the staged changes are
    /// kept for another try, unless the image is poisoned from now on
    /// ([`Error::Poisoned`]): after a failed flush, since the writes it
    /// covered may be lost whatever later flushes say, and after a failure
    /// writing the superblock, after which only reopening tells which
    /// commit the disk holds.
    pub fn commit(&mut self) -> Result<CommitStats, Error> {
        self.check_not_poisoned()?;
        let commits = self.metadata.counters.commits;
        self.metadata.counters.commits = commits.checked_add(1).ok_or(Error::CounterOverflow {
            counter: Counter::Commits,
            value: commits,
        })?;
        let result = self.write_commit();
        if result.is_err() {
            self.metadata.counters.commits = commits;
        }
        result
    }

    fn write_commit(&mut self) -> Result<CommitStats, Error> {
        self.check_not_poisoned()?;
        // What preparing allocates is taken back if the commit fails.
        let mark = self.space.mark();
        let prepared = self.prepare_commit();
        let (superblock, written_space, metadata_blocks, snapshot_effect, log) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                self.space.undo(mark);
                return Err(error);
            }
        };
        // Everything the superblock will point at must be durable first. A
        // flush that fails may have lost any of it, and a later flush that
        // succeeds would not bring it back (fsyncgate): so no commit may
        // follow, ever, on this image. The older superblocks are untouched.
        if let Err(error) = self.device.flush() {
            self.space.undo(mark);
            self.poisoned = Some(PoisonCause::FlushFailed);
            return Err(error.into());
        }
        // From here on the older superblock's slot is being overwritten: if
        // this fails, the disk holds the last commit or this one, and only
        // reopening can tell which.
        let slot = superblock.sequence.get() % 2;
        let written = self
            .device
            .write_block(slot, &superblock.to_block())
            .and_then(|()| self.device.flush());
        if let Err(error) = written {
            self.space.undo(mark);
            self.poisoned = Some(PoisonCause::SuperblockWriteFailed);
            return Err(error.into());
        }
        self.blocks_written_since_commit += 1;
        let stats = CommitStats {
            sequence: superblock.sequence.get(),
            pages_written: self.pages_staged_since_commit,
            blocks_written: self.blocks_written_since_commit,
        };
        self.space.install(written_space);
        if let Some(mut effect) = snapshot_effect {
            if let Some(metadata) = effect.metadata.take() {
                self.metadata = metadata;
            }
            self.install_snapshot_effect(effect);
        }
        if let Some(log) = log {
            self.log_tail = log.tail;
            self.staged_log = Default::default();
        }
        self.superblock = superblock;
        self.metadata_blocks = metadata_blocks;
        self.committed_page_limit = self.metadata.page_limit();
        self.next_sequence_at_least = 0;
        self.staged_pages.clear();
        self.blocks_written_since_commit = 0;
        self.pages_staged_since_commit = 0;
        Ok(stats)
    }

    /// The next commit's sequence number, checked.
    fn next_sequence(&self) -> Result<u64, Error> {
        let sequence = self.superblock.sequence.get();
        // u64::MAX itself is never taken: opening refuses it, since no
        // commit could follow.
        let next = sequence
            .checked_add(1)
            .map(|next| next.max(self.next_sequence_at_least))
            .filter(|next| *next < u64::MAX)
            .ok_or(Error::CounterOverflow {
                counter: Counter::Sequence,
                value: sequence,
            })?;
        Ok(next)
    }

    /// Writes everything but the superblock (unflushed), with the change
    /// to the snapshot table a snapshot operation asked for.
    fn prepare_commit(&mut self) -> Result<PreparedCommit, Error> {
        let sequence = self.next_sequence()?;
        let image_blocks = self.image_blocks();
        let change = self.pending_snapshot.take();
        let applied = match &change {
            Some(change) => self.prepare_snapshot_pages(change)?,
            None => None,
        };
        let changes: Vec<(u64, Pointer)> = match applied {
            Some(_) => Vec::new(),
            None => self
                .staged_pages
                .iter()
                .map(|(page_index, pointer)| (*page_index, *pointer))
                .collect(),
        };
        let mut counts = UpdateCounts::default();
        let mut page_map_root = self.superblock.page_map_root;
        if let Some((root, pages)) = applied {
            page_map_root = root;
            counts.pages_added = pages;
            counts.pages_removed = self.superblock.pages_stored.get();
        }
        if !changes.is_empty() {
            let mut updater = Updater {
                device: &mut self.device,
                space: &mut self.space,
                image_blocks,
                blocks_written: &mut self.blocks_written_since_commit,
                counts,
                cache: &mut self.node_cache,
            };
            page_map_root = updater.update(&page_map_root, 0, &changes)?;
            counts = updater.counts;
        }
        let pages_before = self.superblock.pages_stored.get();
        let pages_stored = pages_before
            .checked_add(counts.pages_added)
            .and_then(|pages| pages.checked_sub(counts.pages_removed))
            .ok_or(Error::CounterOverflow {
                counter: Counter::PagesStored,
                value: pages_before,
            })?;
        for &block in &self.metadata_blocks {
            self.space.free(block);
        }
        let metadata = match &change {
            Some(snapshots::SnapshotChange::Apply { metadata, .. }) => {
                let mut metadata = (**metadata).clone();
                metadata.counters.commits = self.metadata.counters.commits;
                metadata
            }
            _ => self.metadata.clone(),
        };
        let record = MetadataRecord {
            metadata,
            module: self.module,
        };
        let record_bytes = crate::migrate::encode_record(&record)?;
        let (metadata_pointer, metadata_blocks) = write_chain(
            &mut self.device,
            &mut self.space,
            &record_bytes,
            &mut self.blocks_written_since_commit,
        )?;
        let mut superblock = self.superblock.clone();
        superblock.sequence = U64::new(sequence);
        superblock.page_map_root = page_map_root;
        superblock.metadata = metadata_pointer;
        superblock.pages_stored = U64::new(pages_stored);
        let snapshot_effect = match change {
            Some(change) => Some(self.prepare_snapshot_table(
                change,
                &mut superblock,
                &metadata_pointer,
                &metadata_blocks,
            )?),
            None => None,
        };
        let log = if self.staged_log.is_empty() {
            None
        } else {
            let log = crate::log::prepare(
                &mut self.device,
                &mut self.space,
                &self.superblock.log,
                &self.log_tail,
                &self.staged_log,
                &mut self.blocks_written_since_commit,
            )?;
            superblock.log = log.ring;
            Some(log)
        };
        superblock.format_version = U32::new(superblock.format_version_for_contents());
        let written_space = self
            .space
            .write(&mut self.device, &mut self.blocks_written_since_commit)?;
        superblock.free_space_root = written_space.root;
        superblock.blocks_used = U64::new(written_space.blocks_used);
        Ok((
            superblock,
            written_space,
            metadata_blocks,
            snapshot_effect,
            log,
        ))
    }

    /// Sizes and counts.
    pub fn stats(&self) -> ImageStats {
        let block_count = self.image_blocks();
        ImageStats {
            sequence: self.sequence(),
            block_count,
            blocks_used: self.superblock.blocks_used.get(),
            blocks_free: block_count.saturating_sub(self.space.unavailable()),
            pages_stored: self.superblock.pages_stored.get(),
            pages_staged: self.staged_pages.len() as u64,
            module_len_bytes: self.module.len_bytes,
        }
    }

    /// Indices of the pages stored (last commit plus staged changes), in
    /// order: the pages a restore must read; all others are zero.
    pub fn stored_pages(&mut self) -> Result<Vec<u64>, Error> {
        let mut pages = BTreeMap::new();
        let bounds = self.committed_bounds();
        page_map::walk(
            &mut self.device,
            &self.superblock.page_map_root,
            bounds,
            &mut |_| Ok(()),
            &mut |page_index, _| {
                pages.insert(page_index, ());
                Ok(())
            },
        )?;
        for (page_index, pointer) in &self.staged_pages {
            if pointer.is_none() {
                pages.remove(page_index);
            } else {
                pages.insert(*page_index, ());
            }
        }
        Ok(pages.into_keys().collect())
    }

    /// Adds `bytes` (whole lines, each ending in a line break) to the end of
    /// the domain's log, written by the next commit. The log keeps its
    /// newest [`crate::LOG_CAPACITY_BYTES`] (see the `log` module).
    pub fn append_log(&mut self, bytes: &[u8]) {
        self.staged_log.append(bytes);
    }

    /// Makes `bytes` the whole log at the next commit (an incoming
    /// migration's copy takes the source's log this way).
    pub fn set_log(&mut self, bytes: &[u8]) {
        self.staged_log = crate::log::StagedLog {
            replace: true,
            ..Default::default()
        };
        self.staged_log.append(bytes);
    }

    /// The domain's log as committed plus what is staged: its newest
    /// [`crate::LOG_CAPACITY_BYTES`] at most, from the first whole line.
    /// Reads every log block, checked.
    pub fn log(&mut self) -> Result<Vec<u8>, Error> {
        let image_blocks = self.image_blocks();
        crate::log::read(
            &mut self.device,
            &self.superblock.log,
            image_blocks,
            &self.staged_log,
        )
    }

    /// The last commit's superblock (for verification).
    pub(crate) fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The device, for callers that share it.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably. Writing to it behind the image's back voids
    /// every guarantee.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Closes the image (staged, uncommitted pages are dropped) and returns
    /// the device.
    pub fn into_device(self) -> D {
        self.device
    }
}

impl ModuleRecord {
    pub(crate) fn chain_pointer(&self) -> ChainPointer {
        ChainPointer {
            first: Pointer::new(self.first_block, self.first_crc),
            len_bytes: U64::new(self.len_bytes),
            reserved: U64::ZERO,
        }
    }
}

/// Reads and decodes the metadata chain.
pub(crate) fn read_record<D: BlockDevice>(
    device: &mut D,
    pointer: &ChainPointer,
    image_blocks: u64,
) -> Result<(MetadataRecord, Vec<u64>), Error> {
    let (bytes, blocks) = read_chain(device, pointer, image_blocks, Structure::Metadata)?;
    let record = crate::migrate::decode_record(&bytes).map_err(|reason| {
        Error::malformed(pointer.first.block.get(), Structure::Metadata, reason)
    })?;
    if record.metadata.name.len() > MAX_NAME_LEN {
        return Err(Error::malformed(
            pointer.first.block.get(),
            Structure::Metadata,
            "name longer than 255 bytes",
        ));
    }
    // A record that decodes may still hold what no domain could have
    // committed: an image from elsewhere is checked like a migration's.
    crate::validate(&record.metadata).map_err(Error::MetadataRefused)?;
    Ok((record, blocks))
}

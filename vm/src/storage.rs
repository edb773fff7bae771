//! What a domain keeps across restarts, and the storage trait that keeps it.
//!
//! `persist_storage` implements [`Storage`] over a persist image; tests and
//! benchmarks use [`MemoryStorage`]. The vm never sees blocks or superblocks.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::Error;
use crate::memory_backing::PAGE_BYTES;
pub use abi::DomainId;
pub use persist::PageLocation;

/// How a domain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainStatus {
    /// It runs (or will, once scheduled).
    Running,
    /// An operator stopped it; it keeps its state.
    Stopped,
    /// It exited with this code.
    Exited(i32),
    /// It trapped for this reason.
    Trapped(String),
    /// It was migrated to another machine.
    MovedAway,
}

/// A value of one exported mutable global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// The IEEE 754 bits.
    F32(u32),
    /// The IEEE 754 bits.
    F64(u64),
}

/// An exported mutable global and its value at the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedGlobal {
    /// The global's index in the module's global index space.
    pub index: u32,
    pub value: GlobalValue,
}

/// A message queued in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxMessage {
    pub from: DomainId,
    pub bytes: Vec<u8>,
}

/// A message a domain sent that its receiver has not yet committed: the
/// sender keeps it, and a power cut that loses the receiver's copy has it
/// delivered again (see [`crate::Scheduler`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub to: DomainId,
    /// Its number among the sender's messages to `to`.
    pub sequence: u64,
    pub bytes: Vec<u8>,
}

/// The blocking imports at which a domain can be suspended, as a suspension
/// record stores them (one byte each; `abi::blocking_imports` is the list
/// itself, and [`Self::import`] ties each variant to its entry).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingImport {
    AmberSleep = 1,
    AmberYield = 2,
    AmberRecv = 3,
    AmberCheckpoint = 4,
    WasiSchedYield = 5,
    WasiPollOneoff = 6,
    WasiFdWrite = 7,
    WasiFdRead = 8,
    AmberTcpAccept = 9,
    AmberTcpConnect = 10,
    AmberTcpRead = 11,
    AmberTcpWrite = 12,
    AmberNetPoll = 13,
    WasiSockAccept = 14,
    WasiSockRecv = 15,
    WasiSockSend = 16,
}

impl BlockingImport {
    /// The import as `(module, name)`: one of `abi::blocking_imports`.
    pub const fn import(self) -> (&'static str, &'static str) {
        match self {
            Self::AmberSleep => (abi::AMBER_MODULE, "sleep"),
            Self::AmberYield => (abi::AMBER_MODULE, "yield"),
            Self::AmberRecv => (abi::AMBER_MODULE, "recv"),
            Self::AmberCheckpoint => (abi::AMBER_MODULE, "checkpoint"),
            Self::WasiSchedYield => (abi::WASI_MODULE, "sched_yield"),
            Self::WasiPollOneoff => (abi::WASI_MODULE, "poll_oneoff"),
            Self::WasiFdWrite => (abi::WASI_MODULE, "fd_write"),
            Self::WasiFdRead => (abi::WASI_MODULE, "fd_read"),
            Self::AmberTcpAccept => (abi::AMBER_MODULE, "tcp_accept"),
            Self::AmberTcpConnect => (abi::AMBER_MODULE, "tcp_connect"),
            Self::AmberTcpRead => (abi::AMBER_MODULE, "tcp_read"),
            Self::AmberTcpWrite => (abi::AMBER_MODULE, "tcp_write"),
            Self::AmberNetPoll => (abi::AMBER_MODULE, "net_poll"),
            Self::WasiSockAccept => (abi::WASI_MODULE, "sock_accept"),
            Self::WasiSockRecv => (abi::WASI_MODULE, "sock_recv"),
            Self::WasiSockSend => (abi::WASI_MODULE, "sock_send"),
        }
    }

    /// Whether the call waits on the network (only sockets make `fd_read`
    /// and `fd_write` wait).
    pub const fn is_network(self) -> bool {
        (self as u8) >= (Self::WasiFdWrite as u8)
    }

    /// The import for a stored byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::AmberSleep,
            2 => Self::AmberYield,
            3 => Self::AmberRecv,
            4 => Self::AmberCheckpoint,
            5 => Self::WasiSchedYield,
            6 => Self::WasiPollOneoff,
            7 => Self::WasiFdWrite,
            8 => Self::WasiFdRead,
            9 => Self::AmberTcpAccept,
            10 => Self::AmberTcpConnect,
            11 => Self::AmberTcpRead,
            12 => Self::AmberTcpWrite,
            13 => Self::AmberNetPoll,
            14 => Self::WasiSockAccept,
            15 => Self::WasiSockRecv,
            16 => Self::WasiSockSend,
            _ => return None,
        })
    }
}

/// Where a domain's stack was unwound: enough to rewind it after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    /// [`crate::module_fingerprint`] of the module whose stack this is.
    pub module_fingerprint: [u8; 16],
    /// The import the guest was inside.
    pub import: BlockingImport,
    /// Where asyncify's `{current, end}` header and save area live in memory.
    pub save_buffer: u32,
    /// When the call times out, in domain clock nanoseconds (sleep, recv, poll).
    pub deadline_ns: Option<u64>,
}

/// Everything a domain keeps besides its memory pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    pub id: DomainId,
    pub name: String,
    pub module: Vec<u8>,
    pub args: Vec<String>,
    pub environment: Vec<String>,
    /// Current memory size in Wasm (64 KiB) pages; 0 before the first commit.
    pub memory_pages: u32,
    /// The image's memory limit in Wasm pages, if lower than the module's.
    pub memory_maximum_pages: Option<u32>,
    /// Set once the first commit holds the memory after instantiation.
    pub is_initialized: bool,
    pub globals: Vec<SavedGlobal>,
    pub suspension: Option<Suspension>,
    pub status: DomainStatus,
    pub mailbox: Vec<MailboxMessage>,
    /// Per receiver: how many of this domain's messages it accepted. They are
    /// numbered from 1 per receiver, which makes delivery exactly once: see
    /// [`crate::Domain::deliver_numbered`].
    pub sent: BTreeMap<DomainId, u64>,
    /// Per sender: the highest message number this domain accepted from it.
    pub accepted: BTreeMap<DomainId, u64>,
    /// Messages sent that their receivers had not committed, oldest first
    /// per receiver.
    pub outbox: Vec<OutboxMessage>,
    /// The domain's own clock, which keeps counting from here after a restart.
    pub clock_ns: u64,
    pub fuel_used: u64,
    pub commits: u64,
    /// The declared ports, and the sockets open at the commit (see
    /// `crate::sockets`).
    pub network: persist::NetworkRecord,
}

impl DomainRecord {
    /// The record of a domain that never ran.
    pub fn new(id: DomainId, name: &str, module: Vec<u8>) -> Self {
        Self {
            id,
            name: name.into(),
            module,
            args: Vec::new(),
            environment: Vec::new(),
            memory_pages: 0,
            memory_maximum_pages: None,
            is_initialized: false,
            globals: Vec::new(),
            suspension: None,
            status: DomainStatus::Running,
            mailbox: Vec::new(),
            sent: BTreeMap::new(),
            accepted: BTreeMap::new(),
            outbox: Vec::new(),
            clock_ns: 0,
            fuel_used: 0,
            commits: 0,
            network: persist::NetworkRecord::default(),
        }
    }
}

/// One commit: the new record and the 4 KiB pages that changed.
#[derive(Debug)]
pub struct Commit<'a> {
    pub record: &'a DomainRecord,
    pub pages: &'a [(u64, &'a [u8])],
}

/// What a pager that reads and writes a domain's pages on its own needs from
/// the storage (the kernel's, which pages in and out on page faults, where it
/// can neither allocate nor call the storage). See persist's `Image` methods
/// of the same names.
pub trait PagerStorage {
    /// Every stored page and where it is, ascending; others are zero.
    fn page_locations(&mut self) -> Result<Vec<(u64, PageLocation)>, Error>;
    /// Where the last commit put the pages it wrote (`None`: stored as zero).
    fn committed_locations(&mut self) -> Vec<(u64, Option<PageLocation>)>;
    /// Lends `count` free blocks to write evicted pages into.
    fn reserve_blocks(&mut self, count: usize) -> Result<Vec<u64>, Error>;
    /// Takes back lent blocks the pager did not use.
    fn release_blocks(&mut self, blocks: &[u64]);
    /// Stages page `page_index` as the bytes written at `location` (a lent
    /// block), for the next commit.
    fn adopt_page(&mut self, page_index: u64, location: PageLocation) -> Result<(), Error>;
}

/// A domain's durable state. `commit` is atomic: after a crash, `load` sees
/// the previous commit or this one, never a mix.
pub trait Storage: Send {
    /// The record as of the last commit.
    fn load(&mut self) -> Result<DomainRecord, Error>;
    /// Reads page `page_index` as of the last commit (zeros if never stored).
    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), Error>;
    /// Pages present in the last commit, ascending (others are zero).
    fn stored_pages(&mut self) -> Result<Vec<u64>, Error>;
    /// Makes `commit` durable.
    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), Error>;
    /// Adds `lines` (each ending in a line break) to the domain's log, made
    /// durable by the next commit that succeeds. A storage without a log
    /// drops them.
    fn stage_log(&mut self, lines: &[u8]) {
        let _ = lines;
    }
    /// The domain's log as committed and staged: its newest
    /// `persist::LOG_CAPACITY_BYTES` at most, from a whole line.
    fn log(&mut self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
    /// How many pages the last commit stores, when the storage knows it
    /// without reading them (for `ps`).
    fn stored_page_count(&self) -> Option<u64> {
        None
    }
    /// Block-level access for a pager, when the storage is a block device.
    fn pager(&mut self) -> Option<&mut dyn PagerStorage> {
        None
    }
}

/// A boxed storage is a storage, so that [`crate::Domain`]'s default,
/// `Domain<Box<dyn Storage>>`, holds any kind behind one type (tests, the
/// host runner); an embedder that needs its own storage back names it
/// (`Domain<PersistStorage<Disk>>`) and reaches it through
/// [`crate::Domain::storage_mut`].
impl<S: Storage + ?Sized> Storage for Box<S> {
    fn load(&mut self) -> Result<DomainRecord, Error> {
        (**self).load()
    }
    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), Error> {
        (**self).read_page(page_index, page)
    }
    fn stored_pages(&mut self) -> Result<Vec<u64>, Error> {
        (**self).stored_pages()
    }
    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), Error> {
        (**self).commit(commit)
    }
    fn stage_log(&mut self, lines: &[u8]) {
        (**self).stage_log(lines)
    }
    fn log(&mut self) -> Result<Vec<u8>, Error> {
        (**self).log()
    }
    fn stored_page_count(&self) -> Option<u64> {
        (**self).stored_page_count()
    }
    fn pager(&mut self) -> Option<&mut dyn PagerStorage> {
        (**self).pager()
    }
}

/// Storage in RAM: for tests and benchmarks, and a model of the real thing.
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    record: DomainRecord,
    pages: BTreeMap<u64, Box<[u8; PAGE_BYTES]>>,
    /// The committed log and the lines staged for the next commit.
    log: Vec<u8>,
    staged_log: Vec<u8>,
    /// When set, commits fail with this reason (a full or broken disk).
    pub failure: Option<String>,
}

impl MemoryStorage {
    /// Storage holding a domain that never ran.
    pub fn new(record: DomainRecord) -> Self {
        Self {
            record,
            pages: BTreeMap::new(),
            log: Vec::new(),
            staged_log: Vec::new(),
            failure: None,
        }
    }

    /// The record as last committed.
    pub fn record(&self) -> &DomainRecord {
        &self.record
    }
}

impl Storage for MemoryStorage {
    fn load(&mut self) -> Result<DomainRecord, Error> {
        Ok(self.record.clone())
    }

    fn read_page(&mut self, page_index: u64, page: &mut [u8; PAGE_BYTES]) -> Result<(), Error> {
        match self.pages.get(&page_index) {
            Some(stored) => page.copy_from_slice(&stored[..]),
            None => page.fill(0),
        }
        Ok(())
    }

    fn stored_pages(&mut self) -> Result<Vec<u64>, Error> {
        Ok(self.pages.keys().copied().collect())
    }

    fn commit(&mut self, commit: &Commit<'_>) -> Result<(), Error> {
        if let Some(reason) = &self.failure {
            return Err(Error::Storage(reason.clone()));
        }
        for &(page_index, bytes) in commit.pages {
            let mut page = Box::new([0u8; PAGE_BYTES]);
            page[..bytes.len()].copy_from_slice(bytes);
            self.pages.insert(page_index, page);
        }
        self.record = commit.record.clone();
        self.log.append(&mut self.staged_log);
        keep_newest_lines(&mut self.log);
        Ok(())
    }

    fn stage_log(&mut self, lines: &[u8]) {
        self.staged_log.extend_from_slice(lines);
        keep_newest_lines(&mut self.staged_log);
    }

    fn log(&mut self) -> Result<Vec<u8>, Error> {
        let mut log = self.log.clone();
        log.extend_from_slice(&self.staged_log);
        keep_newest_lines(&mut log);
        Ok(log)
    }
}

/// Drops the oldest whole lines of `log` beyond `persist::LOG_CAPACITY_BYTES`.
pub(crate) fn keep_newest_lines(log: &mut Vec<u8>) {
    let excess = log.len().saturating_sub(persist::LOG_CAPACITY_BYTES);
    if excess > 0 {
        let cut = log[excess..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(log.len(), |index| excess + index + 1);
        log.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::BlockingImport;

    #[test]
    fn stored_blocking_imports_are_the_abi_blocking_imports() {
        let stored: Vec<(&str, &str)> = (0..=u8::MAX)
            .filter_map(BlockingImport::from_byte)
            .map(BlockingImport::import)
            .collect();
        let listed: Vec<(&str, &str)> = abi::blocking_imports()
            .map(|import| (import.module, import.name))
            .collect();
        assert_eq!(stored.len(), listed.len(), "{stored:?} against {listed:?}");
        for import in &listed {
            assert!(stored.contains(import), "{import:?} has no stored byte");
        }
        for byte in 1..=16u8 {
            let import = BlockingImport::from_byte(byte).map(|import| import as u8);
            assert_eq!(import, Some(byte));
        }
    }
}

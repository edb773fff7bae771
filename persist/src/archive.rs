//! The apps archive: wasm modules on one disk, for the console's `spawn`.
//!
//! `cargo xtask` packs the built apps into one archive file; the kernel finds
//! it among its disks (it is neither a domain image nor a blank spare) and
//! `spawn APP` formats a spare disk as a new domain image from one entry.
//! The archive is read-only: nothing ever writes it after xtask.
//!
//! # Format (version 2, little-endian)
//!
//! | bytes            | what                                               |
//! |------------------|----------------------------------------------------|
//! | 0..64            | [`Header`]: magic `AMBERAPP`, version, entry count, |
//! |                  | archive length, CRC-32C of the table, of the header |
//! | 64..64 + 128 × n | n entries: an [`EntryRecord`] (name, 48 bytes,      |
//! |                  | zero-padded; module offset and length, module       |
//! |                  | CRC-32C, initial and maximum memory in 64 KiB       |
//! |                  | WebAssembly pages), then an [`EntryNetwork`]        |
//! |                  | (listen ports, their count, durable replies)        |
//! | then             | the modules, each at a 4 KiB-aligned offset         |
//!
//! Version 1 is version 2 without the [`EntryNetwork`] (96-byte entries):
//! its apps declare no ports and no durable replies. This code reads both
//! and writes version 2. The network part is a new version rather than a
//! use of the reserved bytes of version 1 because eight ports do not fit
//! in them, and because a version 1 reader must not spawn an app without
//! the ports it declares: it refuses the archive (`UnsupportedVersion`)
//! instead.
//!
//! The archive is padded with zeros to whole blocks. Every field is checked
//! before use ([`Archive::open`]): a damaged or truncated archive is one
//! [`Error`] naming what is wrong, never a panic and never a wrong module
//! (each module's CRC-32C is checked when it is read).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use abi::MAX_LISTEN_PORTS;

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::DeviceError;
use crate::layout::crc32c;
use crate::network::{ListenError, NetworkDeclaration, check_listen};

/// The first eight bytes of an apps archive.
pub const MAGIC: [u8; 8] = *b"AMBERAPP";

/// The archive format version this code writes.
pub const VERSION: u32 = 2;

/// The oldest version this code reads (its entries declare no network).
pub const OLDEST_VERSION: u32 = 1;

/// The most entries an archive may hold.
pub const MAX_ENTRIES: usize = 256;

/// The longest app name, in bytes.
pub const MAX_APP_NAME_LEN: usize = 48;

/// The largest module an archive may hold (the vm's own bound is lower).
pub const MAX_MODULE_LEN_BYTES: u64 = 64 * 1024 * 1024;

/// The most 64 KiB pages a 32-bit WebAssembly memory can have (4 GiB).
pub const MAX_MEMORY_PAGES: u64 = 65_536;

const HEADER_LEN: usize = 64;
/// The length of an [`EntryRecord`], a version 1 entry.
const RECORD_LEN: usize = 96;
/// The length of an [`EntryNetwork`].
const NETWORK_LEN: usize = 32;

/// The length of one table entry in an archive of `version` (checked
/// before).
pub const fn entry_len(version: u32) -> usize {
    if version == 1 {
        RECORD_LEN
    } else {
        RECORD_LEN + NETWORK_LEN
    }
}

/// The archive's first 64 bytes.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`VERSION`].
    pub version: U32,
    /// How many entries follow the header.
    pub entry_count: U32,
    /// Bytes from the start of the archive to the end of its last module
    /// (the padding after it excluded).
    pub archive_len_bytes: U64,
    /// CRC-32C of the entry table.
    pub table_crc: U32,
    /// Zero.
    pub reserved: [u8; 32],
    /// CRC-32C of the header's bytes before this field.
    pub header_crc: U32,
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);

/// One entry of the table.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryRecord {
    /// The app's name: UTF-8, 1 to [`MAX_APP_NAME_LEN`] bytes, zero-padded.
    pub name: [u8; MAX_APP_NAME_LEN],
    /// Where the module starts, in bytes from the start of the archive.
    pub offset: U64,
    /// The module's length in bytes.
    pub len_bytes: U64,
    /// CRC-32C of the module.
    pub crc: U32,
    /// Zero.
    pub reserved: U32,
    /// The module's initial memory, in 64 KiB WebAssembly pages.
    pub memory_pages: U64,
    /// The maximum memory a domain of this app gets, in 64 KiB pages.
    pub memory_max_pages: U64,
    /// Zero.
    pub padding: [u8; 8],
}

const _: () = assert!(size_of::<EntryRecord>() == RECORD_LEN);

/// Bit 0 of [`EntryNetwork::flags`]: durable replies.
const DURABLE_REPLIES: u8 = 1;

/// The network part of an entry (version 2), after its [`EntryRecord`].
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EntryNetwork {
    /// The TCP ports the app listens on, the first `listen_count` of them
    /// (each nonzero, none twice: [`crate::check_listen`]); zeros after.
    pub listen: [U16; MAX_LISTEN_PORTS],
    /// How many of `listen` are ports (at most [`MAX_LISTEN_PORTS`]).
    pub listen_count: u8,
    /// Bit 0: durable replies. Every other bit zero.
    pub flags: u8,
    /// Zero.
    pub reserved: [u8; 14],
}

const _: () = assert!(size_of::<EntryNetwork>() == NETWORK_LEN);

/// An app to put into an archive ([`encode`]).
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// The app's name (what `spawn` takes).
    pub name: &'a str,
    /// The finished module, as a domain image stores it.
    pub module: &'a [u8],
    /// Initial memory, in 64 KiB WebAssembly pages.
    pub memory_pages: u64,
    /// Maximum memory, in 64 KiB WebAssembly pages.
    pub memory_max_pages: u64,
    /// The TCP ports a domain of this app listens on, in socket order.
    pub listen: &'a [u16],
    /// Whether a domain of this app has durable replies.
    pub durable_replies: bool,
}

/// One app of an open archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The app's name.
    pub name: String,
    /// The module's length in bytes.
    pub len_bytes: u64,
    /// Initial memory, in 64 KiB WebAssembly pages.
    pub memory_pages: u64,
    /// Maximum memory, in 64 KiB WebAssembly pages.
    pub memory_max_pages: u64,
    /// What a domain of this app declares of its network (nothing in a
    /// version 1 archive).
    pub network: NetworkDeclaration,
    offset: u64,
    crc: u32,
}

/// Why an archive could not be written, opened or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The disk failed.
    Device(DeviceError),
    /// The first bytes are not [`MAGIC`].
    BadMagic,
    /// A format version this code does not read.
    UnsupportedVersion {
        /// The archive's version.
        found: u32,
        /// The version this code reads.
        supported: u32,
    },
    /// The header's CRC-32C does not match its bytes.
    HeaderChecksumMismatch,
    /// The entry table's CRC-32C does not match its bytes.
    TableChecksumMismatch,
    /// More entries than [`MAX_ENTRIES`].
    TooManyEntries {
        /// How many the archive claims (or the encoder was given).
        count: u64,
    },
    /// The archive claims to be longer than its disk: it was cut short.
    Truncated {
        /// The length the header claims.
        archive_len_bytes: u64,
        /// The disk's length.
        device_len_bytes: u64,
    },
    /// An entry whose fields cannot be right.
    BadEntry {
        /// Its position in the table.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// An entry whose listen ports no image can declare.
    BadListen {
        /// Its position in the table.
        index: usize,
        /// What is wrong with them.
        error: ListenError,
    },
    /// Two entries with one name.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A module's bytes do not match its CRC-32C.
    ModuleChecksumMismatch {
        /// The app.
        name: String,
    },
}

impl From<DeviceError> for Error {
    fn from(error: DeviceError) -> Self {
        Self::Device(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(error) => write!(formatter, "disk: {error}"),
            Self::BadMagic => write!(formatter, "not an apps archive (bad magic)"),
            Self::UnsupportedVersion { found, supported } => write!(
                formatter,
                "archive version {found} is not supported (this code reads {OLDEST_VERSION} to \
                 {supported})"
            ),
            Self::HeaderChecksumMismatch => write!(formatter, "header checksum mismatch"),
            Self::TableChecksumMismatch => write!(formatter, "entry table checksum mismatch"),
            Self::TooManyEntries { count } => write!(
                formatter,
                "{count} entries, more than the {MAX_ENTRIES} an archive may hold"
            ),
            Self::Truncated {
                archive_len_bytes,
                device_len_bytes,
            } => write!(
                formatter,
                "truncated: the archive is {archive_len_bytes} bytes, its disk {device_len_bytes}"
            ),
            Self::BadEntry { index, reason } => write!(formatter, "entry {index}: {reason}"),
            Self::BadListen { index, error } => write!(formatter, "entry {index}: {error}"),
            Self::DuplicateName { name } => write!(formatter, "two entries named '{name}'"),
            Self::ModuleChecksumMismatch { name } => {
                write!(formatter, "the module of '{name}' fails its checksum")
            }
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Device(error) => Some(error),
            _ => None,
        }
    }
}

/// Whether `first_bytes` (the start of a disk) begin with [`MAGIC`]: the disk
/// is meant to be an archive, damaged or not.
pub fn has_magic(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(&MAGIC)
}

/// Whether `name` may name an app: 1 to [`MAX_APP_NAME_LEN`] bytes of UTF-8
/// without NUL, spaces or control characters (a console word).
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_APP_NAME_LEN {
        return Err("the name must be 1 to 48 bytes");
    }
    if name
        .chars()
        .any(|character| character.is_whitespace() || character.is_control())
    {
        return Err("the name has a space or a control character");
    }
    Ok(())
}

fn check_memory(memory_pages: u64, memory_max_pages: u64) -> Result<(), &'static str> {
    if memory_max_pages > MAX_MEMORY_PAGES {
        return Err("the maximum memory is over 4 GiB");
    }
    if memory_pages > memory_max_pages {
        return Err("the initial memory is over the maximum");
    }
    Ok(())
}

fn round_up_to_block(len_bytes: u64) -> u64 {
    len_bytes.div_ceil(BLOCK_SIZE as u64) * BLOCK_SIZE as u64
}

/// Writes an archive of `entries`, in that order, padded to whole blocks.
pub fn encode(entries: &[NewEntry<'_>]) -> Result<Vec<u8>, Error> {
    if entries.len() > MAX_ENTRIES {
        return Err(Error::TooManyEntries {
            count: entries.len() as u64,
        });
    }
    let entry_len = entry_len(VERSION);
    let table_end = (HEADER_LEN + entries.len() * entry_len) as u64;
    let mut table = Vec::with_capacity(entries.len() * entry_len);
    let mut offsets = Vec::with_capacity(entries.len());
    // Each module starts on a block boundary, so reading one reads no other.
    let mut archive_len_bytes = table_end;
    for (index, entry) in entries.iter().enumerate() {
        check_name(entry.name).map_err(|reason| Error::BadEntry { index, reason })?;
        check_memory(entry.memory_pages, entry.memory_max_pages)
            .map_err(|reason| Error::BadEntry { index, reason })?;
        check_listen(entry.listen).map_err(|error| Error::BadListen { index, error })?;
        if entry.module.len() as u64 > MAX_MODULE_LEN_BYTES {
            return Err(Error::BadEntry {
                index,
                reason: "the module is over 64 MiB",
            });
        }
        if entries[..index]
            .iter()
            .any(|other| other.name == entry.name)
        {
            return Err(Error::DuplicateName {
                name: entry.name.into(),
            });
        }
        let offset = round_up_to_block(archive_len_bytes);
        let mut record = EntryRecord::new_zeroed();
        record.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
        record.offset = U64::new(offset);
        record.len_bytes = U64::new(entry.module.len() as u64);
        record.crc = U32::new(crc32c(entry.module));
        record.memory_pages = U64::new(entry.memory_pages);
        record.memory_max_pages = U64::new(entry.memory_max_pages);
        table.extend_from_slice(record.as_bytes());
        let mut network = EntryNetwork::new_zeroed();
        for (slot, &port) in network.listen.iter_mut().zip(entry.listen) {
            *slot = U16::new(port);
        }
        // At most MAX_LISTEN_PORTS (8), checked above.
        network.listen_count = entry.listen.len() as u8;
        if entry.durable_replies {
            network.flags = DURABLE_REPLIES;
        }
        table.extend_from_slice(network.as_bytes());
        offsets.push(offset as usize);
        archive_len_bytes = offset + entry.module.len() as u64;
    }
    let mut header = Header::new_zeroed();
    header.magic = MAGIC;
    header.version = U32::new(VERSION);
    header.entry_count = U32::new(entries.len() as u32);
    header.archive_len_bytes = U64::new(archive_len_bytes);
    header.table_crc = U32::new(crc32c(&table));
    header.header_crc = U32::new(crc32c(&header.as_bytes()[..HEADER_LEN - 4]));

    let mut bytes = vec![0u8; round_up_to_block(archive_len_bytes) as usize];
    bytes[..HEADER_LEN].copy_from_slice(header.as_bytes());
    bytes[HEADER_LEN..table_end as usize].copy_from_slice(&table);
    for (entry, offset) in entries.iter().zip(offsets) {
        bytes[offset..offset + entry.module.len()].copy_from_slice(entry.module);
    }
    Ok(bytes)
}

/// An apps archive on a block device, its table checked and held in memory.
#[derive(Debug)]
pub struct Archive<D> {
    device: D,
    entries: Vec<Entry>,
}

impl<D: BlockDevice> Archive<D> {
    /// Reads and checks the header and the entry table.
    pub fn open(mut device: D) -> Result<Self, Error> {
        let device_len_bytes = device.block_count().saturating_mul(BLOCK_SIZE as u64);
        if device_len_bytes < HEADER_LEN as u64 {
            return Err(Error::Truncated {
                archive_len_bytes: HEADER_LEN as u64,
                device_len_bytes,
            });
        }
        let mut first_block = [0u8; BLOCK_SIZE];
        device.read_block(0, &mut first_block)?;
        let header =
            Header::read_from_bytes(&first_block[..HEADER_LEN]).map_err(|_| Error::BadMagic)?;
        if header.magic != MAGIC {
            return Err(Error::BadMagic);
        }
        if crc32c(&first_block[..HEADER_LEN - 4]) != header.header_crc.get() {
            return Err(Error::HeaderChecksumMismatch);
        }
        let version = header.version.get();
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let entry_len = entry_len(version);
        let entry_count = header.entry_count.get() as usize;
        if entry_count > MAX_ENTRIES {
            return Err(Error::TooManyEntries {
                count: entry_count as u64,
            });
        }
        let archive_len_bytes = header.archive_len_bytes.get();
        let table_end = (HEADER_LEN + entry_count * entry_len) as u64;
        if archive_len_bytes > device_len_bytes || table_end > device_len_bytes {
            return Err(Error::Truncated {
                archive_len_bytes: archive_len_bytes.max(table_end),
                device_len_bytes,
            });
        }
        if table_end > archive_len_bytes {
            return Err(Error::BadEntry {
                index: 0,
                reason: "the table runs past the end of the archive",
            });
        }
        let table = read_bytes(&mut device, HEADER_LEN as u64, table_end)?;
        if crc32c(&table) != header.table_crc.get() {
            return Err(Error::TableChecksumMismatch);
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(entry_count);
        for (index, bytes) in table.chunks_exact(entry_len).enumerate() {
            let (record, network) = bytes.split_at(RECORD_LEN);
            let mut entry = decode_entry(index, record, table_end, archive_len_bytes)?;
            if !network.is_empty() {
                entry.network = decode_network(index, network)?;
            }
            if entries.iter().any(|other| other.name == entry.name) {
                return Err(Error::DuplicateName { name: entry.name });
            }
            entries.push(entry);
        }
        Ok(Self { device, entries })
    }

    /// The apps, in archive order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The app called `name`.
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.name == name)
    }

    /// Reads the module of `name`'s entry and checks its CRC-32C. `None`
    /// when the archive has no such app.
    pub fn read_module(&mut self, name: &str) -> Option<Result<Vec<u8>, Error>> {
        let entry = self.find(name)?.clone();
        let result = read_bytes(
            &mut self.device,
            entry.offset,
            entry.offset + entry.len_bytes,
        )
        .and_then(|module| {
            if crc32c(&module) == entry.crc {
                Ok(module)
            } else {
                Err(Error::ModuleChecksumMismatch { name: entry.name })
            }
        });
        Some(result)
    }

    /// The device, for its owner to identify.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.device
    }
}

/// Checks one table entry against the archive's bounds.
fn decode_entry(
    index: usize,
    bytes: &[u8],
    table_end: u64,
    archive_len_bytes: u64,
) -> Result<Entry, Error> {
    let bad = |reason| Error::BadEntry { index, reason };
    let record = EntryRecord::read_from_bytes(bytes).map_err(|_| bad("not 96 bytes"))?;
    if record.reserved.get() != 0 || record.padding != [0; 8] {
        return Err(bad("reserved bytes are not zero"));
    }
    let name_len = record
        .name
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(MAX_APP_NAME_LEN);
    if record.name[name_len..].iter().any(|&byte| byte != 0) {
        return Err(bad("the name has bytes after its end"));
    }
    let name =
        core::str::from_utf8(&record.name[..name_len]).map_err(|_| bad("the name is not UTF-8"))?;
    check_name(name).map_err(bad)?;
    let memory_pages = record.memory_pages.get();
    let memory_max_pages = record.memory_max_pages.get();
    check_memory(memory_pages, memory_max_pages).map_err(bad)?;
    let offset = record.offset.get();
    let len_bytes = record.len_bytes.get();
    if len_bytes > MAX_MODULE_LEN_BYTES {
        return Err(bad("the module is over 64 MiB"));
    }
    if offset < table_end {
        return Err(bad("the module overlaps the header or the table"));
    }
    match offset.checked_add(len_bytes) {
        Some(end) if end <= archive_len_bytes => {}
        _ => return Err(bad("the module runs past the end of the archive")),
    }
    Ok(Entry {
        name: name.into(),
        len_bytes,
        memory_pages,
        memory_max_pages,
        network: NetworkDeclaration::default(),
        offset,
        crc: record.crc.get(),
    })
}

/// Checks the network part of a version 2 entry: a port count within
/// [`MAX_LISTEN_PORTS`], ports that [`check_listen`] takes, zeros in the
/// unused slots, no flag but durable replies.
fn decode_network(index: usize, bytes: &[u8]) -> Result<NetworkDeclaration, Error> {
    let bad = |reason| Error::BadEntry { index, reason };
    let network = EntryNetwork::read_from_bytes(bytes).map_err(|_| bad("not 128 bytes"))?;
    let count = usize::from(network.listen_count);
    if count > MAX_LISTEN_PORTS {
        return Err(Error::BadListen {
            index,
            error: ListenError::TooManyPorts { count },
        });
    }
    let (ports, unused) = network.listen.split_at(count);
    if unused.iter().any(|port| port.get() != 0) {
        return Err(bad("listen ports past the port count"));
    }
    let listen: Vec<u16> = ports.iter().map(|port| port.get()).collect();
    check_listen(&listen).map_err(|error| Error::BadListen { index, error })?;
    if network.flags & !DURABLE_REPLIES != 0 {
        return Err(bad("unknown network flags"));
    }
    if network.reserved != [0; 14] {
        return Err(bad("reserved bytes are not zero"));
    }
    Ok(NetworkDeclaration {
        listen,
        durable_replies: network.flags & DURABLE_REPLIES != 0,
    })
}

/// Reads bytes `start..end` of the device; the caller has checked that they
/// lie within it.
fn read_bytes<D: BlockDevice>(device: &mut D, start: u64, end: u64) -> Result<Vec<u8>, Error> {
    let len = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(len);
    let mut block = [0u8; BLOCK_SIZE];
    let block_size = BLOCK_SIZE as u64;
    let mut position = start;
    while position < end {
        let index = position / block_size;
        device.read_block(index, &mut block)?;
        let from = (position % block_size) as usize;
        let to = ((end - index * block_size).min(block_size)) as usize;
        bytes.extend_from_slice(&block[from..to]);
        position = (index + 1) * block_size;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryDevice;

    #[test]
    fn an_empty_archive_round_trips() {
        let bytes = encode(&[]).unwrap();
        assert_eq!(bytes.len(), BLOCK_SIZE);
        let archive = Archive::open(MemoryDevice::from_bytes(bytes)).unwrap();
        assert!(archive.entries().is_empty());
    }

    #[test]
    fn modules_start_on_block_boundaries() {
        let module = [7u8; 5000];
        let entries = [
            NewEntry {
                name: "a",
                module: &module,
                memory_pages: 1,
                memory_max_pages: 2,
                listen: &[6379],
                durable_replies: true,
            },
            NewEntry {
                name: "b",
                module: &module[..3],
                memory_pages: 0,
                memory_max_pages: 0,
                listen: &[],
                durable_replies: false,
            },
        ];
        let bytes = encode(&entries).unwrap();
        // Header and table in block 0, a in blocks 1 and 2, b in block 3.
        assert_eq!(bytes.len(), 4 * BLOCK_SIZE);
        assert_eq!(&bytes[BLOCK_SIZE..BLOCK_SIZE + 5000], &module[..]);
        assert_eq!(&bytes[3 * BLOCK_SIZE..3 * BLOCK_SIZE + 3], &module[..3]);
    }
}

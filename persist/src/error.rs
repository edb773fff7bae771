//! Typed errors: one variant per cause, each naming what is wrong.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

/// An error reported by a [`crate::BlockDevice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// A block index past the end of the device.
    OutOfRange {
        /// The block asked for.
        index: u64,
        /// How many blocks the device has.
        block_count: u64,
    },
    /// The operating system reported an I/O error.
    Io {
        /// What was being done ("read", "write", "flush", ...).
        operation: &'static str,
        /// The system's description of the failure.
        message: String,
    },
    /// A [`crate::FaultyDevice`] failed this write on purpose.
    InjectedFault {
        /// The 1-based number of the failed write.
        write_number: u64,
    },
    /// A [`crate::FaultyDevice`] failed this flush on purpose, losing the
    /// writes it should have made durable.
    InjectedFlushFault {
        /// The 1-based number of the failed flush.
        flush_number: u64,
    },
    /// A [`crate::FaultyDevice`] lost power: nothing more reaches the disk.
    PoweredOff,
    /// A write that [`crate::gather::Gathering`] had already reported done failed
    /// when it reached the disk, so the layer takes nothing more: no later
    /// flush may claim durable what is not written.
    OutOfService,
    /// A [`crate::gather::BlockTransport`] was asked for a request its contract rules
    /// out (one beside the write in flight, a run longer than an area): a
    /// bug in the layer above, refused rather than carried out.
    BadRequest {
        /// What was asked ("read", "start write", "slot", ...).
        operation: &'static str,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { index, block_count } => write!(
                formatter,
                "block {index} is past the end of a device of {block_count} blocks"
            ),
            Self::Io { operation, message } => write!(formatter, "{operation} failed: {message}"),
            Self::InjectedFault { write_number } => {
                write!(formatter, "injected fault on write number {write_number}")
            }
            Self::InjectedFlushFault { flush_number } => {
                write!(formatter, "injected fault on flush number {flush_number}")
            }
            Self::PoweredOff => write!(formatter, "the device lost power"),
            Self::OutOfService => write!(
                formatter,
                "an earlier write failed after it was reported done; the device is out of service"
            ),
            Self::BadRequest { operation } => write!(
                formatter,
                "a transport refused a {operation} its contract rules out"
            ),
        }
    }
}

impl core::error::Error for DeviceError {}

/// Which on-disk structure an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// One of the two superblocks (blocks 0 and 1).
    Superblock,
    /// A node of the radix page map.
    PageMapNode,
    /// A page of linear memory.
    Page,
    /// A block of the metadata chain.
    Metadata,
    /// A block of the module chain.
    Module,
    /// The free-space root (the list of bitmap blocks).
    FreeSpaceRoot,
    /// A block of the free-space bitmap.
    FreeSpaceBitmap,
    /// A block of the snapshot table's chain.
    SnapshotTable,
    /// A block of the domain's log.
    Log,
}

impl fmt::Display for Structure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Superblock => "superblock",
            Self::PageMapNode => "page-map node",
            Self::Page => "page",
            Self::Metadata => "metadata block",
            Self::Module => "module block",
            Self::FreeSpaceRoot => "free-space root",
            Self::FreeSpaceBitmap => "free-space bitmap block",
            Self::SnapshotTable => "snapshot table block",
            Self::Log => "log block",
        })
    }
}

/// A counter in an image that cannot go one further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// The superblock's commit sequence number.
    Sequence,
    /// The metadata's count of commits since creation.
    Commits,
    /// The superblock's count of stored pages.
    PagesStored,
}

impl fmt::Display for Counter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Sequence => "commit sequence number",
            Self::Commits => "commit count",
            Self::PagesStored => "stored page count",
        })
    }
}

/// Why an image takes no further commit ([`Error::Poisoned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonCause {
    /// Writing or flushing a superblock failed: the disk holds the last
    /// commit or the failed one, and only reopening tells which.
    SuperblockWriteFailed,
    /// A flush failed. Writes it covered may be lost although a later flush
    /// would succeed (the device reports a failure once), so no commit may
    /// ever claim them durable; the last commit is intact on disk.
    FlushFailed,
}

/// Everything that can go wrong with a domain image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The block device failed.
    Device(DeviceError),
    /// Neither superblock starts with the image magic: not a domain image.
    NotAnImage,
    /// Both superblocks carry the magic but neither has a valid checksum.
    NoValidSuperblock,
    /// The newest superblock was written by a format version this code does
    /// not know.
    UnsupportedVersion {
        /// The version on disk.
        found: u32,
        /// The version this code reads and writes.
        supported: u32,
    },
    /// The superblock's block size is not [`crate::BLOCK_SIZE`].
    UnsupportedBlockSize {
        /// The block size on disk.
        found: u32,
    },
    /// The device is smaller than the image says it is (a truncated file),
    /// or too small to hold an image at all.
    DeviceTooSmall {
        /// Blocks the image needs.
        needed_blocks: u64,
        /// Blocks the device has.
        device_blocks: u64,
    },
    /// The device has more blocks than the free-space map can describe.
    DeviceTooLarge {
        /// Blocks the device has.
        device_blocks: u64,
        /// The most blocks an image may have.
        max_blocks: u64,
    },
    /// A pointer names a block that cannot hold that structure (a
    /// superblock, or past the end of the image).
    BadPointer {
        /// The block the pointer names.
        block: u64,
        /// What the pointer should lead to.
        structure: Structure,
    },
    /// A block's contents do not match the checksum its parent recorded.
    ChecksumMismatch {
        /// The bad block.
        block: u64,
        /// What the block holds.
        structure: Structure,
    },
    /// A block's checksum is right but its contents make no sense (a length
    /// past the end of a chain, an undecodable metadata record...).
    Malformed {
        /// The bad block (the first block of the structure when the fault is
        /// in the whole).
        block: u64,
        /// What the block holds.
        structure: Structure,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The module bytes do not hash to the hash the metadata records.
    ModuleSha256Mismatch,
    /// The image has no free block left; the last commit is intact.
    NoSpace {
        /// How many blocks the device has.
        device_blocks: u64,
    },
    /// A page index at or past the memory maximum.
    PageOutOfRange {
        /// The page asked for (in [`crate::PAGE_SIZE`] pages).
        page_index: u64,
        /// The first page index that is out of range.
        limit: u64,
    },
    /// A metadata field too large to store (a name over 255 bytes...).
    /// A name no domain can have.
    InvalidName(crate::metadata::NameError),
    /// A tag no snapshot can have ([`crate::check_tag`]).
    InvalidTag(crate::snapshot::TagError),
    /// No snapshot has this tag.
    UnknownSnapshot {
        /// The tag asked for.
        tag: String,
    },
    /// A snapshot has this tag already.
    DuplicateSnapshotTag {
        /// The tag.
        tag: String,
    },
    /// The image keeps [`crate::MAX_SNAPSHOTS`] snapshots already.
    SnapshotTableFull {
        /// How many it keeps.
        max: usize,
    },
    InvalidMetadata {
        /// What is wrong.
        reason: &'static str,
    },
    /// A metadata record that decodes but holds what no domain under the
    /// ABI's limits could have committed (see [`crate::validate`]).
    MetadataRefused(crate::MetadataError),
    /// An earlier failure makes every further commit unsafe; reopen the
    /// image to go on.
    Poisoned {
        /// What failed.
        cause: PoisonCause,
    },
    /// The newest commit's superblock is valid but the commit beneath it is
    /// not (`cause`), while the older commit opens cleanly. Opening never
    /// falls back to it silently: [`crate::Image::open_rolling_back`] does,
    /// on an operator's word, and records it in the image.
    NewestCommitDamaged {
        /// The damaged commit's sequence number.
        damaged_sequence: u64,
        /// The older, intact commit's sequence number.
        intact_sequence: u64,
        /// What is wrong with the damaged commit.
        cause: Box<Error>,
    },
    /// A rollback was asked for, but the newest commit opens cleanly.
    NothingToRollBack {
        /// The newest commit's sequence number.
        sequence: u64,
    },
    /// A rollback was asked for, and going back would do harm.
    RollbackRefused {
        /// The damaged commit's sequence number.
        damaged_sequence: u64,
        /// Why not.
        reason: &'static str,
    },
    /// A counter is at its limit: an image no domain could have written,
    /// refused rather than wrapped.
    CounterOverflow {
        /// Which counter.
        counter: Counter,
        /// Its value.
        value: u64,
    },
}

impl Error {
    pub(crate) fn checksum(block: u64, structure: Structure) -> Self {
        Self::ChecksumMismatch { block, structure }
    }

    pub(crate) fn malformed(block: u64, structure: Structure, reason: &'static str) -> Self {
        Self::Malformed {
            block,
            structure,
            reason,
        }
    }

    /// What is wrong beneath a [`Error::NewestCommitDamaged`]; any other
    /// error is itself.
    pub fn damage(&self) -> &Error {
        match self {
            Self::NewestCommitDamaged { cause, .. } => cause.damage(),
            other => other,
        }
    }
}

impl From<DeviceError> for Error {
    fn from(error: DeviceError) -> Self {
        Self::Device(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(error) => write!(formatter, "block device: {error}"),
            Self::NotAnImage => write!(
                formatter,
                "not a domain image: no superblock has the magic number"
            ),
            Self::NoValidSuperblock => {
                write!(
                    formatter,
                    "both superblocks (blocks 0 and 1) fail their checksum"
                )
            }
            Self::UnsupportedVersion { found, supported } => write!(
                formatter,
                "image format version {found} is not supported (this code reads versions up to {supported})"
            ),
            Self::UnsupportedBlockSize { found } => write!(
                formatter,
                "block size {found} is not supported (expected {})",
                crate::BLOCK_SIZE
            ),
            Self::DeviceTooSmall {
                needed_blocks,
                device_blocks,
            } => write!(
                formatter,
                "device too small or truncated: the image needs {needed_blocks} blocks, the device has {device_blocks}"
            ),
            Self::DeviceTooLarge {
                device_blocks,
                max_blocks,
            } => write!(
                formatter,
                "device of {device_blocks} blocks is larger than the {max_blocks} blocks an image can have"
            ),
            Self::BadPointer { block, structure } => write!(
                formatter,
                "impossible pointer to block {block} for a {structure}"
            ),
            Self::ChecksumMismatch { block, structure } => {
                write!(
                    formatter,
                    "checksum mismatch in {structure} at block {block}"
                )
            }
            Self::Malformed {
                block,
                structure,
                reason,
            } => write!(
                formatter,
                "malformed {structure} at block {block}: {reason}"
            ),
            Self::ModuleSha256Mismatch => {
                write!(formatter, "the module bytes do not match the recorded hash")
            }
            Self::NoSpace { device_blocks } => write!(
                formatter,
                "no space left in the image ({device_blocks} blocks); the last commit is intact"
            ),
            Self::PageOutOfRange { page_index, limit } => write!(
                formatter,
                "page {page_index} is out of range (pages below {limit} exist)"
            ),
            Self::InvalidMetadata { reason } => write!(formatter, "invalid metadata: {reason}"),
            Self::InvalidName(error) => write!(formatter, "{error}"),
            Self::InvalidTag(error) => write!(formatter, "invalid snapshot tag: {error}"),
            Self::UnknownSnapshot { tag } => write!(formatter, "no snapshot is tagged {tag:?}"),
            Self::DuplicateSnapshotTag { tag } => {
                write!(formatter, "a snapshot is tagged {tag:?} already")
            }
            Self::SnapshotTableFull { max } => write!(
                formatter,
                "the image keeps {max} snapshots already (delete one first)"
            ),
            Self::MetadataRefused(error) => write!(formatter, "metadata refused: {error}"),
            Self::Poisoned {
                cause: PoisonCause::SuperblockWriteFailed,
            } => write!(
                formatter,
                "an earlier commit failed while writing its superblock: reopen the image"
            ),
            Self::Poisoned {
                cause: PoisonCause::FlushFailed,
            } => write!(
                formatter,
                "an earlier flush failed, so writes since the last commit may be lost: \
                 no further commit; the last commit is intact (reopen the image)"
            ),
            Self::NewestCommitDamaged {
                damaged_sequence,
                intact_sequence,
                cause,
            } => write!(
                formatter,
                "commit {damaged_sequence} is damaged ({cause}); the older commit \
                 {intact_sequence} is intact and opens only by an explicit rollback"
            ),
            Self::NothingToRollBack { sequence } => write!(
                formatter,
                "nothing to roll back: the newest commit {sequence} opens cleanly"
            ),
            Self::RollbackRefused {
                damaged_sequence,
                reason,
            } => write!(
                formatter,
                "no rollback past commit {damaged_sequence}: {reason}"
            ),
            Self::CounterOverflow { counter, value } => write!(
                formatter,
                "the {counter} is {value}, at its limit: no further commit can count"
            ),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Device(error) => Some(error),
            Self::MetadataRefused(error) => Some(error),
            _ => None,
        }
    }
}

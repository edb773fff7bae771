//! On-disk structures (little-endian, zerocopy) and the CRC-32C they carry.

use crc::{CRC_32_ISCSI, Crc, Table};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::device::BLOCK_SIZE;

/// The first eight bytes of both superblocks.
pub const MAGIC: [u8; 8] = *b"AMBERIMG";

/// The image format version this code writes for an image without
/// snapshots (and the only one code before snapshots reads).
pub const FORMAT_VERSION: u32 = 1;

/// The format version of an image with a snapshot table: version 1 plus
/// [`Superblock::snapshot_table`]. Code that predates snapshots refuses it,
/// so it never frees the blocks only snapshots hold.
pub const SNAPSHOTS_FORMAT_VERSION: u32 = 2;

/// The format version of an image with a domain log: version 2 plus
/// [`Superblock::log`] (the snapshot table may then be there or not). Code
/// that predates the log refuses it, so it never loses the log's blocks.
pub const LOG_FORMAT_VERSION: u32 = 3;

/// Offset of the superblock checksum. Every format version keeps the magic at
/// bytes 0..8, the version at 8..12 and the CRC-32C of bytes 0..4092 at
/// 4092..4096, so a torn superblock of any version is told from a newer one.
pub const SUPERBLOCK_CHECKSUM_OFFSET: usize = BLOCK_SIZE - 4;

// Slice-by-16 tables (16 KiB): checksumming pages must not be the bottleneck.
const CASTAGNOLI: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);

/// CRC-32C (Castagnoli, the iSCSI polynomial) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// A checked reference to one block: its number and the CRC-32C of its
/// contents. Block 0 (a superblock) means "nothing here".
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct Pointer {
    /// The block number, or 0 for none.
    pub block: U64,
    /// CRC-32C of the whole block.
    pub crc: U32,
    /// Zero.
    pub reserved: U32,
}

impl Pointer {
    /// The null pointer.
    pub const NONE: Self = Self {
        block: U64::ZERO,
        crc: U32::ZERO,
        reserved: U32::ZERO,
    };

    /// A pointer to `block`, whose contents have checksum `crc`.
    pub fn new(block: u64, crc: u32) -> Self {
        Self {
            block: U64::new(block),
            crc: U32::new(crc),
            reserved: U32::ZERO,
        }
    }

    /// Whether this is the null pointer.
    pub fn is_none(&self) -> bool {
        self.block.get() == 0
    }
}

/// A checked reference to a chain of blocks holding `len_bytes` bytes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct ChainPointer {
    /// The first block of the chain.
    pub first: Pointer,
    /// How many payload bytes the chain holds.
    pub len_bytes: U64,
    /// Zero.
    pub reserved: U64,
}

const SUPERBLOCK_FIELDS_LEN: usize =
    8 + 4 + 4 + 8 + 8 + 16 + 32 + 16 + 8 + 8 + 24 + 32 + size_of::<LogRing>();

/// A superblock (blocks 0 and 1). The one with the valid checksum and the
/// higher sequence number is the image.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Superblock {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub format_version: U32,
    /// [`BLOCK_SIZE`].
    pub block_size: U32,
    /// Commit sequence number: 1 at creation, +1 per commit. Commit `n` is
    /// written to superblock `n % 2`.
    pub sequence: U64,
    /// Blocks in the image (the device may be larger).
    pub block_count: U64,
    /// Root node of the radix page map (none when no page is stored).
    pub page_map_root: Pointer,
    /// The metadata chain.
    pub metadata: ChainPointer,
    /// The free-space root: the list of bitmap blocks.
    pub free_space_root: Pointer,
    /// Pages stored in the page map.
    pub pages_stored: U64,
    /// Blocks in use by this commit, superblocks included.
    pub blocks_used: U64,
    /// How many times an operator rolled this image back past a damaged
    /// commit (`Image::open_rolling_back`); zero in images that never were.
    /// Every commit carries it on, and so do the two fields after it. Code
    /// that predates them reads zeros here (it was padding) and, cloning
    /// the superblock for its commits, keeps them too.
    pub rollbacks: U64,
    /// The sequence of the damaged commit the last rollback discarded.
    pub rolled_back_from: U64,
    /// The sequence of the intact commit the last rollback went back to.
    pub rolled_back_to: U64,
    /// The snapshot table (`snapshot` module): none, all zeros, in an image
    /// without snapshots, whose version is then [`FORMAT_VERSION`]; an
    /// image with snapshots is [`SNAPSHOTS_FORMAT_VERSION`].
    pub snapshot_table: ChainPointer,
    /// The domain's log (`log` module): none, all zeros, in an image whose
    /// domain never printed, whose version is then [`FORMAT_VERSION`] or
    /// [`SNAPSHOTS_FORMAT_VERSION`]; an image with a log is
    /// [`LOG_FORMAT_VERSION`].
    pub log: LogRing,
    /// Zero.
    pub padding: [u8; SUPERBLOCK_CHECKSUM_OFFSET - SUPERBLOCK_FIELDS_LEN],
    /// CRC-32C of the bytes before it.
    pub checksum: U32,
}

const _: () = assert!(size_of::<Superblock>() == BLOCK_SIZE);

impl Superblock {
    /// The version this superblock's contents call for: the oldest format
    /// that can hold them.
    pub fn format_version_for_contents(&self) -> u32 {
        if self.log.block_count.get() > 0 {
            LOG_FORMAT_VERSION
        } else if !self.snapshot_table.first.is_none() {
            SNAPSHOTS_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        }
    }

    /// Serialises with the checksum filled in.
    pub fn to_block(&self) -> [u8; BLOCK_SIZE] {
        let mut block = [0u8; BLOCK_SIZE];
        block.copy_from_slice(self.as_bytes());
        let checksum = crc32c(&block[..SUPERBLOCK_CHECKSUM_OFFSET]);
        block[SUPERBLOCK_CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
        block
    }
}

/// Entries in a page-map node.
pub const NODE_FANOUT: usize = BLOCK_SIZE / size_of::<Pointer>();

/// A page-map node: 256 pointers to child nodes or, at the bottom, to pages.
pub type Node = [Pointer; NODE_FANOUT];

/// Payload bytes in one chain block.
pub const CHAIN_PAYLOAD_LEN: usize = BLOCK_SIZE - 24;

/// One block of a chain (metadata, module): payload and a pointer onwards.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ChainBlock {
    /// The next block (none in the last one).
    pub next: Pointer,
    /// Payload bytes used in this block.
    pub payload_len: U32,
    /// Zero.
    pub reserved: U32,
    /// The payload (zero past `payload_len`).
    pub payload: [u8; CHAIN_PAYLOAD_LEN],
}

const _: () = assert!(size_of::<ChainBlock>() == BLOCK_SIZE);

/// Blocks a domain's log keeps: its last 16 x 4,072 bytes (about 64 KiB).
pub const LOG_BLOCKS: usize = 16;

/// Where a domain's log lives: a ring of at most [`LOG_BLOCKS`] blocks in
/// the superblock itself, so a commit that adds lines rewrites only the
/// last block (and adds new ones), never the whole log.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LogRing {
    /// The log's blocks, oldest first, each a [`ChainBlock`] with no next
    /// block; the first `block_count` are used, the others are none.
    pub blocks: [Pointer; LOG_BLOCKS],
    /// How many blocks the log has (0: no log).
    pub block_count: U32,
    /// Zero.
    pub reserved: U32,
    /// Bytes the log dropped from its start to stay within its blocks.
    pub bytes_dropped: U64,
}

/// Bitmap blocks the free-space root can list.
pub const MAX_BITMAP_BLOCKS: usize = (BLOCK_SIZE - 8) / size_of::<Pointer>();

/// Blocks one bitmap block describes (one bit each, set = in use).
pub const BLOCKS_PER_BITMAP_BLOCK: u64 = (BLOCK_SIZE * 8) as u64;

/// The largest image: what the free-space root can describe (about 32 GiB).
pub const MAX_IMAGE_BLOCKS: u64 = MAX_BITMAP_BLOCKS as u64 * BLOCKS_PER_BITMAP_BLOCK;

/// The free-space root: the bitmap blocks, in order.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FreeSpaceRoot {
    /// How many bitmap blocks follow.
    pub bitmap_count: U32,
    /// Zero.
    pub reserved: U32,
    /// The bitmap blocks (bit `i` of the image is bit `i % 32768` of block
    /// `i / 32768`; set means in use).
    pub bitmaps: [Pointer; MAX_BITMAP_BLOCKS],
    /// Zero.
    pub padding: [u8; BLOCK_SIZE - 8 - MAX_BITMAP_BLOCKS * 16],
}

const _: () = assert!(size_of::<FreeSpaceRoot>() == BLOCK_SIZE);

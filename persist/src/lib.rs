#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

extern crate alloc;

mod abi_serde;
pub mod archive;
mod blob;
mod device;
mod error;
mod faulty;
#[cfg(feature = "std")]
mod file_device;
pub mod gather;
mod image;
mod layout;
mod log;
mod metadata;
pub mod migrate;
mod network;
mod page_map;
mod snapshot;
#[cfg(feature = "std")]
pub mod soak;
mod space;
mod superblock;
pub mod validate;
mod verify;

pub use device::{BLOCK_SIZE, BlockDevice, MemoryDevice};
pub use error::{Counter, DeviceError, Error, PoisonCause, Structure};
pub use faulty::{FaultPlan, FaultyDevice};
#[cfg(feature = "std")]
pub use file_device::FileDevice;
pub use image::{
    CommitStats, Image, ImageStats, NewDomain, PageLocation, RollbackRecord, Unopened,
    default_block_count,
};
pub use layout::{
    FORMAT_VERSION, LOG_BLOCKS, LOG_FORMAT_VERSION, MAX_IMAGE_BLOCKS, SNAPSHOTS_FORMAT_VERSION,
    crc32c,
};
pub use log::{LOG_CAPACITY_BYTES, last_lines};
pub use metadata::{
    Counters, DomainId, MAX_NAME_LEN, MessageCounts, Metadata, MetadataRecord, ModuleSha256,
    NameError, NetworkRecord, PAGES_PER_WASM_PAGE, StoredGlobal, StoredMessage,
    StoredOutboxMessage, StoredStatus, ValueType, WASM_PAGE_SIZE, check_name, module_sha256,
};
pub use network::{ListenError, NetworkDeclaration, check_listen};
pub use page_map::{MAX_PAGES, PAGE_MAP_HEIGHT};
pub use snapshot::{
    MAX_SNAPSHOTS, MAX_TAG_LEN, SnapshotId, SnapshotInfo, TagError, check_tag, clock_text,
    date_text, table_text,
};
pub use superblock::MIN_IMAGE_BLOCKS;
pub use validate::{MetadataError, validate};
pub use verify::{VerifyReport, reachable_blocks};

/// Size of one page of linear memory as persist stores it (one block).
pub const PAGE_SIZE: usize = BLOCK_SIZE;

#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

extern crate alloc;

mod abi_amber;
mod abi_wasi;
mod asyncify;
mod blocking;
mod domain;
mod domain_open;
mod error;
mod guest_memory;
mod host_state;
mod memory_backing;
mod outbox;
mod persist_storage;
mod platform;
mod scheduler;
mod snapshot;
mod status;
mod storage;
mod wasi_poll;

pub use domain::{Domain, PauseReason, RunOutcome, Wake};
pub use domain_open::{CompiledModule, ENTRY_EXPORT, MAX_MODULE_BYTES, new_engine};
pub use error::{Error, TrapReason};
pub use host_state::HostState;
pub use memory_backing::{
    HashedHeapBacking, MemoryBacking, PAGE_BYTES, WASM_PAGE_BYTES, module_hash,
};
pub use persist_storage::PersistStorage;
#[cfg(feature = "std")]
pub use platform::StdPlatform;
pub use platform::{LineBuffer, LogLevel, Platform, Stream};
pub use scheduler::{DEFAULT_FUEL_SLICE, OUTBOX_BYTES, OUTBOX_MESSAGES, Scheduler, SchedulerEvent};
pub use status::{
    MAX_MAILBOX_BYTES, MAX_MAILBOX_MESSAGES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES,
    MAX_OUTPUT_BYTES_PER_CALL, OUTPUT_FUEL_PER_BYTE, Status, errno,
};
pub use storage::{
    BlockingImport, Commit, DomainId, DomainRecord, DomainStatus, GlobalValue, MemoryStorage,
    Message, OutboxMessage, PageLocation, PagerStorage, SavedGlobal, Storage, Suspension,
};
pub use {persist, wasmi};

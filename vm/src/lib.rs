#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

extern crate alloc;

mod abi_amber;
mod abi_tcp;
mod abi_wasi;
mod asyncify;
mod blocking;
mod domain;
mod domain_open;
mod error;
mod fuel;
mod guest_memory;
mod held_replies;
mod host_functions;
mod host_state;
mod memory_backing;
pub mod net;
mod net_calls;
mod net_complete;
#[cfg(feature = "std")]
mod net_std;
mod outbox;
mod output;
mod persist_storage;
mod platform;
mod scheduler;
mod snapshot;
mod sockets;
mod storage;
mod wasi_poll;
mod wasi_sockets;

pub use abi::DomainId;
pub use domain::{Domain, PauseReason, RunOutcome, Wake};
pub use domain_open::{
    CompiledModule, ENTRY_EXPORT, MAX_MODULE_BYTES, check_module, defined_imports, new_engine,
};
pub use error::{Error, TrapReason};
pub use host_state::HostState;
pub use memory_backing::{
    HashedHeapBacking, MemoryBacking, PAGE_BYTES, WASM_PAGE_BYTES, module_fingerprint,
};
#[cfg(feature = "std")]
pub use net_std::{LINGER, PortMap, StdNetwork};
pub use output::{
    MAX_OUTPUT_BYTES_PER_SECOND, MAX_OUTPUT_LINES_PER_CALL, MAX_OUTPUT_LINES_PER_SECOND,
    escape_into, log_line,
};
pub use persist_storage::PersistStorage;
#[cfg(feature = "std")]
pub use platform::StdPlatform;
pub use platform::{LineBuffer, LogLevel, Platform, Stream};
pub use scheduler::{DEFAULT_FUEL_SLICE, Scheduler, SchedulerEvent};
pub use storage::{
    BlockingImport, Commit, DomainRecord, DomainStatus, GlobalValue, MailboxMessage, MemoryStorage,
    OutboxMessage, PageLocation, PagerStorage, SavedGlobal, Storage, Suspension,
};
pub use {abi, persist, wasmi};

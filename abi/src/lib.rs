#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

mod domain_id;
pub mod errno;
mod fork;
mod imports;
mod limits;
mod status;

pub use domain_id::{DomainId, ParseDomainIdError};
pub use fork::{GENERATION_VARIABLE, generation};
pub use imports::{
    AMBER_MODULE, IMPORTS, Import, MEMORY_MODULE, MEMORY_NAME, Signature, ValueType, WASI_MODULE,
    blocking_imports, find_import,
};
pub use limits::{
    FIRST_LISTENER_FD, MAX_CONNECTIONS_PER_DOMAIN, MAX_HELD_REPLY_BYTES, MAX_LISTEN_PORTS,
    MAX_MAILBOX_BYTES, MAX_MAILBOX_MESSAGES, MAX_MESSAGE_BYTES, MAX_MODULE_BYTES, MAX_NAME_BYTES,
    MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, MAX_OUTPUT_BYTES_PER_CALL, MAX_POLL_ENTRIES,
    OUTPUT_FUEL_PER_BYTE, SOCKET_BUFFER_BYTES, readiness,
};
pub use status::StatusCode;

#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

mod domain_id;
pub mod errno;
mod imports;
mod limits;
mod status;

pub use domain_id::{DomainId, ParseDomainIdError};
pub use imports::{
    AMBER_MODULE, IMPORTS, Import, MEMORY_MODULE, MEMORY_NAME, Signature, ValueType, WASI_MODULE,
    blocking_imports, find_import,
};
pub use limits::{
    MAX_MAILBOX_BYTES, MAX_MAILBOX_MESSAGES, MAX_MESSAGE_BYTES, MAX_MODULE_BYTES, MAX_NAME_BYTES,
    MAX_OUTBOX_BYTES, MAX_OUTBOX_MESSAGES, MAX_OUTPUT_BYTES_PER_CALL, OUTPUT_FUEL_PER_BYTE,
};
pub use status::StatusCode;

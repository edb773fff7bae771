//! The vm crate's error enum and the reasons a domain traps.

use alloc::string::{String, ToString};
use core::fmt;

use crate::storage::DomainStatus;

/// Why the vm could not do what the embedder asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The module bytes are not a valid WebAssembly module (wasmi's reason).
    InvalidModule(String),
    /// The module is larger than [`crate::MAX_MODULE_BYTES`].
    ModuleTooLarge { len_bytes: u64 },
    /// The module has a start section: it would run before a restore could lay
    /// the saved memory over the instance, so Amber refuses it.
    StartSection,
    /// The module defines its memory instead of importing `env.memory`
    /// (`image new` rewrites such modules; see vm/README.md).
    MemoryNotImported,
    /// The module imports something the host ABI does not provide.
    UnknownImport { module: String, name: String },
    /// The module exports no `_start` function to run.
    MissingEntry,
    /// wasmi refused to instantiate the module (its reason).
    Instantiation(String),
    /// The image's suspension record belongs to other module bytes.
    ModuleFingerprintMismatch,
    /// The image holds memory larger than the module allows.
    MemoryTooLarge { pages: u32, maximum_pages: u32 },
    /// A saved global does not fit the module (name, reason).
    BadSavedGlobal(String),
    /// The storage behind a domain failed (its reason).
    Storage(String),
    /// The domain's disk has no free block for a commit; the last commit is
    /// intact, and the commit can be tried again once there is room.
    DiskFull { device_blocks: u64 },
    /// No domain with that name or ID runs in this scheduler.
    NoSuchDomain,
    /// Two domains may not share a name or an ID.
    DuplicateDomain(String),
    /// Only a running domain can be stopped (this one has ended so).
    NotStoppable(DomainStatus),
    /// Only a stopped domain can be resumed.
    NotStopped,
    /// Only a paused domain can be resumed from a pause.
    NotPaused,
    /// The domain's image declares `port`, and another domain on this
    /// machine listens on it: the domain is not opened.
    PortTaken { port: u16 },
    /// The machine's network refused to listen on a declared port.
    Listen {
        port: u16,
        reason: crate::net::NetError,
    },
    /// The image's network record is one no image may hold (its reason).
    BadNetworkRecord(String),
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidModule(reason) => write!(formatter, "invalid wasm module: {reason}"),
            Self::ModuleTooLarge { len_bytes } => write!(
                formatter,
                "the module is {len_bytes} bytes, more than the {} a domain's module may have",
                crate::MAX_MODULE_BYTES
            ),
            Self::StartSection => write!(
                formatter,
                "the module has a start section, which Amber cannot restore"
            ),
            Self::MemoryNotImported => write!(
                formatter,
                "the module must import its memory as env.memory (link with --import-memory)"
            ),
            Self::UnknownImport { module, name } => {
                write!(formatter, "the module imports unknown {module}.{name}")
            }
            Self::MissingEntry => write!(formatter, "the module exports no _start function"),
            Self::Instantiation(reason) => write!(formatter, "instantiation failed: {reason}"),
            Self::ModuleFingerprintMismatch => write!(
                formatter,
                "the saved stack belongs to a different module; refusing to rewind"
            ),
            Self::MemoryTooLarge {
                pages,
                maximum_pages,
            } => write!(
                formatter,
                "the image holds {pages} wasm pages but the module allows {maximum_pages}"
            ),
            Self::BadSavedGlobal(reason) => write!(formatter, "bad saved global: {reason}"),
            Self::Storage(reason) => write!(formatter, "storage failed: {reason}"),
            Self::DiskFull { device_blocks } => write!(
                formatter,
                "the disk is full (no free block among its {device_blocks}); the last commit is intact"
            ),
            Self::NoSuchDomain => write!(formatter, "no such domain"),
            Self::DuplicateDomain(name) => write!(formatter, "a domain named {name} already runs"),
            Self::NotStoppable(status) => {
                write!(
                    formatter,
                    "the domain has ended ({status:?}) and cannot be stopped"
                )
            }
            Self::NotStopped => write!(formatter, "the domain is not stopped"),
            Self::NotPaused => write!(formatter, "the domain is not paused"),
            Self::PortTaken { port } => write!(
                formatter,
                "TCP port {port} is declared by the domain but another domain listens on it"
            ),
            Self::Listen { port, reason } => {
                write!(formatter, "cannot listen on TCP port {port}: {reason}")
            }
            Self::BadNetworkRecord(reason) => write!(formatter, "bad network record: {reason}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Why a domain stopped with a trap. Recorded in its image and printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapReason {
    /// The WebAssembly code trapped (out-of-bounds access, unreachable, stack
    /// overflow, division by zero...): wasmi's message.
    Wasm(String),
    /// A host call got a pointer and length outside the domain's memory.
    BadPointer {
        call: &'static str,
        pointer: u32,
        length: u32,
        memory_bytes: usize,
    },
    /// A host call got an argument it cannot accept.
    BadArgument {
        call: &'static str,
        detail: &'static str,
    },
    /// Saving the stack for a checkpoint failed.
    Asyncify(String),
    /// The guest called an import the host ABI only stubs and cannot answer.
    Unsupported(String),
}

impl fmt::Display for TrapReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wasm(message) => write!(formatter, "wasm trap: {message}"),
            Self::BadPointer {
                call,
                pointer,
                length,
                memory_bytes,
            } => write!(
                formatter,
                "{call}: pointer {pointer:#x} with length {length} lies outside the \
                 {memory_bytes}-byte memory"
            ),
            Self::BadArgument { call, detail } => write!(formatter, "{call}: {detail}"),
            Self::Asyncify(reason) => write!(formatter, "cannot save the stack: {reason}"),
            Self::Unsupported(import) => write!(formatter, "{import} is not supported"),
        }
    }
}

impl TrapReason {
    /// The reason for a trap the WebAssembly code itself raised.
    pub fn from_trap_code(code: wasmi::TrapCode) -> Self {
        let message = match code {
            // wasmi 2.0.0 words this one "uninitialized element 2" (a
            // leftover its source marks as a TODO); say what happened.
            wasmi::TrapCode::IndirectCallToNull => {
                String::from("indirect call to an uninitialized table element")
            }
            other => other.to_string(),
        };
        Self::Wasm(message)
    }
}

impl wasmi::errors::HostError for TrapReason {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_traps_read_as_sentences_without_stray_codes() {
        let null = TrapReason::from_trap_code(wasmi::TrapCode::IndirectCallToNull);
        assert_eq!(
            null.to_string(),
            "wasm trap: indirect call to an uninitialized table element"
        );
        let bounds = TrapReason::from_trap_code(wasmi::TrapCode::MemoryOutOfBounds);
        assert_eq!(bounds.to_string(), "wasm trap: out of bounds memory access");
    }
}

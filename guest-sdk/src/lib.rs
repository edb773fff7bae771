#![doc = include_str!("../README.md")]
// Only the `sys` module may hold unsafe code (the import declarations).
#![deny(unsafe_code)]

mod domain;
#[cfg(target_arch = "wasm32")]
mod entry;
mod logging;
mod message;
pub mod net;
mod status;
#[expect(
    unsafe_code,
    reason = "calling wasm imports is unsafe; sys keeps every such call behind a safe function"
)]
mod sys;
mod time;

pub use abi::{DomainId, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, ParseDomainIdError, StatusCode};
pub use domain::{checkpoint, exit, generation, random, self_id};
pub use logging::{Level, log};
pub use message::{recv, send, send_to};
pub use status::{CheckpointError, RecvError, SendError};
pub use time::{now, now_ns, sleep, sleep_ns, yield_now};

#[doc(hidden)]
pub mod __private {
    //! Items the exported macros use; not part of the API.
    pub use crate::logging::log_arguments;
}

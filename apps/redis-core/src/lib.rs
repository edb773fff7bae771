//! A Redis-compatible server's core: RESP2 and commands over plain maps.
//!
//! Everything here is plain Rust without I/O: [`resp`] frames commands and
//! replies, [`Store`] executes commands against a `BTreeMap`, and the app
//! around it (Amber's `redis`, or any host program) moves bytes between
//! sockets and these two ([`Session`] does it for one connection). Nothing in it persists anything: on Amber the
//! map lives in the domain's linear memory, which is persistent already.
//! Its tests run on the host
//! (`cargo test -p redis-core --target x86_64-unknown-linux-gnu`).

#![forbid(unsafe_code)]

mod glob;
pub mod resp;
mod session;
mod store;

pub use resp::{Command, Limits, ProtocolError, Reply, parse_command};
pub use session::{Flow, MAX_BUFFERED_BYTES, Session};
pub use store::{Outcome, Store, StoreLimits};

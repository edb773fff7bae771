//! The WASI (preview 1) errno values the vm's WASI subset returns.
//!
//! Numbers from the witx of `wasi_snapshot_preview1` (`typenames.witx`,
//! `errno`). Amber's own imports return a [`StatusCode`](crate::StatusCode)
//! instead.

/// No error.
pub const SUCCESS: i32 = 0;
/// Address in use (a port another domain holds).
pub const ADDRINUSE: i32 = 3;
/// Resource unavailable, try again (a nonblocking socket with nothing to do).
pub const AGAIN: i32 = 6;
/// Bad file descriptor.
pub const BADF: i32 = 8;
/// Connection aborted.
pub const CONNABORTED: i32 = 13;
/// Connection refused.
pub const CONNREFUSED: i32 = 14;
/// Connection reset (also: a connection open at the commit a domain was
/// restored from).
pub const CONNRESET: i32 = 15;
/// Invalid argument.
pub const INVAL: i32 = 28;
/// Too many open files (the domain's connection cap).
pub const MFILE: i32 = 33;
/// No buffer space available (the machine has no room for a connection).
pub const NOBUFS: i32 = 42;
/// The socket is not connected.
pub const NOTCONN: i32 = 53;
/// Not a socket.
pub const NOTSOCK: i32 = 57;
/// Broken pipe (writing after shutdown).
pub const PIPE: i32 = 64;
/// Function not supported: every WASI import outside the subset.
pub const NOSYS: i32 = 52;
/// Not supported (an unsupported subscription kind in `poll_oneoff`).
pub const NOTSUP: i32 = 58;
/// Invalid seek (on a stream).
pub const SPIPE: i32 = 70;

//! The WASI (preview 1) errno values the vm's WASI subset returns.
//!
//! Numbers from the witx of `wasi_snapshot_preview1` (`typenames.witx`,
//! `errno`). Amber's own imports return a [`StatusCode`](crate::StatusCode)
//! instead.

/// No error.
pub const SUCCESS: i32 = 0;
/// Bad file descriptor.
pub const BADF: i32 = 8;
/// Invalid argument.
pub const INVAL: i32 = 28;
/// Function not supported: every WASI import outside the subset.
pub const NOSYS: i32 = 52;
/// Not supported (an unsupported subscription kind in `poll_oneoff`).
pub const NOTSUP: i32 = 58;
/// Invalid seek (on a stream).
pub const SPIPE: i32 = 70;

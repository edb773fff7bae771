//! Every host function a domain may import: module, name, signature, blocking.

use core::fmt;

/// The import module of Amber's own host calls.
pub const AMBER_MODULE: &str = "amber";

/// The import module of the WASI (preview 1) subset.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// The module of the one memory every domain imports (`env.memory`).
pub const MEMORY_MODULE: &str = "env";

/// The name of the one memory every domain imports (`env.memory`).
pub const MEMORY_NAME: &str = "memory";

/// A WebAssembly value type, as the import signatures use them (Wasm spec
/// 2.0, section 2.3.1 "Number Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValueType {
    /// `i32`: also every pointer and length (wasm32 addresses, unsigned).
    I32,
    /// `i64`: also every time, in nanoseconds.
    I64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl ValueType {
    /// The type's name in the text format (`i32`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// One host function a domain may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Import {
    /// The import module: [`AMBER_MODULE`] or [`WASI_MODULE`].
    pub module: &'static str,
    /// The function's name within its module.
    pub name: &'static str,
    /// The parameter types, in order.
    pub params: &'static [ValueType],
    /// The result types, in order (none or one).
    pub results: &'static [ValueType],
    /// Whether the vm may suspend a domain inside this call (unwind its stack
    /// with asyncify, commit, rewind). Only blocking imports are safe points
    /// for committing running code, and they are the list `wasm-opt
    /// --asyncify` is given: every function that can reach one pays for
    /// instrumentation, so the list stays short.
    pub is_blocking: bool,
}

impl Import {
    /// The signature in the notation of guest-sdk/README.md:
    /// `[i32 i32] -> [i32]`.
    pub const fn signature(&self) -> Signature<'_> {
        Signature(self)
    }
}

/// Shows `module.name`, the form asyncify's import list takes.
impl fmt::Display for Import {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.module, self.name)
    }
}

/// An import's signature, shown as `[params] -> [results]`.
#[derive(Debug, Clone, Copy)]
pub struct Signature<'a>(&'a Import);

impl fmt::Display for Signature<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |formatter: &mut fmt::Formatter<'_>, types: &[ValueType]| {
            for (index, value_type) in types.iter().enumerate() {
                if index > 0 {
                    formatter.write_str(" ")?;
                }
                formatter.write_str(value_type.name())?;
            }
            Ok(())
        };
        formatter.write_str("[")?;
        list(formatter, self.0.params)?;
        formatter.write_str("] -> [")?;
        list(formatter, self.0.results)?;
        formatter.write_str("]")
    }
}

use ValueType::{I32, I64};

const fn amber(
    name: &'static str,
    params: &'static [ValueType],
    results: &'static [ValueType],
    is_blocking: bool,
) -> Import {
    Import {
        module: AMBER_MODULE,
        name,
        params,
        results,
        is_blocking,
    }
}

const fn wasi(
    name: &'static str,
    params: &'static [ValueType],
    results: &'static [ValueType],
    is_blocking: bool,
) -> Import {
    Import {
        module: WASI_MODULE,
        name,
        params,
        results,
        is_blocking,
    }
}

/// Whether an import is a safe point (see [`Import::is_blocking`]).
const BLOCKS: bool = true;
const RETURNS: bool = false;

/// Every host function the vm defines, `amber` first. The order is that of
/// the asyncify list the apps were always built with (`sleep`, `yield`,
/// `recv`, `checkpoint`, ...), so that their modules stay byte for byte
/// the same. The `amber` calls are
/// described in guest-sdk/README.md ("Imports"); the WASI functions follow
/// the witx of `wasi_snapshot_preview1`, lowered to core wasm (every errno
/// result an `i32`). A WASI function missing here is linked to a stub that
/// returns `errno::NOSYS`, so any wasip1 program instantiates.
pub const IMPORTS: &[Import] = &[
    amber("log", &[I32, I32, I32], &[], RETURNS),
    amber("now", &[], &[I64], RETURNS),
    amber("sleep", &[I64], &[], BLOCKS),
    amber("yield", &[], &[], BLOCKS),
    amber("random", &[I32, I32], &[], RETURNS),
    amber("self_id", &[I32], &[], RETURNS),
    // Never returns, so there is nothing to resume.
    amber("exit", &[I32], &[], RETURNS),
    // A full mailbox is a status, not a wait.
    amber("send", &[I32, I32, I32, I32], &[I32], RETURNS),
    amber("recv", &[I32, I32, I32, I64], &[I32], BLOCKS),
    amber("checkpoint", &[], &[I32], BLOCKS),
    // fd, iovs, iovs_len, written_ptr: to fds 1 and 2, and to sockets
    // (where it may wait for room, so it is a safe point).
    wasi("fd_write", &[I32, I32, I32, I32], &[I32], BLOCKS),
    // fd, iovs, iovs_len, read_ptr: fd 0 is always at its end; sockets
    // may wait for data.
    wasi("fd_read", &[I32, I32, I32, I32], &[I32], BLOCKS),
    wasi("proc_exit", &[I32], &[], RETURNS),
    // clock id, precision, time_ptr.
    wasi("clock_time_get", &[I32, I64, I32], &[I32], RETURNS),
    wasi("clock_res_get", &[I32, I32], &[I32], RETURNS),
    wasi("random_get", &[I32, I32], &[I32], RETURNS),
    wasi("args_sizes_get", &[I32, I32], &[I32], RETURNS),
    wasi("args_get", &[I32, I32], &[I32], RETURNS),
    wasi("environ_sizes_get", &[I32, I32], &[I32], RETURNS),
    wasi("environ_get", &[I32, I32], &[I32], RETURNS),
    wasi("sched_yield", &[], &[I32], BLOCKS),
    // subscriptions, events, subscription count, events_ptr: clocks, and
    // fd_read / fd_write readiness of sockets.
    wasi("poll_oneoff", &[I32, I32, I32, I32], &[I32], BLOCKS),
    wasi("fd_fdstat_get", &[I32, I32], &[I32], RETURNS),
    // No preopens: EBADF, which ends libc's preopen scan.
    wasi("fd_prestat_get", &[I32, I32], &[I32], RETURNS),
    wasi("fd_prestat_dir_name", &[I32, I32, I32], &[I32], RETURNS),
    wasi("fd_close", &[I32], &[I32], RETURNS),
    // fd, offset, whence, new_offset_ptr: the standard streams do not seek.
    wasi("fd_seek", &[I32, I64, I32, I32], &[I32], RETURNS),
    // TCP (guest-sdk/README.md "Network"). A socket is a small number
    // shared with WASI's fds: the image's declared listeners are 3, 4, ...
    // in the order declared, connections take the lowest free number above.
    // port -> the listener's socket, or -PORT_NOT_DECLARED.
    amber("tcp_listener", &[I32], &[I32], RETURNS),
    // listener, timeout_ns -> a connection's socket, or -status.
    amber("tcp_accept", &[I32, I64], &[I32], BLOCKS),
    // ipv4_ptr (4 bytes), port, timeout_ns -> a connection's socket, or -status.
    amber("tcp_connect", &[I32, I32, I64], &[I32], BLOCKS),
    // socket, buffer, capacity, timeout_ns -> bytes read (0: the stream
    // ended), or -status.
    amber("tcp_read", &[I32, I32, I32, I64], &[I32], BLOCKS),
    // socket, bytes, length, timeout_ns -> bytes taken (at least 1), or -status.
    amber("tcp_write", &[I32, I32, I32, I64], &[I32], BLOCKS),
    // socket -> status: no more writes (the peer reads the end of the stream).
    amber("tcp_shutdown", &[I32], &[I32], RETURNS),
    // socket -> status: the socket number is free again.
    amber("tcp_close", &[I32], &[I32], RETURNS),
    // entries (8 bytes each: socket u32, interest u16, ready u16), count,
    // timeout_ns -> how many entries are ready (0 at the timeout), or -status.
    amber("net_poll", &[I32, I32, I64], &[I32], BLOCKS),
    // fd, flags (FDFLAGS_NONBLOCK only), new_fd_ptr.
    wasi("sock_accept", &[I32, I32, I32], &[I32], BLOCKS),
    // fd, ri_data iovs, ri_data_len, ri_flags, ro_datalen_ptr, ro_flags_ptr.
    wasi("sock_recv", &[I32, I32, I32, I32, I32, I32], &[I32], BLOCKS),
    // fd, si_data ciovs, si_data_len, si_flags, so_datalen_ptr.
    wasi("sock_send", &[I32, I32, I32, I32, I32], &[I32], BLOCKS),
    // fd, how (SDFLAGS_RD = 1, SDFLAGS_WR = 2).
    wasi("sock_shutdown", &[I32, I32], &[I32], RETURNS),
    // fd, flags: FDFLAGS_NONBLOCK (4) on a socket.
    wasi("fd_fdstat_set_flags", &[I32, I32], &[I32], RETURNS),
    // -> the domain's generation: 0, or how many forks made it (see
    // `GENERATION_VARIABLE`).
    amber("generation", &[], &[I64], RETURNS),
];

/// The import `module.name`, if the ABI has it.
pub fn find_import(module: &str, name: &str) -> Option<&'static Import> {
    IMPORTS
        .iter()
        .find(|import| import.module == module && import.name == name)
}

/// The blocking imports (the asyncify list), in [`IMPORTS`] order.
pub fn blocking_imports() -> impl Iterator<Item = &'static Import> {
    IMPORTS.iter().filter(|import| import.is_blocking)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::BTreeSet;
    use std::string::ToString;
    use std::vec::Vec;

    use super::{AMBER_MODULE, IMPORTS, WASI_MODULE, blocking_imports, find_import};

    #[test]
    fn every_import_is_listed_once_in_a_known_module() {
        let mut seen = BTreeSet::new();
        for import in IMPORTS {
            assert!(
                [AMBER_MODULE, WASI_MODULE].contains(&import.module),
                "{import}"
            );
            assert!(seen.insert((import.module, import.name)), "{import} twice");
            assert!(import.results.len() <= 1, "{import}");
            assert_eq!(find_import(import.module, import.name), Some(import));
        }
        assert_eq!(find_import(AMBER_MODULE, "no_such_import"), None);
    }

    #[test]
    fn the_blocking_imports_are_the_asyncify_list() {
        let blocking: Vec<_> = blocking_imports().map(ToString::to_string).collect();
        assert_eq!(
            blocking,
            [
                "amber.sleep",
                "amber.yield",
                "amber.recv",
                "amber.checkpoint",
                "wasi_snapshot_preview1.fd_write",
                "wasi_snapshot_preview1.fd_read",
                "wasi_snapshot_preview1.sched_yield",
                "wasi_snapshot_preview1.poll_oneoff",
                "amber.tcp_accept",
                "amber.tcp_connect",
                "amber.tcp_read",
                "amber.tcp_write",
                "amber.net_poll",
                "wasi_snapshot_preview1.sock_accept",
                "wasi_snapshot_preview1.sock_recv",
                "wasi_snapshot_preview1.sock_send",
            ]
        );
    }

    #[test]
    fn signatures_print_as_the_readme_writes_them() {
        let signature = |name| {
            find_import(AMBER_MODULE, name)
                .map(|import| import.signature().to_string())
                .unwrap_or_default()
        };
        assert_eq!(signature("log"), "[i32 i32 i32] -> []");
        assert_eq!(signature("now"), "[] -> [i64]");
        assert_eq!(signature("recv"), "[i32 i32 i32 i64] -> [i32]");
    }
}

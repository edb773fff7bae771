//! The raw `amber` imports: the only unsafe code in guest-sdk.
//!
//! Each import is declared once and called from exactly one safe wrapper. The
//! wrappers pass pointers and lengths of live Rust slices, so the host (which
//! checks every range anyway, see README "Conventions") only ever sees ranges
//! inside linear memory. On wasm32 `*const u8` and `usize` lower to `i32`, which
//! is the ABI's pointer and length type.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "amber")]
unsafe extern "C" {
    #[link_name = "log"]
    fn amber_log(level: i32, text: *const u8, text_len: usize);
    #[link_name = "now"]
    fn amber_now() -> i64;
    #[link_name = "sleep"]
    fn amber_sleep(duration_ns: i64);
    #[link_name = "yield"]
    fn amber_yield();
    #[link_name = "random"]
    fn amber_random(buffer: *mut u8, buffer_len: usize);
    #[link_name = "self_id"]
    fn amber_self_id(id: *mut u8);
    #[link_name = "generation"]
    fn amber_generation() -> i64;
    #[link_name = "checkpoint"]
    fn amber_checkpoint() -> i32;
    #[link_name = "exit"]
    fn amber_exit(code: i32) -> !;
    #[link_name = "send"]
    fn amber_send(name: *const u8, name_len: usize, message: *const u8, message_len: usize) -> i32;
    #[link_name = "recv"]
    fn amber_recv(buffer: *mut u8, capacity: usize, from: *mut u8, timeout_ns: i64) -> i32;
    #[link_name = "tcp_listener"]
    fn amber_tcp_listener(port: i32) -> i32;
    #[link_name = "tcp_accept"]
    fn amber_tcp_accept(listener: i32, timeout_ns: i64) -> i32;
    #[link_name = "tcp_connect"]
    fn amber_tcp_connect(ipv4: *const u8, port: i32, timeout_ns: i64) -> i32;
    #[link_name = "tcp_read"]
    fn amber_tcp_read(socket: i32, buffer: *mut u8, capacity: usize, timeout_ns: i64) -> i32;
    #[link_name = "tcp_write"]
    fn amber_tcp_write(socket: i32, bytes: *const u8, len: usize, timeout_ns: i64) -> i32;
    #[link_name = "tcp_shutdown"]
    fn amber_tcp_shutdown(socket: i32) -> i32;
    #[link_name = "tcp_close"]
    fn amber_tcp_close(socket: i32) -> i32;
    #[link_name = "net_poll"]
    fn amber_net_poll(entries: *mut u8, count: usize, timeout_ns: i64) -> i32;
}

// Off wasm32 (host unit tests and doc tests of this crate) there is no host ABI:
// these stand-ins keep the crate compiling and linking, and fail loudly if an
// import is actually called.
#[cfg(not(target_arch = "wasm32"))]
use host_stand_ins::*;

#[cfg(not(target_arch = "wasm32"))]
mod host_stand_ins {
    //! Stand-ins for the imports when guest-sdk is compiled for the host.

    fn unavailable(import: &str) -> ! {
        panic!("amber.{import} exists only inside an Amber domain (wasm32)")
    }

    pub(super) unsafe fn amber_log(_: i32, _: *const u8, _: usize) {
        unavailable("log")
    }
    pub(super) unsafe fn amber_now() -> i64 {
        unavailable("now")
    }
    pub(super) unsafe fn amber_sleep(_: i64) {
        unavailable("sleep")
    }
    pub(super) unsafe fn amber_yield() {
        unavailable("yield")
    }
    pub(super) unsafe fn amber_random(_: *mut u8, _: usize) {
        unavailable("random")
    }
    pub(super) unsafe fn amber_self_id(_: *mut u8) {
        unavailable("self_id")
    }
    pub(super) unsafe fn amber_generation() -> i64 {
        unavailable("generation")
    }
    pub(super) unsafe fn amber_checkpoint() -> i32 {
        unavailable("checkpoint")
    }
    pub(super) unsafe fn amber_exit(_: i32) -> ! {
        unavailable("exit")
    }
    pub(super) unsafe fn amber_send(_: *const u8, _: usize, _: *const u8, _: usize) -> i32 {
        unavailable("send")
    }
    pub(super) unsafe fn amber_recv(_: *mut u8, _: usize, _: *mut u8, _: i64) -> i32 {
        unavailable("recv")
    }
    pub(super) unsafe fn amber_tcp_listener(_: i32) -> i32 {
        unavailable("tcp_listener")
    }
    pub(super) unsafe fn amber_tcp_accept(_: i32, _: i64) -> i32 {
        unavailable("tcp_accept")
    }
    pub(super) unsafe fn amber_tcp_connect(_: *const u8, _: i32, _: i64) -> i32 {
        unavailable("tcp_connect")
    }
    pub(super) unsafe fn amber_tcp_read(_: i32, _: *mut u8, _: usize, _: i64) -> i32 {
        unavailable("tcp_read")
    }
    pub(super) unsafe fn amber_tcp_write(_: i32, _: *const u8, _: usize, _: i64) -> i32 {
        unavailable("tcp_write")
    }
    pub(super) unsafe fn amber_tcp_shutdown(_: i32) -> i32 {
        unavailable("tcp_shutdown")
    }
    pub(super) unsafe fn amber_tcp_close(_: i32) -> i32 {
        unavailable("tcp_close")
    }
    pub(super) unsafe fn amber_net_poll(_: *mut u8, _: usize, _: i64) -> i32 {
        unavailable("net_poll")
    }
}

pub(crate) fn log(level: i32, text: &[u8]) {
    // SAFETY: `text` is a live slice: the host reads `text.len()` bytes from its
    // start and keeps no reference after returning.
    unsafe { amber_log(level, text.as_ptr(), text.len()) }
}

pub(crate) fn now_ns() -> i64 {
    // SAFETY: takes no arguments and touches no guest memory.
    unsafe { amber_now() }
}

pub(crate) fn sleep_ns(duration_ns: i64) {
    // SAFETY: takes a plain integer and touches no guest memory. The host may
    // unwind and rewind the stack here (asyncify); that is invisible to Rust,
    // which sees an ordinary call that returns.
    unsafe { amber_sleep(duration_ns) }
}

pub(crate) fn yield_now() {
    // SAFETY: no arguments, no guest memory; may unwind/rewind as `sleep_ns`.
    unsafe { amber_yield() }
}

pub(crate) fn random(buffer: &mut [u8]) {
    // SAFETY: `buffer` is a live, exclusively borrowed slice: the host writes at
    // most `buffer.len()` bytes from its start, and any byte pattern is a valid u8.
    unsafe { amber_random(buffer.as_mut_ptr(), buffer.len()) }
}

pub(crate) fn self_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    // SAFETY: `id` is a live 16-byte array, exactly what the host writes.
    unsafe { amber_self_id(id.as_mut_ptr()) };
    id
}

pub(crate) fn generation() -> i64 {
    // SAFETY: takes no arguments and touches no guest memory.
    unsafe { amber_generation() }
}

pub(crate) fn checkpoint() -> i32 {
    // SAFETY: no arguments; the host commits memory it already owns and may
    // unwind/rewind the stack as `sleep_ns`.
    unsafe { amber_checkpoint() }
}

pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: takes a plain integer; the host ends the domain and never returns,
    // as the `-> !` declaration says.
    unsafe { amber_exit(code) }
}

pub(crate) fn send(name: &[u8], message: &[u8]) -> i32 {
    // SAFETY: both are live slices; the host copies `name.len()` and
    // `message.len()` bytes out of them before returning and keeps no reference.
    unsafe { amber_send(name.as_ptr(), name.len(), message.as_ptr(), message.len()) }
}

pub(crate) fn recv(buffer: &mut [u8], from: &mut [u8; 16], timeout_ns: i64) -> i32 {
    // SAFETY: `buffer` and `from` are live, exclusively borrowed; the host writes
    // at most `buffer.len()` bytes into `buffer` and exactly 16 into `from`, and
    // any byte pattern is valid for u8. It may unwind/rewind as `sleep_ns`.
    unsafe {
        amber_recv(
            buffer.as_mut_ptr(),
            buffer.len(),
            from.as_mut_ptr(),
            timeout_ns,
        )
    }
}

// Socket numbers travel as `i32` (README "Network"): they are small
// (below `FIRST_LISTENER_FD` + the listener and connection limits), so the
// wrappers below take `u32` and the casts never change a value the host
// handed out. A number the guest made up is the host's to refuse
// (`NO_SUCH_SOCKET`).

pub(crate) fn tcp_listener(port: u16) -> i32 {
    // SAFETY: takes a plain integer and touches no guest memory.
    unsafe { amber_tcp_listener(i32::from(port)) }
}

pub(crate) fn tcp_accept(listener: u32, timeout_ns: i64) -> i32 {
    // SAFETY: plain integers, no guest memory; may unwind/rewind as `sleep_ns`.
    unsafe { amber_tcp_accept(listener as i32, timeout_ns) }
}

pub(crate) fn tcp_connect(ipv4: &[u8; 4], port: u16, timeout_ns: i64) -> i32 {
    // SAFETY: `ipv4` is a live 4-byte array, exactly what the host reads; it
    // keeps no reference, and may unwind/rewind as `sleep_ns`.
    unsafe { amber_tcp_connect(ipv4.as_ptr(), i32::from(port), timeout_ns) }
}

pub(crate) fn tcp_read(socket: u32, buffer: &mut [u8], timeout_ns: i64) -> i32 {
    // SAFETY: `buffer` is a live, exclusively borrowed slice: the host writes
    // at most `buffer.len()` bytes from its start, and any byte pattern is a
    // valid u8. It may unwind/rewind as `sleep_ns`.
    unsafe { amber_tcp_read(socket as i32, buffer.as_mut_ptr(), buffer.len(), timeout_ns) }
}

pub(crate) fn tcp_write(socket: u32, bytes: &[u8], timeout_ns: i64) -> i32 {
    // SAFETY: `bytes` is a live slice; the host copies at most `bytes.len()`
    // bytes out of it and keeps no reference. It may unwind/rewind as
    // `sleep_ns`.
    unsafe { amber_tcp_write(socket as i32, bytes.as_ptr(), bytes.len(), timeout_ns) }
}

pub(crate) fn tcp_shutdown(socket: u32) -> i32 {
    // SAFETY: takes a plain integer and touches no guest memory.
    unsafe { amber_tcp_shutdown(socket as i32) }
}

pub(crate) fn tcp_close(socket: u32) -> i32 {
    // SAFETY: takes a plain integer and touches no guest memory.
    unsafe { amber_tcp_close(socket as i32) }
}

/// The size of one `net_poll` entry: socket u32, interest u16, ready u16,
/// little-endian (README "Network").
pub(crate) const POLL_ENTRY_BYTES: usize = 8;

/// `entries` holds whole 8-byte poll entries (README "Network"); a partial
/// one at the end is not passed.
pub(crate) fn net_poll(entries: &mut [u8], timeout_ns: i64) -> i32 {
    let count = entries.len() / POLL_ENTRY_BYTES;
    // SAFETY: `entries` is a live, exclusively borrowed slice of at least
    // `count` 8-byte entries: the host reads and rewrites only those bytes
    // (each entry's `ready` field), any byte pattern is valid for u8, and it
    // keeps no reference. It may unwind/rewind as `sleep_ns`.
    unsafe { amber_net_poll(entries.as_mut_ptr(), count, timeout_ns) }
}

// The entry point. rustc defines the C-style `main(argc, argv)` for the app's
// binary crate (it runs std's runtime setup and the app's `fn main`); guest-sdk
// exports `_start`, the entry the vm calls (README "Module shape").
#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn main(argc: i32, argv: *const *const u8) -> i32;
}

/// The domain's entry point, called by the vm (and called again to rewind a
/// suspended stack: asyncify replays this same call chain).
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn _start() {
    crate::entry::start(|| {
        // SAFETY: `main` is the C entry rustc generates for the app's binary; it
        // accepts argc = 0 with a null argv (std reads no arguments on
        // wasm32-unknown-unknown) and returns the process exit code.
        unsafe { main(0, core::ptr::null()) }
    });
}

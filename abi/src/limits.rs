//! The limits the host enforces and guests may rely on.

/// The largest message `send` accepts, in bytes. A `recv` buffer this large
/// always fits the next message.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The longest domain name, in bytes (a name `send` is given, and a domain's
/// own name).
pub const MAX_NAME_BYTES: usize = 64;

/// The largest module a domain may have, in bytes (today's apps are under
/// 100 KiB). The module is read, compiled and kept on the embedder's heap,
/// several times its size in all: without a bound, one disk holding a huge
/// module took the kernel's heap, and the kernel, down at boot. The vm
/// refuses larger modules, and a migration refuses to receive one.
pub const MAX_MODULE_BYTES: usize = 8 * 1024 * 1024;

/// The most messages a mailbox queues before `send` reports `MailboxFull`.
pub const MAX_MAILBOX_MESSAGES: usize = 256;

/// The most message bytes a mailbox queues before `send` reports
/// `MailboxFull`: four messages of the largest size. A mailbox lives on the
/// kernel heap (twice: the committed record and the queue) and is rewritten
/// with every message it accepts, so without this bound one flooding domain
/// could pile 256 x 64 KiB on a receiver and exhaust the heap.
pub const MAX_MAILBOX_BYTES: usize = 4 * MAX_MESSAGE_BYTES;

/// How many messages to one receiver a sender may keep copies of until the
/// receiver commits them; past it `send` reports `MailboxFull`. The vm asks
/// the receiver to commit at half of this or of [`MAX_OUTBOX_BYTES`]: a
/// commit every 2,048 small messages costs each of them little.
pub const MAX_OUTBOX_MESSAGES: usize = 4096;

/// How many bytes of messages to one receiver a sender may keep: as many as
/// a mailbox holds.
pub const MAX_OUTBOX_BYTES: usize = MAX_MAILBOX_BYTES;

/// The most bytes one `log` or `fd_write` call prints. A longer log message
/// is cut (with a line saying so); `fd_write` writes at most this much per
/// call and says how much it wrote, a short write WASI allows. Printing also
/// costs [`OUTPUT_FUEL_PER_BYTE`]: the serial console is shared by every
/// domain, and without both bounds one call could hold it for many seconds.
pub const MAX_OUTPUT_BYTES_PER_CALL: usize = 4096;

/// Fuel one byte of console output costs, on top of the call itself.
pub const OUTPUT_FUEL_PER_BYTE: u64 = 1;

/// The most TCP ports one image may declare (`image new --listen`).
pub const MAX_LISTEN_PORTS: usize = 8;

/// The most connections one domain holds at once, accepted and connected
/// together; past it `tcp_accept` leaves clients waiting in the listener's
/// backlog and `tcp_connect` reports `LimitReached`. Each costs the
/// embedder two socket buffers of [`SOCKET_BUFFER_BYTES`].
pub const MAX_CONNECTIONS_PER_DOMAIN: usize = 64;

/// The size of each of a connection's two buffers (received, to send) on
/// the embedder's side, in bytes: what a connection may hold outside the
/// domain's memory.
pub const SOCKET_BUFFER_BYTES: usize = 16 * 1024;

/// The most bytes a domain with durable replies holds back, over all its
/// connections, until its next commit; past it `tcp_write` waits for the
/// commit (which the held bytes ask for at once).
pub const MAX_HELD_REPLY_BYTES: usize = 256 * 1024;

/// The fd of a domain's first declared listener; the others follow in the
/// order the image declares them (as wasmtime's `--tcplisten` preopens).
pub const FIRST_LISTENER_FD: u32 = 3;

/// The most entries one `net_poll` takes.
pub const MAX_POLL_ENTRIES: usize = 1024;

/// `net_poll` interest and readiness bits.
pub mod readiness {
    /// Data (or a client, on a listener) is waiting, or the stream ended.
    pub const READABLE: u16 = 1;
    /// A write would take at least one byte.
    pub const WRITABLE: u16 = 2;
    /// The connection is reset or closed by the peer (reported whether
    /// asked for or not).
    pub const HANGUP: u16 = 4;
}

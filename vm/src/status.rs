//! Stable status codes the host ABI returns to guests, and WASI errno values.

/// What an `amber` host call returns to the guest.
///
/// The numbers are part of the ABI: guest-sdk/README.md lists the same table.
/// A *bad request* gets a status; guest misbehaviour (a wild pointer) traps.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The call did what was asked.
    Ok = 0,
    /// No domain has the name or ID given to `send`.
    NoSuchDomain = 1,
    /// The receiver's mailbox holds as many messages, or bytes, as it may.
    MailboxFull = 2,
    /// `recv` waited its whole timeout without a message.
    Timeout = 3,
    /// A message is larger than `MAX_MESSAGE_BYTES`, or a name longer than allowed.
    TooLarge = 4,
    /// `recv`'s buffer is smaller than the next message (the message stays queued).
    BufferTooSmall = 5,
    /// `checkpoint` could not make the domain durable (storage failed or the
    /// module cannot be resumed mid-computation).
    CheckpointFailed = 6,
}

impl Status {
    /// The value handed to the guest.
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The value `recv` returns: statuses are negated so that lengths stay positive.
    pub const fn negated(self) -> i32 {
        -(self as i32)
    }
}

/// The WASI (preview 1) errno values the subset uses.
pub mod errno {
    /// No error.
    pub const SUCCESS: i32 = 0;
    /// Bad file descriptor.
    pub const BADF: i32 = 8;
    /// Invalid seek (on a stream).
    pub const SPIPE: i32 = 70;
    /// Invalid argument.
    pub const INVAL: i32 = 28;
    /// Function not supported.
    pub const NOSYS: i32 = 52;
    /// Not supported (an unsupported subscription kind in poll_oneoff).
    pub const NOTSUP: i32 = 58;
}

/// The largest message `send` accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The most messages a mailbox queues before `send` reports `MailboxFull`.
pub const MAX_MAILBOX_MESSAGES: usize = 256;

/// The most message bytes a mailbox queues before `send` reports
/// `MailboxFull`: four messages of the largest size. A mailbox lives on the
/// kernel heap (twice: the committed record and the queue) and is rewritten
/// with every message it accepts, so without this bound one flooding domain
/// could pile 256 x 64 KiB on a receiver and exhaust the heap.
pub const MAX_MAILBOX_BYTES: usize = 4 * MAX_MESSAGE_BYTES;

/// The most bytes one `log` or `fd_write` call prints. A longer log message
/// is cut (with a line saying so); `fd_write` writes at most this much per
/// call and says how much it wrote, a short write WASI allows. Printing also
/// costs [`OUTPUT_FUEL_PER_BYTE`]: the serial console is shared by every
/// domain, and without both bounds one call could hold it for many seconds.
pub const MAX_OUTPUT_BYTES_PER_CALL: usize = 4096;

/// Fuel one byte of console output costs, on top of the call itself.
pub const OUTPUT_FUEL_PER_BYTE: u64 = 1;

/// The longest domain name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

//! The per-domain state host calls see: identity, clock, mailbox, output.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmi::Memory;

use crate::asyncify::AsyncifyExports;
use crate::blocking::{Blocked, PollInterest};
use crate::held_replies::HeldReplies;
use crate::outbox::Outbox;
use crate::output::{GuestConsole, Writer};
use crate::platform::{LineBuffer, LogLevel, Platform, Stream};
use crate::sockets::SocketTable;
use crate::storage::{DomainId, MailboxMessage, Suspension};

/// The data of a domain's wasmi `Store`.
pub struct HostState {
    pub(crate) name: String,
    pub(crate) id: DomainId,
    pub(crate) args: Vec<String>,
    pub(crate) environment: Vec<String>,
    pub(crate) platform: Arc<dyn Platform>,
    /// The imported memory (set right after it is created).
    pub(crate) memory: Option<Memory>,
    /// Domain clock at `platform_origin_ns`: a restored domain's clock goes on
    /// from its last commit instead of jumping to the machine's clock.
    pub(crate) clock_origin_ns: u64,
    pub(crate) platform_origin_ns: u64,
    pub(crate) mailbox: VecDeque<MailboxMessage>,
    /// The bytes of the messages in `mailbox` (see `queue_message`).
    pub(crate) mailbox_bytes: usize,
    /// Per receiver: how many of this domain's messages it accepted (see
    /// `DomainRecord::sent`), counting sends since the last commit.
    pub(crate) sent: BTreeMap<DomainId, u64>,
    /// Per sender: the highest message number accepted, counting messages
    /// since the last commit (`DomainRecord::accepted` is the committed one).
    pub(crate) accepted: BTreeMap<DomainId, u64>,
    /// Messages sent that their receivers have not committed.
    pub(crate) outbox: Outbox,
    pub(crate) stdout: LineBuffer,
    pub(crate) stderr: LineBuffer,
    /// Where output goes: escaped, under the domain's name, within budget.
    pub(crate) console: GuestConsole,
    /// Fuel charged for host work that no slice has paid yet (see
    /// `crate::fuel`); the next slices pay it before the domain runs.
    pub(crate) fuel_debt: u64,
    /// Present when the module was built with asyncify.
    pub(crate) asyncify: Option<AsyncifyExports>,
    pub(crate) module_fingerprint: [u8; 16],
    /// The asyncify save area, grown on the first unwind.
    pub(crate) save_buffer: Option<u32>,
    /// Set while the guest stack is unwound into memory (or being rewound).
    pub(crate) suspension: Option<Suspension>,
    /// The scheduler started a rewind; the next blocking call stops it.
    pub(crate) is_rewinding: bool,
    /// What the last `checkpoint` commit reported.
    pub(crate) checkpoint_status: abi::StatusCode,
    /// A commit was asked for: the next blocking call stops at a safe point
    /// even when it could complete at once (a server whose `recv` always
    /// finds a message would otherwise never reach one).
    pub(crate) is_checkpoint_wanted: bool,
    /// The domain's socket numbers (see `crate::sockets`).
    pub(crate) sockets: SocketTable,
    /// The sockets the waiting `net_poll` or `poll_oneoff` watches (set
    /// each time the guest enters the call, rewinds included).
    pub(crate) poll_interest: Vec<PollInterest>,
    /// The socket a waiting `tcp_connect` opened, until it completes: not
    /// yet the guest's, so a commit leaves it out.
    pub(crate) connecting: Option<u32>,
    /// The call the unwound stack waits in, with its arguments, for the
    /// scheduler's wake-up test (`None` after a restore: the guest then
    /// re-enters the call to say what it waits for).
    pub(crate) waiting: Option<Blocked>,
    /// Reply bytes held until a commit (durable replies only).
    pub(crate) held: HeldReplies,
    /// When the oldest reply bytes still held were written (domain clock),
    /// while any are. They ask for a commit, made when the domain next
    /// waits, or at its next blocking call once they have waited
    /// [`REPLY_HOLD_NS`] or fill half the room: a server that finds more
    /// requests ready goes on serving them, and one commit then releases
    /// the replies to all (group commit).
    pub(crate) replies_held_since_ns: Option<u64>,
}

/// The longest held replies wait for a domain that keeps finding work
/// before its next blocking call stops for their commit.
pub(crate) const REPLY_HOLD_NS: u64 = 2_000_000;

impl HostState {
    /// Whether held replies need their commit at the next blocking call,
    /// even one that could complete at once.
    pub(crate) fn are_replies_due(&self) -> bool {
        self.replies_held_since_ns.is_some_and(|since| {
            self.now_ns().saturating_sub(since) >= REPLY_HOLD_NS
                || self.held.room() <= abi::MAX_HELD_REPLY_BYTES / 2
        })
    }
}

impl core::fmt::Debug for HostState {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("HostState")
            .field("name", &self.name)
            .field("mailbox_len", &self.mailbox.len())
            .field("suspension", &self.suspension)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// Queues a message at the end of the mailbox.
    pub(crate) fn queue_message(&mut self, message: MailboxMessage) {
        self.mailbox_bytes = self.mailbox_bytes.saturating_add(message.bytes.len());
        self.mailbox.push_back(message);
    }

    /// Drops the oldest message of the mailbox.
    pub(crate) fn drop_oldest_message(&mut self) {
        if let Some(message) = self.mailbox.pop_front() {
            self.mailbox_bytes = self.mailbox_bytes.saturating_sub(message.bytes.len());
        }
    }

    /// The domain clock in nanoseconds.
    pub(crate) fn now_ns(&self) -> u64 {
        let elapsed = self
            .platform
            .monotonic_ns()
            .saturating_sub(self.platform_origin_ns);
        self.clock_origin_ns.saturating_add(elapsed)
    }

    /// Charges `units` of work done outside a host call (a call completed
    /// when the domain is resumed, a commit it asked for): the next slice,
    /// or the next host call, pays it.
    pub(crate) fn charge_later(&mut self, units: u64) {
        self.fuel_debt = self.fuel_debt.saturating_add(units);
    }

    /// Prints one line the guest wrote (without its line break).
    pub(crate) fn print_line(&mut self, stream: Stream, line: &[u8]) {
        self.console
            .print(&*self.platform, Writer::Guest, stream, line);
    }

    /// Writes guest output, line by line, to the platform console.
    pub(crate) fn write_output(&mut self, stream: Stream, bytes: &[u8]) {
        let platform = &*self.platform;
        let console = &mut self.console;
        let buffer = match stream {
            Stream::Stderr => &mut self.stderr,
            _ => &mut self.stdout,
        };
        buffer.push(bytes, |line| {
            console.print(platform, Writer::Guest, stream, line)
        });
    }

    /// Prints a line about the domain at error level (traps, failed commits).
    pub(crate) fn log_error(&mut self, line: &str) {
        let stream = Stream::Log(LogLevel::Error);
        self.console
            .print(&*self.platform, Writer::Host, stream, line.as_bytes());
    }

    /// Prints a line about the domain at info level.
    pub(crate) fn log_info(&mut self, line: &str) {
        let stream = Stream::Log(LogLevel::Info);
        self.console
            .print(&*self.platform, Writer::Host, stream, line.as_bytes());
    }

    /// Emits unfinished output lines and the line about dropped output (at
    /// exit, trap or stop).
    pub(crate) fn flush_output(&mut self) {
        let platform = &*self.platform;
        let console = &mut self.console;
        self.stdout
            .flush(|line| console.print(platform, Writer::Guest, Stream::Stdout, line));
        self.stderr
            .flush(|line| console.print(platform, Writer::Guest, Stream::Stderr, line));
        console.report_now(platform);
    }
}

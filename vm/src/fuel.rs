//! What host calls cost in fuel, and the debt a slice cannot pay.
//!
//! Fuel is wasmi's meter of guest work: about one unit per instruction, and
//! about a nanosecond of CPU on the development machine (a
//! [`crate::DEFAULT_FUEL_SLICE`] of 10,000 is about 10 us). wasmi meters the
//! guest's instructions but not the work a host call does for it, so every
//! host call charges fuel for that work itself, at the prices below: each is
//! the host's time for one unit of the work, measured in a release build
//! (`vm/tests/host_call_fuel.rs` prints the figures) and rounded up, so that
//! a unit of fuel buys about as much CPU in a host call as in wasm.
//!
//! A call whose work can be bounded up front (iovecs, subscriptions, bytes)
//! is bounded first and charged before it does the work; the rest (a
//! message copied when a `recv` completes, a commit) as soon as the work is
//! known. What the slice's fuel cannot cover becomes the domain's *debt*
//! ([`crate::HostState`]'s `fuel_debt`): the next slices pay it before the
//! domain runs again ([`crate::Domain::run`]), so a domain whose calls cost
//! more than a slice sits out rounds instead of being forgiven, and over
//! time gets no more CPU than a domain that only computes.
//!
//! A commit a guest's `checkpoint` asks for is not charged: it is at most
//! one per blocking call, and its cost is mostly the disk's.
//!
//! What fuel cannot price is the platform's own cost of a console byte (a
//! 16550 UART at 115,200 baud takes 87 us a byte; QEMU's emulated one an
//! I/O exit per byte): `crate::output` bounds that with a per-second budget
//! of lines and bytes instead.

use wasmi::Caller;

use crate::host_state::HostState;

/// Every host call, whatever it does: wasmi's trampoline into the host and
/// back, and the call's own checks (about 30 ns measured; more for the
/// calls that pause the wasmi call, which charge their work on top).
pub const CALL: u64 = 50;

/// One byte of console output, on top of [`OUTPUT_LINE`]: copied, scanned
/// for line breaks and control bytes, and escaped (`abi`'s figure, which
/// guest-sdk/README.md promises).
pub const OUTPUT_BYTE: u64 = abi::OUTPUT_FUEL_PER_BYTE;

/// One byte that may need escaping (a control byte, or any past ASCII,
/// counted before the work by `output::escapable_bytes`), on top of
/// [`OUTPUT_BYTE`]: it prints as four.
pub const ESCAPED_BYTE: u64 = 8;

/// One line handed to the console: the budget check, the escaped copy and
/// the platform's call (the kernel formats a `[NAME] ` prefix and takes the
/// serial port's lock), whatever the line's length.
pub const OUTPUT_LINE: u64 = 200;

/// One iovec of `fd_write` read from guest memory and bounds-checked,
/// whatever its length (a zero-length one costs as much to read).
pub const IOVEC: u64 = 10;

/// One `poll_oneoff` subscription, charged when the call scans them for
/// its deadline and again when it writes their events.
pub const SUBSCRIPTION: u64 = 20;

/// One `net_poll` entry, charged when the call reads them and again when
/// it writes their readiness (as a [`SUBSCRIPTION`]).
pub const POLL_ENTRY: u64 = 20;

/// One call into the machine's network (accept, connect, read, write,
/// shutdown, close): the embedder's lock and its socket set, on top of the
/// bytes copied ([`copy`]). smoltcp's calls take a few hundred ns.
pub const NETWORK_CALL: u64 = 300;

/// One message `send` hands to the scheduler: the pause and resume of the
/// wasmi call, the receiver's lookup by name, the numbering and the
/// outbox's bookkeeping. (`recv` takes a message from a queue: it pays
/// [`CALL`] and the copy.)
pub const MESSAGE: u64 = 2_000;

/// Bytes copied per unit of fuel: a message is copied three times between
/// `send` and the receiver's mailbox (out of guest memory, into the
/// outbox, into the mailbox) and once more by `recv`; arguments and
/// environment once. A memcpy moves a few bytes a nanosecond.
pub const COPY_BYTES_PER_FUEL: u64 = 4;

/// Eight random bytes: the platform's generator, which on the kernel
/// executes RDRAND, a few hundred cycles on current CPUs.
pub const RANDOM_WORD: u64 = 200;

/// A commit the guest asked for (`checkpoint`), on top of its pages: the
/// record's encoding, two superblock writes and the device's flushes, at
/// least five slices' worth on a fast disk. Without it a domain that asks
/// for a commit after every store took three busy domains' CPU on the
/// host, and far more over a slow disk. The machine's own periodic
/// checkpoints are the machine's cost, not the domain's.
pub const COMMIT: u64 = 50_000;

/// One page a commit the guest asked for writes: found dirty, copied and
/// written with its block's checksum.
pub const COMMITTED_PAGE: u64 = 2_000;

/// Fuel per nanosecond of a commit's measured time: a slice of
/// [`crate::DEFAULT_FUEL_SLICE`] is about 10 us.
const FUEL_PER_NS: u64 = 1;

/// Fuel for a commit the guest asked for that wrote `pages` pages in
/// `elapsed_ns` on the platform's clock: the larger of what its work
/// costs by the prices above and the time it took (a slow disk makes a
/// commit cost what it really costs the others).
pub fn commit(pages: usize, elapsed_ns: u64) -> u64 {
    let priced = COMMIT.saturating_add((pages as u64).saturating_mul(COMMITTED_PAGE));
    priced.max(elapsed_ns.saturating_mul(FUEL_PER_NS))
}

/// Fuel for copying `len_bytes` bytes.
pub fn copy(len_bytes: usize) -> u64 {
    (len_bytes as u64).div_ceil(COPY_BYTES_PER_FUEL)
}

/// Fuel for `len_bytes` random bytes.
pub fn random(len_bytes: usize) -> u64 {
    (len_bytes as u64).div_ceil(8).saturating_mul(RANDOM_WORD)
}

/// Charges `units` of host work to the domain whose call this is: from the
/// slice's fuel as far as it goes, the rest as debt. Fuel may reach zero:
/// the domain is then preempted at its next instruction, as at the end of
/// any slice, and its next slice starts by paying the debt.
pub fn charge(caller: &mut Caller<'_, HostState>, units: u64) -> Result<(), wasmi::Error> {
    let state = caller.data_mut();
    state.fuel_debt = state.fuel_debt.saturating_add(units);
    settle(caller)
}

/// Pays what the slice's fuel can of the domain's debt (work charged
/// outside a host call, see [`HostState::charge_later`], included).
pub fn settle(caller: &mut Caller<'_, HostState>) -> Result<(), wasmi::Error> {
    // Domain engines always meter fuel; without metering there is no slice
    // to pay from, and the debt waits for `Domain::run`.
    let Ok(fuel) = caller.get_fuel() else {
        return Ok(());
    };
    let debt = caller.data().fuel_debt;
    let paid = fuel.min(debt);
    if paid > 0 {
        caller.set_fuel(fuel - paid)?;
        caller.data_mut().fuel_debt = debt - paid;
    }
    Ok(())
}

//! WASI `poll_oneoff`: clock subscriptions and socket readiness.
//!
//! Layouts from wasi_snapshot_preview1 (witx `subscription`, `event`):
//! a subscription is 48 bytes (userdata u64 @0, tag u8 @8, then for a
//! clock: clock id u32 @16, timeout u64 @24, precision u64 @32, flags u16
//! @40 with bit 0 = absolute; for fd_read (tag 1) and fd_write (tag 2):
//! fd u32 @16); an event is 32 bytes (userdata u64 @0, errno u16 @8, type
//! u8 @10, and for fd_read / fd_write: nbytes u64 @16, flags u16 @24 with
//! bit 0 = hangup).

use crate::blocking::PollInterest;
use crate::error::TrapReason;
use crate::guest_memory;
use crate::host_state::HostState;
use abi::{errno, readiness};

const SUBSCRIPTION_BYTES: i32 = 48;
const EVENT_BYTES: i32 = 32;
const TAG_CLOCK: u8 = 0;
const TAG_FD_READ: u8 = 1;
const TAG_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const FLAG_ABSOLUTE: u16 = 1;
const EVENT_FD_READWRITE_HANGUP: u16 = 1;
const CALL: &str = "poll_oneoff";

/// The `abi::readiness` bit a socket subscription waits for.
fn wanted_bit(tag: u8) -> Option<u16> {
    match tag {
        TAG_FD_READ => Some(readiness::READABLE),
        TAG_FD_WRITE => Some(readiness::WRITABLE),
        _ => None,
    }
}

/// The domain-clock deadline of the earliest clock subscription (`None`
/// without one), now when a subscription completes at once (an unknown
/// kind, or an fd that is no socket). The sockets subscribed to go to
/// `state.poll_interest`. Traps on bad memory.
pub fn deadline_ns(
    memory: &[u8],
    state: &mut HostState,
    subscriptions: i32,
    count: i32,
) -> Result<Option<u64>, TrapReason> {
    if count <= 0 {
        return Err(TrapReason::BadArgument {
            call: CALL,
            detail: "no subscriptions",
        });
    }
    let total = count
        .checked_mul(SUBSCRIPTION_BYTES)
        .ok_or(TrapReason::BadArgument {
            call: CALL,
            detail: "too many subscriptions",
        })?;
    guest_memory::slice(memory, CALL, subscriptions, total)?;
    let now_ns = state.now_ns();
    let mut earliest: Option<u64> = None;
    let mut is_immediate = false;
    state.poll_interest.clear();
    for index in 0..count {
        let base = subscriptions.wrapping_add(index * SUBSCRIPTION_BYTES);
        let tag = guest_memory::slice(memory, CALL, base.wrapping_add(8), 1)?[0];
        if tag == TAG_CLOCK {
            let deadline = clock_deadline(memory, state, base, now_ns)?;
            earliest = Some(earliest.map_or(deadline, |current| current.min(deadline)));
            continue;
        }
        let fd = guest_memory::read_u32(memory, CALL, base.wrapping_add(16))?;
        match wanted_bit(tag) {
            Some(interest) if state.sockets.get(fd).is_some() => {
                state.poll_interest.push(PollInterest {
                    socket: fd,
                    interest,
                });
            }
            _ => is_immediate = true,
        }
    }
    Ok(if is_immediate { Some(now_ns) } else { earliest })
}

fn clock_deadline(
    memory: &[u8],
    state: &HostState,
    base: i32,
    now_ns: u64,
) -> Result<u64, TrapReason> {
    let clock_id = guest_memory::read_u32(memory, CALL, base.wrapping_add(16))?;
    let timeout = guest_memory::read_u64(memory, CALL, base.wrapping_add(24))?;
    let flags_bytes = guest_memory::slice(memory, CALL, base.wrapping_add(40), 2)?;
    let flags = u16::from_le_bytes([flags_bytes[0], flags_bytes[1]]);
    if flags & FLAG_ABSOLUTE == 0 {
        return Ok(now_ns.saturating_add(timeout));
    }
    if clock_id == CLOCK_REALTIME {
        let realtime_ns = state.platform.realtime_ns();
        return Ok(now_ns.saturating_add(timeout.saturating_sub(realtime_ns)));
    }
    Ok(timeout)
}

/// Writes one event per subscription that fired and returns how many it
/// wrote: the clock ones once the wait's deadline passed, the sockets that
/// are ready (or hung up), and at once every subscription of another kind
/// (`NOTSUP`) or on an fd that is no socket (`BADF`).
pub fn write_events(
    memory: &mut [u8],
    state: &HostState,
    subscriptions: i32,
    events: i32,
    count: i32,
    is_past_deadline: bool,
) -> Result<u32, TrapReason> {
    let platform = state.platform.clone();
    let network = platform.network();
    let mut written = 0i32;
    for index in 0..count.max(0) {
        let base = subscriptions.wrapping_add(index * SUBSCRIPTION_BYTES);
        let userdata = guest_memory::read_u64(memory, CALL, base)?;
        let tag = guest_memory::slice(memory, CALL, base.wrapping_add(8), 1)?[0];
        let mut flags = 0u16;
        let error = if tag == TAG_CLOCK {
            if !is_past_deadline {
                continue;
            }
            errno::SUCCESS
        } else if let Some(wanted) = wanted_bit(tag) {
            let fd = guest_memory::read_u32(memory, CALL, base.wrapping_add(16))?;
            match state.sockets.readiness(network, state.id, fd) {
                None => errno::BADF,
                Some(bits) if bits & readiness::HANGUP != 0 => {
                    flags = EVENT_FD_READWRITE_HANGUP;
                    errno::SUCCESS
                }
                Some(bits) if bits & wanted != 0 => errno::SUCCESS,
                Some(_) => continue,
            }
        } else {
            errno::NOTSUP
        };
        let event = events.wrapping_add(written * EVENT_BYTES);
        let slot = guest_memory::slice_mut(memory, CALL, event, EVENT_BYTES)?;
        slot.fill(0);
        slot[..8].copy_from_slice(&userdata.to_le_bytes());
        slot[8..10].copy_from_slice(&(error as u16).to_le_bytes());
        slot[10] = tag;
        if wanted_bit(tag).is_some() && error == errno::SUCCESS {
            // nbytes is not known for a stream: at least one byte (or the
            // end) waits.
            slot[16..24].copy_from_slice(&1u64.to_le_bytes());
            slot[24..26].copy_from_slice(&flags.to_le_bytes());
        }
        written += 1;
    }
    Ok(written as u32)
}

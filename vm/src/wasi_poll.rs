//! WASI `poll_oneoff`: clock subscriptions wait, others complete at once.
//!
//! Layouts from wasi_snapshot_preview1 (witx `subscription`, `event`):
//! a subscription is 48 bytes (userdata u64 @0, tag u8 @8, clock id u32 @16,
//! timeout u64 @24, precision u64 @32, flags u16 @40 with bit 0 = absolute);
//! an event is 32 bytes (userdata u64 @0, errno u16 @8, type u8 @10).

use crate::error::TrapReason;
use crate::guest_memory;
use crate::host_state::HostState;
use abi::errno;

const SUBSCRIPTION_BYTES: i32 = 48;
const EVENT_BYTES: i32 = 32;
const TAG_CLOCK: u8 = 0;
const CLOCK_REALTIME: u32 = 0;
const FLAG_ABSOLUTE: u16 = 1;
const CALL: &str = "poll_oneoff";

/// The domain-clock deadline of the earliest clock subscription, `None` if a
/// non-clock subscription makes the call complete at once. Traps on bad memory.
pub fn deadline_ns(
    memory: &[u8],
    state: &HostState,
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
    for index in 0..count {
        let base = subscriptions.wrapping_add(index * SUBSCRIPTION_BYTES);
        let tag = guest_memory::slice(memory, CALL, base.wrapping_add(8), 1)?[0];
        if tag != TAG_CLOCK {
            return Ok(Some(now_ns));
        }
        let deadline = clock_deadline(memory, state, base, now_ns)?;
        earliest = Some(earliest.map_or(deadline, |current| current.min(deadline)));
    }
    Ok(earliest)
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

/// Writes one event per subscription that fired (every non-clock one, and the
/// clock ones whose deadline passed) and returns how many it wrote.
pub fn write_events(
    memory: &mut [u8],
    subscriptions: i32,
    events: i32,
    count: i32,
) -> Result<u32, TrapReason> {
    let mut written = 0i32;
    for index in 0..count.max(0) {
        let base = subscriptions.wrapping_add(index * SUBSCRIPTION_BYTES);
        let userdata = guest_memory::read_u64(memory, CALL, base)?;
        let tag = guest_memory::slice(memory, CALL, base.wrapping_add(8), 1)?[0];
        // The wait ended at the earliest deadline; report the clock
        // subscriptions (std's sleep uses exactly one) and refuse the rest.
        let error = if tag == TAG_CLOCK {
            errno::SUCCESS
        } else {
            errno::NOTSUP
        };
        let event = events.wrapping_add(written * EVENT_BYTES);
        let slot = guest_memory::slice_mut(memory, CALL, event, EVENT_BYTES)?;
        slot.fill(0);
        slot[..8].copy_from_slice(&userdata.to_le_bytes());
        slot[8..10].copy_from_slice(&(error as u16).to_le_bytes());
        slot[10] = tag;
        written += 1;
    }
    Ok(written as u32)
}

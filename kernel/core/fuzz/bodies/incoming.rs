//! Fuzz body: arbitrary bytes from a peer to a machine's migration listener.

use crate::common::{B, Disk, Machine, Switch};

use super::persist_bodies::frames::{records, repaired};

/// How much fake time passes after each record, in nanoseconds.
const STEP_NS: u64 = 1_000_000;

/// Boots a machine with one spare disk and, over an in-memory link, sends
/// it each record of `data` (see persist's `frames`): a record whose first
/// byte is 0 as raw bytes (so the length framing is fuzzed too), any other
/// as a length-framed frame with a right checksum. Then the peer hangs up
/// and time passes beyond every deadline. Nothing may panic, and the
/// machine ends with at most the one domain the peer could have migrated
/// and answers polls. Returns how many domains it runs.
pub fn incoming(data: &[u8]) -> usize {
    let switch = Switch::new();
    let mut machine = Machine::boot(&switch, B, vec![Disk::blank()]);
    let mut peer = Switch::dial(&switch, B, "10.6.6.6");
    for record in records(data) {
        match record.split_first() {
            Some((0, raw)) => peer.send_raw(raw),
            Some((_, frame)) => peer.send_frame(&repaired(frame)),
            None => {}
        }
        machine.poll();
        machine.idle(STEP_NS);
        machine.poll();
    }
    drop(peer);
    for _ in 0..50 {
        machine.idle(1_000_000_000);
        machine.poll();
    }
    assert!(
        machine.host.domains.len() <= 1,
        "one peer made {} domains",
        machine.host.domains.len()
    );
    machine.host.domains.len()
}

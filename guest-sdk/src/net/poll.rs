//! `poll`: wait until any of several sockets can be read or written.

use std::ops::BitOr;
use std::time::Duration;

use abi::{MAX_POLL_ENTRIES, readiness};

use super::{NetError, Socket, count_or_error};
use crate::sys::{self, POLL_ENTRY_BYTES};
use crate::time::duration_to_ns;

/// What a poll entry waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Interest(u16);

impl Interest {
    /// Nothing (a hangup is still reported).
    pub const NONE: Interest = Interest(0);
    /// Data to read, the end of the stream, or (on a listener) a client.
    pub const READABLE: Interest = Interest(readiness::READABLE);
    /// Room to write at least one byte.
    pub const WRITABLE: Interest = Interest(readiness::WRITABLE);

    /// The ABI's bits.
    pub fn bits(self) -> u16 {
        self.0
    }
}

impl BitOr for Interest {
    type Output = Interest;

    fn bitor(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }
}

/// What a socket can do now, as the last [`poll`] saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ready(u16);

impl Ready {
    /// Wraps the ABI's bits (any unknown bits are kept, and ignored).
    pub fn from_bits(bits: u16) -> Ready {
        Ready(bits)
    }

    /// The ABI's bits.
    pub fn bits(self) -> u16 {
        self.0
    }

    /// A read (or an accept) would not wait.
    pub fn is_readable(self) -> bool {
        self.0 & readiness::READABLE != 0
    }

    /// A write would take at least one byte.
    pub fn is_writable(self) -> bool {
        self.0 & readiness::WRITABLE != 0
    }

    /// The connection is reset or closed by the peer.
    pub fn is_hangup(self) -> bool {
        self.0 & readiness::HANGUP != 0
    }

    /// Nothing to report.
    pub fn is_empty(self) -> bool {
        self.0 & (readiness::READABLE | readiness::WRITABLE | readiness::HANGUP) == 0
    }
}

/// One socket [`poll`] watches, and what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollEntry {
    pub socket: Socket,
    pub interest: Interest,
    /// Set by [`poll`].
    pub ready: Ready,
}

impl PollEntry {
    /// An entry waiting for `interest` on `socket`.
    pub fn new(socket: Socket, interest: Interest) -> PollEntry {
        PollEntry {
            socket,
            interest,
            ready: Ready::default(),
        }
    }
}

/// Waits until at least one entry's socket is ready for what it asks, or a
/// hangup, or `timeout` passes (`None`: forever; `Some(ZERO)`: only
/// looks). Sets every entry's `ready` and says how many are ready (0 at
/// the timeout). A safe point: the host may commit the domain meanwhile.
///
/// At most [`MAX_POLL_ENTRIES`] entries ([`NetError::TooManyEntries`]);
/// a closed socket is [`NetError::NoSuchSocket`].
pub fn poll(entries: &mut [PollEntry], timeout: Option<Duration>) -> Result<usize, NetError> {
    let timeout_ns = timeout.map_or(-1, duration_to_ns);
    let mut wire = encode(entries)?;
    let ready_count = count_or_error(sys::net_poll(&mut wire, timeout_ns))?;
    decode(&wire, entries);
    let ready_count = usize::try_from(ready_count).unwrap_or(usize::MAX);
    if ready_count > entries.len() {
        return Err(NetError::Unexpected(
            i32::try_from(ready_count).unwrap_or(i32::MAX),
        ));
    }
    Ok(ready_count)
}

/// The entries as the ABI lays them out: socket u32, interest u16, ready
/// u16, little-endian.
pub(crate) fn encode(entries: &[PollEntry]) -> Result<Vec<u8>, NetError> {
    if entries.len() > MAX_POLL_ENTRIES {
        return Err(NetError::TooManyEntries);
    }
    let mut wire = Vec::with_capacity(entries.len() * POLL_ENTRY_BYTES);
    for entry in entries {
        wire.extend_from_slice(&entry.socket.0.to_le_bytes());
        wire.extend_from_slice(&entry.interest.0.to_le_bytes());
        wire.extend_from_slice(&0u16.to_le_bytes());
    }
    Ok(wire)
}

/// Copies each entry's `ready` back out of `wire`.
pub(crate) fn decode(wire: &[u8], entries: &mut [PollEntry]) {
    for (entry, bytes) in entries.iter_mut().zip(wire.chunks_exact(POLL_ENTRY_BYTES)) {
        entry.ready = Ready(u16::from_le_bytes([bytes[6], bytes[7]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_travel_in_the_abi_layout() {
        let mut entries = [
            PollEntry::new(Socket(3), Interest::READABLE),
            PollEntry::new(Socket(0x0102_0304), Interest::READABLE | Interest::WRITABLE),
        ];
        let mut wire = encode(&entries).unwrap();
        assert_eq!(wire, [3, 0, 0, 0, 1, 0, 0, 0, 4, 3, 2, 1, 3, 0, 0, 0]);
        wire[6] = 4;
        wire[14] = 2;
        decode(&wire, &mut entries);
        assert!(entries[0].ready.is_hangup() && !entries[0].ready.is_readable());
        assert!(entries[1].ready.is_writable() && !entries[1].ready.is_hangup());
    }

    #[test]
    fn too_many_entries_are_refused_before_the_host_is_called() {
        let entries = vec![PollEntry::new(Socket(3), Interest::READABLE); MAX_POLL_ENTRIES + 1];
        assert_eq!(encode(&entries), Err(NetError::TooManyEntries));
        assert!(encode(&entries[..MAX_POLL_ENTRIES]).is_ok());
    }

    #[test]
    fn unknown_ready_bits_are_ignored() {
        let ready = Ready::from_bits(0x80);
        assert!(ready.is_empty() && !ready.is_readable());
    }
}

//! Durable replies: bytes a domain writes leave only once a commit holds them.
//!
//! With `NetworkRecord::durable_replies`, a write to a connection goes into
//! the domain's held bytes, not the network, and asks for a commit (one
//! commit covers every connection). Once the commit is durable the bytes
//! are released to the network as its buffers have room, so a client never
//! sees a reply from a state a power cut could undo. At most
//! `abi::MAX_HELD_REPLY_BYTES` are held, released or not; past it a write
//! waits for the commit and the release. A close or shutdown of a
//! connection with held bytes is done once they are all sent.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use abi::MAX_HELD_REPLY_BYTES;

use crate::net::{ConnectionId, NetError, Network};

/// What to do to a connection once its held bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum AfterRelease {
    #[default]
    Nothing,
    Shutdown,
    Close,
}

#[derive(Debug, Default)]
struct HeldConnection {
    /// Written since the last commit.
    unreleased: Vec<u8>,
    /// Held by a commit, waiting for room on the network.
    releasing: VecDeque<u8>,
    after: AfterRelease,
}

/// A domain's held reply bytes, per connection.
#[derive(Debug, Default)]
pub(crate) struct HeldReplies {
    connections: BTreeMap<ConnectionId, HeldConnection>,
    held_bytes: usize,
}

impl HeldReplies {
    /// How many more bytes may be held.
    pub(crate) fn room(&self) -> usize {
        MAX_HELD_REPLY_BYTES.saturating_sub(self.held_bytes)
    }

    /// Holds as much of `bytes` for `connection` as there is room for.
    pub(crate) fn hold(&mut self, connection: ConnectionId, bytes: &[u8]) -> usize {
        let taken = bytes.len().min(self.room());
        if taken > 0 {
            let held = self.connections.entry(connection).or_default();
            held.unreleased.extend_from_slice(&bytes[..taken]);
            self.held_bytes += taken;
        }
        taken
    }

    /// Whether `connection` has bytes not yet on the network.
    pub(crate) fn is_holding(&self, connection: ConnectionId) -> bool {
        self.connections.contains_key(&connection)
    }

    /// Shuts down or closes `connection` once its held bytes are sent
    /// (a close wins over a shutdown).
    pub(crate) fn after_release(&mut self, connection: ConnectionId, after: AfterRelease) {
        if let Some(held) = self.connections.get_mut(&connection)
            && held.after != AfterRelease::Close
        {
            held.after = after;
        }
    }

    /// A commit holds everything written so far: it may all be released.
    pub(crate) fn commit_succeeded(&mut self) {
        for held in self.connections.values_mut() {
            let unreleased = core::mem::take(&mut held.unreleased);
            held.releasing.extend(unreleased);
        }
    }

    /// Whether released bytes wait on a connection that has room now.
    pub(crate) fn can_release(&self, network: &dyn Network) -> bool {
        // Only a connection with released bytes asks the network: a
        // readiness question is a system call on the host runner, and a
        // busy server holds a reply for each of its clients.
        self.connections.iter().any(|(&connection, held)| {
            if held.releasing.is_empty() {
                return held.unreleased.is_empty() && held.after != AfterRelease::Nothing;
            }
            let readiness = network.connection_readiness(connection);
            readiness.writable || readiness.hangup
        })
    }

    /// Hands released bytes to the network as far as it has room, then
    /// the closes and shutdowns that waited for them; returns the bytes
    /// handed over (to be charged).
    pub(crate) fn release(&mut self, network: &dyn Network) -> usize {
        let mut sent = 0;
        let mut done = Vec::new();
        for (&connection, held) in self.connections.iter_mut() {
            while !held.releasing.is_empty() {
                let (front, _) = held.releasing.as_slices();
                match network.write(connection, front) {
                    Ok(0) | Err(NetError::WouldBlock) => break,
                    Ok(written) => {
                        let written = written.min(front.len());
                        held.releasing.drain(..written);
                        self.held_bytes = self.held_bytes.saturating_sub(written);
                        sent += written;
                    }
                    Err(_) => {
                        // The peer is gone: nothing more will be sent.
                        self.held_bytes = self.held_bytes.saturating_sub(held.releasing.len());
                        held.releasing.clear();
                        self.held_bytes = self.held_bytes.saturating_sub(held.unreleased.len());
                        held.unreleased.clear();
                        break;
                    }
                }
            }
            if held.releasing.is_empty() && held.unreleased.is_empty() {
                done.push(connection);
            }
        }
        for connection in done {
            if let Some(held) = self.connections.remove(&connection) {
                match held.after {
                    AfterRelease::Nothing => {}
                    AfterRelease::Shutdown => network.shutdown(connection),
                    AfterRelease::Close => network.close(connection),
                }
            }
        }
        sent
    }

    /// Drops every held byte (the domain's connections are gone).
    pub(crate) fn clear(&mut self) {
        self.connections.clear();
        self.held_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::net::NoNetwork;

    #[test]
    fn at_most_the_limit_is_held_and_a_lost_peer_frees_it() {
        let mut held = HeldReplies::default();
        let bytes = vec![7u8; MAX_HELD_REPLY_BYTES + 10];
        assert_eq!(held.hold(1, &bytes), MAX_HELD_REPLY_BYTES);
        assert_eq!(held.room(), 0);
        assert_eq!(held.hold(2, b"more"), 0);
        assert!(held.is_holding(1) && !held.is_holding(2));
        // Before a commit nothing is released, whatever the network.
        assert_eq!(held.release(&NoNetwork), 0);
        assert_eq!(held.room(), 0);
        held.commit_succeeded();
        // NoNetwork refuses every write: the bytes are dropped, the room freed.
        assert_eq!(held.release(&NoNetwork), 0);
        assert_eq!(held.room(), MAX_HELD_REPLY_BYTES);
        assert!(!held.is_holding(1));
    }
}

//! The secure link against itself, against strangers, and against tampering.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::*;
use crate::migration::framing::{Link, LinkError};

/// Distinct bytes on every call (splitmix64): enough for tests, whose
/// ephemeral keys need only differ.
struct Counter(u64);

impl Entropy for Counter {
    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut value = self.0;
            value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            value ^= value >> 31;
            chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        }
    }
}

#[derive(Debug, Default)]
struct Wire {
    queues: [VecDeque<u8>; 2],
    /// Everything side 0 ever sent, for replays.
    sent_by_0: Vec<u8>,
    is_closed: bool,
    /// Bytes a queue holds before `send` takes no more (none: no limit).
    capacity_bytes: Option<usize>,
}

/// One end of an in-memory byte stream.
#[derive(Debug)]
struct End {
    wire: Rc<RefCell<Wire>>,
    side: usize,
}

impl Drop for End {
    fn drop(&mut self) {
        self.wire.borrow_mut().is_closed = true;
    }
}

impl Link for End {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        let mut wire = self.wire.borrow_mut();
        if wire.is_closed {
            return Err(LinkError::Closed);
        }
        let room = wire.capacity_bytes.map_or(usize::MAX, |capacity| {
            capacity.saturating_sub(wire.queues[1 - self.side].len())
        });
        let bytes = &bytes[..bytes.len().min(room)];
        if self.side == 0 {
            wire.sent_by_0.extend_from_slice(bytes);
        }
        wire.queues[1 - self.side].extend(bytes);
        Ok(bytes.len())
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        let mut wire = self.wire.borrow_mut();
        let is_closed = wire.is_closed;
        let queue = &mut wire.queues[self.side];
        if queue.is_empty() && is_closed {
            return Err(LinkError::Closed);
        }
        let count = buffer.len().min(queue.len());
        for (slot, byte) in buffer.iter_mut().zip(queue.drain(..count)) {
            *slot = byte;
        }
        Ok(count)
    }
}

fn wire() -> (End, End, Rc<RefCell<Wire>>) {
    let wire = Rc::new(RefCell::new(Wire::default()));
    let end = |side| End {
        wire: Rc::clone(&wire),
        side,
    };
    (end(0), end(1), wire)
}

fn secret(byte: u8) -> ClusterSecret {
    ClusterSecret::from_bytes([byte; SECRET_BYTES]).unwrap()
}

/// Both ends of a secure link, the initiator on side 0.
fn pair(
    initiator_secret: &ClusterSecret,
    responder_secret: &ClusterSecret,
) -> (SecureLink<End>, SecureLink<End>, Rc<RefCell<Wire>>) {
    let (a, b, wire) = wire();
    let mut entropy = Counter(1);
    let initiator = SecureLink::initiator(a, initiator_secret, &mut entropy);
    let responder = SecureLink::responder(b, responder_secret, &mut entropy);
    (initiator, responder, wire)
}

/// Polls both ends until `message` has gone from `from` to `to`.
fn carry(
    from: &mut SecureLink<End>,
    to: &mut SecureLink<End>,
    message: &[u8],
) -> Result<Vec<u8>, LinkError> {
    let mut offset = 0;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 10_000];
    for _ in 0..10_000 {
        if offset < message.len() {
            offset += from.send(&message[offset..])?;
        } else {
            from.receive(&mut [])?;
        }
        let count = to.receive(&mut buffer)?;
        received.extend_from_slice(&buffer[..count]);
        if received.len() == message.len() && offset == message.len() {
            break;
        }
    }
    Ok(received)
}

fn long_message() -> Vec<u8> {
    (0..300_000u32)
        .map(|index| (index * 7 % 253) as u8)
        .collect()
}

#[test]
fn the_same_secret_carries_a_stream_both_ways() {
    let (mut a, mut b, _wire) = pair(&secret(7), &secret(7));
    assert_eq!(
        a.send(b"early"),
        Ok(0),
        "nothing is taken before the handshake"
    );
    let message = long_message();
    assert_eq!(carry(&mut a, &mut b, &message), Ok(message.clone()));
    assert!(a.is_established() && b.is_established());
    assert_eq!(
        carry(&mut b, &mut a, b"an answer"),
        Ok(b"an answer".to_vec())
    );
}

#[test]
fn the_wire_shows_no_plaintext() {
    let (mut a, mut b, wire) = pair(&secret(7), &secret(7));
    let message = b"a secret page: the quick brown fox".repeat(50);
    carry(&mut a, &mut b, &message).unwrap();
    let sent = &wire.borrow().sent_by_0;
    assert!(sent.len() > message.len());
    assert!(!sent.windows(15).any(|window| window == b"the quick brown"));
}

#[test]
fn another_secret_fails_the_handshake_on_both_sides() {
    let (mut a, mut b, _wire) = pair(&secret(7), &secret(8));
    assert_eq!(a.send(b"x"), Ok(0));
    assert_eq!(b.receive(&mut [0; 64]), Err(LinkError::NotInCluster));
    assert_eq!(
        b.send(b"x"),
        Err(LinkError::NotInCluster),
        "it stays failed"
    );
    drop(b);
    assert_eq!(a.receive(&mut [0; 64]), Err(LinkError::HandshakeClosed));
}

#[test]
fn an_answer_made_with_another_secret_is_refused_by_the_initiator() {
    let (mut a, _b, wire) = pair(&secret(1), &secret(1));
    a.receive(&mut []).unwrap();
    // A stranger's own handshake, whose answer it sends to A instead.
    let (mut c, mut d, stranger) = pair(&secret(2), &secret(2));
    c.receive(&mut []).unwrap();
    d.receive(&mut [0; 8]).unwrap();
    let answer: Vec<u8> = stranger.borrow_mut().queues[0].drain(..).collect();
    assert_eq!(answer.len(), 2 + 48);
    wire.borrow_mut().queues[0].extend(&answer);
    assert_eq!(a.receive(&mut [0; 64]), Err(LinkError::NotInCluster));
}

#[test]
fn an_old_plaintext_frame_is_refused_before_it_is_buffered() {
    let (_a, b_end, wire) = wire();
    let mut b = SecureLink::responder(b_end, &secret(7), &mut Counter(3));
    // The old protocol's 4-byte little-endian length of a 60-byte Begin.
    wire.borrow_mut().queues[1].extend([60, 0, 0, 0]);
    wire.borrow_mut().queues[1].extend([0xaa; 60]);
    assert_eq!(b.receive(&mut [0; 64]), Err(LinkError::NotInCluster));
    // Only the length was read: nothing of the frame was buffered.
    assert_eq!(wire.borrow().queues[1].len(), 62);
}

#[test]
fn a_replayed_exchange_fails_at_its_first_record() {
    let (mut a, mut b, original) = pair(&secret(7), &secret(7));
    carry(&mut a, &mut b, b"Begin, the module, the pages").unwrap();
    let captured = original.borrow().sent_by_0.clone();

    // A fresh responder with the same secret gets every byte again.
    let (_c, d_end, replay) = wire();
    let mut d = SecureLink::responder(d_end, &secret(7), &mut Counter(99));
    replay.borrow_mut().queues[1].extend(&captured);
    assert_eq!(d.receive(&mut [0; 4096]), Err(LinkError::NotInCluster));
}

#[test]
fn a_record_replayed_or_reordered_within_a_session_is_tampering() {
    let (mut a, mut b, wire) = pair(&secret(7), &secret(7));
    carry(&mut a, &mut b, b"first").unwrap();
    let before = wire.borrow().sent_by_0.len();
    carry(&mut a, &mut b, b"second").unwrap();
    let record = wire.borrow().sent_by_0[before..].to_vec();
    wire.borrow_mut().queues[1].extend(&record);
    assert_eq!(b.receive(&mut [0; 64]), Err(LinkError::Tampered));
}

#[test]
fn one_flipped_byte_anywhere_in_a_record_is_tampering() {
    let message = b"a page of a domain".repeat(10);
    let record_bytes = 2 + message.len() + 16;
    for position in 0..record_bytes {
        let (mut a, mut b, wire) = pair(&secret(7), &secret(7));
        carry(&mut a, &mut b, b"hello").unwrap();
        assert_eq!(a.send(&message), Ok(message.len()));
        {
            let mut wire = wire.borrow_mut();
            let queue = &mut wire.queues[1];
            assert_eq!(queue.len(), record_bytes);
            queue[position] ^= 0x01;
        }
        let mut buffer = vec![0u8; 4096];
        let result = b.receive(&mut buffer);
        if position < 2 {
            // A changed length: the record is cut short or waits for
            // bytes that never come; either way nothing is delivered.
            assert!(
                matches!(result, Ok(0) | Err(LinkError::Tampered)),
                "{position}: {result:?}"
            );
        } else {
            assert_eq!(result, Err(LinkError::Tampered), "{position}");
        }
    }
}

#[test]
fn a_record_too_short_for_its_tag_is_refused_at_once() {
    let (mut a, mut b, wire) = pair(&secret(7), &secret(7));
    carry(&mut a, &mut b, b"hello").unwrap();
    wire.borrow_mut().queues[1].extend([0, 15]);
    wire.borrow_mut().queues[1].extend([0; 15]);
    assert_eq!(b.receive(&mut [0; 64]), Err(LinkError::Tampered));
    assert_eq!(wire.borrow().queues[1].len(), 15, "the body was not read");
}

#[test]
fn a_truncated_record_delivers_nothing() {
    let (mut a, mut b, wire) = pair(&secret(7), &secret(7));
    carry(&mut a, &mut b, b"hello").unwrap();
    a.send(&[9; 1000]).unwrap();
    {
        let mut wire = wire.borrow_mut();
        wire.queues[1].truncate(500);
        wire.is_closed = true;
    }
    assert_eq!(b.receive(&mut [0; 4096]), Err(LinkError::Closed));
}

#[test]
fn send_takes_plaintext_only_while_the_backlog_is_short() {
    let (mut a, mut b, wire) = pair(&secret(7), &secret(7));
    carry(&mut a, &mut b, b"hello").unwrap();
    wire.borrow_mut().capacity_bytes = Some(0);
    let message = vec![5u8; 1 << 20];
    let mut taken = 0;
    for _ in 0..100 {
        taken += a.send(&message[taken..]).unwrap();
    }
    assert!(taken >= MAX_PLAINTEXT_BYTES, "{taken}");
    assert!(taken < 64 * 1024 + MAX_PLAINTEXT_BYTES, "{taken}");
    // Once the wire has room, all of it arrives, in order.
    wire.borrow_mut().capacity_bytes = None;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 100_000];
    for _ in 0..1000 {
        taken += a.send(&message[taken..]).unwrap();
        let count = b.receive(&mut buffer).unwrap();
        received.extend_from_slice(&buffer[..count]);
    }
    assert_eq!(received, message);
}

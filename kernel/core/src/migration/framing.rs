//! Frames over a byte stream: a 4-byte little-endian length, then a message.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use persist::migrate;

/// The largest frame accepted: the protocol's largest message. A longer
/// length is refused before anything is buffered for it.
pub const MAX_FRAME_BYTES: usize = migrate::wire::MAX_MESSAGE_LEN;

/// The most bytes one read from the link asks for: several frames.
const RECEIVE_CHUNK_BYTES: usize = 32 * 1024;

/// Bytes of the length before each frame.
const HEADER_BYTES: usize = 4;

/// A reliable, ordered byte stream to the peer (TCP in the kernel).
pub trait Link {
    /// Queues as many of `bytes` as fit now and says how many (0 if none).
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError>;

    /// Moves whatever has arrived into `buffer` and says how much (0 if
    /// nothing yet).
    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError>;

    /// Gives queued bytes a chance to leave now, before a long computation
    /// (the kernel polls its network stack); by default nothing.
    fn push(&mut self) {}
}

/// Why a link stopped carrying bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The peer closed the connection or it was reset.
    Closed,
    /// The secure link's handshake failed: the peer does not hold this
    /// cluster's secret, or it replays a captured exchange (its keys are
    /// another session's).
    NotInCluster,
    /// The peer closed the connection during the handshake, after our
    /// first message: it refused it (it holds another secret, or none).
    HandshakeClosed,
    /// A record failed to authenticate after the handshake: bytes were
    /// changed, dropped, reordered or replayed on the way.
    Tampered,
    /// Anything else, said in words.
    Failed(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Closed => formatter.write_str("the connection closed"),
            LinkError::NotInCluster => formatter.write_str(
                "the peer does not hold this cluster's secret, or replayed an old exchange",
            ),
            LinkError::HandshakeClosed => formatter.write_str(
                "the peer closed the connection during the handshake: it does not hold \
                 this cluster's secret",
            ),
            LinkError::Tampered => formatter.write_str(
                "a record failed to authenticate: the connection was tampered with \
                 (bytes changed, dropped or replayed)",
            ),
            LinkError::Failed(reason) => formatter.write_str(reason),
        }
    }
}

/// Why no frame could be taken from a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The link failed.
    Link(LinkError),
    /// A frame's length exceeds [`MAX_FRAME_BYTES`]: the peer is broken or
    /// hostile, and nothing more from it can be framed.
    TooLong {
        /// The length the peer announced.
        length_bytes: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Link(error) => write!(formatter, "{error}"),
            FrameError::TooLong { length_bytes } => write!(
                formatter,
                "the peer sent a frame of {length_bytes} bytes (at most {MAX_FRAME_BYTES})"
            ),
        }
    }
}

/// Frames over a link: outgoing bytes not yet accepted, incoming bytes not
/// yet a whole frame.
#[derive(Debug)]
pub struct Framed<L> {
    link: L,
    outgoing: Vec<u8>,
    sent: usize,
    /// Received bytes: `incoming[taken..filled]` wait to be taken as frames.
    incoming: Vec<u8>,
    taken: usize,
    filled: usize,
    bytes_sent: u64,
}

impl<L: Link> Framed<L> {
    /// Frames over `link`, nothing queued or received yet.
    pub fn new(link: L) -> Framed<L> {
        Framed {
            link,
            outgoing: Vec::new(),
            sent: 0,
            incoming: Vec::new(),
            taken: 0,
            filled: 0,
            bytes_sent: 0,
        }
    }

    /// Queues `message` as one frame; [`Framed::flush`] sends it.
    pub fn queue(&mut self, message: &[u8]) {
        self.outgoing
            .extend_from_slice(&(message.len() as u32).to_le_bytes());
        self.outgoing.extend_from_slice(message);
    }

    /// Bytes queued and not yet taken by the link.
    pub fn backlog(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Bytes the link has taken so far, frame headers included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Sends what the link takes; true when nothing is left.
    pub fn flush(&mut self) -> Result<bool, LinkError> {
        while self.sent < self.outgoing.len() {
            let count = self.link.send(&self.outgoing[self.sent..])?;
            if count == 0 {
                break;
            }
            self.sent += count;
            self.bytes_sent += count as u64;
        }
        if self.sent == self.outgoing.len() {
            self.outgoing.clear();
            self.sent = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// Gives the link's queued bytes a chance to leave ([`Link::push`]).
    pub fn push(&mut self) {
        self.link.push();
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let range = self.next_frame_range()?;
        Ok(range.map(|range| self.incoming[range].to_vec()))
    }

    /// Where the next whole frame lies (read it with [`Framed::frame`]), if
    /// one has arrived: valid until the next call (the receiver reads pages
    /// in place, without a copy of each).
    pub fn next_frame_range(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        loop {
            if let Some(range) = self.take_frame()? {
                return Ok(Some(range));
            }
            // What is left (less than a frame) moves to the front, and the
            // link writes straight behind it.
            self.incoming.copy_within(self.taken..self.filled, 0);
            self.filled -= self.taken;
            self.taken = 0;
            if self.incoming.is_empty() {
                self.incoming = vec![0; HEADER_BYTES + MAX_FRAME_BYTES + RECEIVE_CHUNK_BYTES];
            }
            let count = self
                .link
                .receive(&mut self.incoming[self.filled..])
                .map_err(FrameError::Link)?;
            if count == 0 {
                return Ok(None);
            }
            self.filled += count;
        }
    }

    /// The bytes of a frame [`Framed::next_frame_range`] returned. A range
    /// from elsewhere gives whatever of it lies in the buffer (maybe none).
    pub fn frame(&self, range: Range<usize>) -> &[u8] {
        self.incoming.get(range).unwrap_or(&[])
    }

    fn take_frame(&mut self) -> Result<Option<Range<usize>>, FrameError> {
        let waiting = &self.incoming[self.taken..self.filled];
        let Some(header) = waiting.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        let length_bytes = u32::from_le_bytes(*header) as usize;
        if length_bytes > MAX_FRAME_BYTES {
            return Err(FrameError::TooLong { length_bytes });
        }
        if waiting.len() < HEADER_BYTES + length_bytes {
            return Ok(None);
        }
        let start = self.taken + HEADER_BYTES;
        self.taken += HEADER_BYTES + length_bytes;
        Ok(Some(start..start + length_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;

    /// A link that delivers `arriving` a few bytes per read and takes at
    /// most `window` bytes per send.
    #[derive(Debug, Default)]
    struct Trickle {
        arriving: VecDeque<u8>,
        sent: Vec<u8>,
        window: usize,
        is_closed: bool,
    }

    impl Link for Trickle {
        fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
            let count = bytes.len().min(self.window);
            self.sent.extend_from_slice(&bytes[..count]);
            Ok(count)
        }

        fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
            if self.arriving.is_empty() && self.is_closed {
                return Err(LinkError::Closed);
            }
            let count = buffer.len().min(self.arriving.len()).min(3);
            for slot in &mut buffer[..count] {
                *slot = self.arriving.pop_front().unwrap_or(0);
            }
            Ok(count)
        }
    }

    fn framed(bytes: &[u8]) -> Framed<Trickle> {
        Framed::new(Trickle {
            arriving: bytes.iter().copied().collect(),
            window: 5,
            ..Trickle::default()
        })
    }

    #[test]
    fn frames_arrive_whole_from_a_trickle() {
        let mut bytes = Vec::new();
        for message in [&b"hello"[..], b"", b"a longer message"] {
            bytes.extend_from_slice(&(message.len() as u32).to_le_bytes());
            bytes.extend_from_slice(message);
        }
        let mut framed = framed(&bytes);
        assert_eq!(framed.next_frame(), Ok(Some(b"hello".to_vec())));
        assert_eq!(framed.next_frame(), Ok(Some(Vec::new())));
        assert_eq!(framed.next_frame(), Ok(Some(b"a longer message".to_vec())));
        assert_eq!(framed.next_frame(), Ok(None));
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let mut framed = framed(&[6, 0, 0, 0, b'a', b'b']);
        assert_eq!(framed.next_frame(), Ok(None));
        framed.link.arriving.extend(b"cdef");
        assert_eq!(framed.next_frame(), Ok(Some(b"abcdef".to_vec())));
    }

    #[test]
    fn a_length_over_the_maximum_is_refused_before_buffering() {
        let length = (MAX_FRAME_BYTES as u32 + 1).to_le_bytes();
        let mut framed = framed(&length);
        assert_eq!(
            framed.next_frame(),
            Err(FrameError::TooLong {
                length_bytes: MAX_FRAME_BYTES + 1
            })
        );
        let mut framed = framed_with_max();
        assert_eq!(
            framed.next_frame().map(|frame| frame.map(|f| f.len())),
            Ok(Some(MAX_FRAME_BYTES))
        );
    }

    fn framed_with_max() -> Framed<Trickle> {
        let mut bytes = (MAX_FRAME_BYTES as u32).to_le_bytes().to_vec();
        bytes.resize(4 + MAX_FRAME_BYTES, 0xa5);
        let mut framed = framed(&bytes);
        framed.link.window = usize::MAX;
        framed
    }

    #[test]
    fn a_closed_link_is_an_error_once_drained() {
        let mut framed = framed(&[1, 0, 0, 0, 9]);
        framed.link.is_closed = true;
        assert_eq!(framed.next_frame(), Ok(Some(vec![9])));
        assert_eq!(
            framed.next_frame(),
            Err(FrameError::Link(LinkError::Closed))
        );
    }

    #[test]
    fn flush_sends_through_a_narrow_window() {
        let mut framed = framed(&[]);
        framed.queue(b"abcdefgh");
        assert_eq!(framed.backlog(), 12);
        assert_eq!(framed.flush(), Ok(true));
        assert_eq!(framed.bytes_sent(), 12);
        assert_eq!(framed.link.sent, b"\x08\0\0\0abcdefgh");
        framed.link.window = 0;
        framed.queue(b"x");
        assert_eq!(framed.flush(), Ok(false));
        assert_eq!(framed.backlog(), 5);
    }
}

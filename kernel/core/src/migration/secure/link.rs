//! SecureLink: a link encrypted and authenticated with the cluster secret.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use snow::{HandshakeState, TransportState};

use super::CipherClock;
use super::resolver::LinkResolver;
use super::secret::{ClusterSecret, Entropy};
use crate::migration::framing::{Link, LinkError};

/// The Noise protocol the link speaks (Noise spec rev. 34, section 9.4:
/// NNpsk0): two ephemeral keys and the cluster secret as the pre-shared
/// key mixed in before the first message.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";

/// Mixed into the handshake hash (Noise spec section 6): a peer speaking
/// another protocol or version fails the handshake instead of
/// misreading what follows.
pub const PROLOGUE: &[u8] = b"amber-migration-1";

/// The longest Noise message (Noise spec section 3), so the longest record.
pub const MAX_RECORD_BYTES: usize = 65_535;

/// Bytes of ChaChaPoly's authentication tag on every transport message.
const TAG_BYTES: usize = 16;

/// The most plaintext one record carries.
pub const MAX_PLAINTEXT_BYTES: usize = MAX_RECORD_BYTES - TAG_BYTES;

/// Bytes of the big-endian length before each record.
const LENGTH_BYTES: usize = 2;

/// NNpsk0's handshake messages are an ephemeral key and a tag (48 bytes):
/// a longer handshake record is refused before it is buffered (an old
/// peer's plaintext frame header reads as several KiB).
const MAX_HANDSHAKE_RECORD_BYTES: usize = 128;

/// Plaintext is taken in `send` only while less than this much ciphertext
/// waits for the inner link: with one more record, the backlog stays under
/// 128 KiB.
const BACKLOG_LIMIT_BYTES: usize = 64 * 1024;

/// Which side of the handshake a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It connected: it sends the first handshake message.
    Initiator,
    /// It accepted the connection: it answers the first message.
    Responder,
}

/// Where the link stands.
enum Phase {
    /// The two handshake messages are on their way.
    Handshake(Box<HandshakeState>),
    /// Keys agreed: records carry the stream.
    Transport {
        transport: Box<TransportState>,
        records_received: u64,
    },
    /// The handshake or a record failed: nothing more passes.
    Failed(LinkError),
}

/// A [`Link`] over another, mutually authenticated with the cluster
/// secret, encrypted and protected against replay by Noise
/// ([`NOISE_PARAMS`]). On the wire: a 2-byte big-endian length, then one
/// Noise message; the two handshake messages first, then the stream in
/// transport messages. Until the handshake completes `send` takes nothing
/// and `receive` gives nothing, as a TCP connection still connecting, so
/// whatever runs over a plain link runs over this one unchanged.
///
/// Every buffer is bounded: one record arriving (at most 64 KiB, sized to
/// its announced length), its plaintext, and under 128 KiB of ciphertext
/// waiting for the inner link.
pub struct SecureLink<L> {
    inner: L,
    role: Role,
    phase: Phase,
    /// Ciphertext records: `outgoing[sent..]` waits for the inner link.
    outgoing: Vec<u8>,
    sent: usize,
    /// The record arriving, its length first: `received` bytes so far.
    record: Vec<u8>,
    received: usize,
    /// A record's plaintext: `plaintext[taken..]` waits to be received.
    plaintext: Vec<u8>,
    taken: usize,
    /// Whether the inner link took all of the initiator's first message
    /// (a close after that is the responder refusing us).
    is_first_message_sent: bool,
    cipher_clock: Option<CipherClock>,
}

impl<L> fmt::Debug for SecureLink<L> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::Transport { .. } => "transport",
            Phase::Failed(_) => "failed",
        };
        formatter
            .debug_struct("SecureLink")
            .field("role", &self.role)
            .field("phase", &phase)
            .field("backlog", &(self.outgoing.len() - self.sent))
            .finish_non_exhaustive()
    }
}

impl<L: Link> SecureLink<L> {
    /// The side that connected: its first handshake message is queued now
    /// and leaves as soon as the inner link takes bytes.
    pub fn initiator(inner: L, secret: &ClusterSecret, entropy: &mut dyn Entropy) -> Self {
        let mut link = SecureLink::new(inner, Role::Initiator);
        match handshake(Role::Initiator, secret, entropy) {
            Ok(mut state) => {
                let mut message = [0u8; MAX_HANDSHAKE_RECORD_BYTES];
                match state.write_message(&[], &mut message) {
                    Ok(length) => {
                        link.queue_record(&message[..length]);
                        link.phase = Phase::Handshake(state);
                    }
                    Err(error) => link.phase = Phase::Failed(noise_failed(error)),
                }
            }
            Err(error) => link.phase = Phase::Failed(error),
        }
        link
    }

    /// The side that accepted: it waits for the initiator's message.
    pub fn responder(inner: L, secret: &ClusterSecret, entropy: &mut dyn Entropy) -> Self {
        let mut link = SecureLink::new(inner, Role::Responder);
        link.phase = match handshake(Role::Responder, secret, entropy) {
            Ok(state) => Phase::Handshake(state),
            Err(error) => Phase::Failed(error),
        };
        link
    }

    fn new(inner: L, role: Role) -> Self {
        SecureLink {
            inner,
            role,
            phase: Phase::Failed(LinkError::Closed),
            outgoing: Vec::new(),
            sent: 0,
            record: vec![0; LENGTH_BYTES],
            received: 0,
            plaintext: Vec::new(),
            taken: 0,
            is_first_message_sent: false,
            cipher_clock: None,
        }
    }

    /// Adds the time spent encrypting and decrypting to `clock`'s total.
    pub fn counting(mut self, clock: Option<CipherClock>) -> Self {
        self.cipher_clock = clock;
        self
    }

    /// Which side of the handshake this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake is complete (the peer holds the secret).
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Transport { .. })
    }

    /// The link underneath.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The link underneath, to change (tests that cut it).
    pub fn inner_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    fn failed(&self) -> Result<(), LinkError> {
        match &self.phase {
            Phase::Failed(error) => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// Ends the link with `error`: every later call says it again.
    fn fail(&mut self, error: LinkError) -> LinkError {
        self.phase = Phase::Failed(error.clone());
        self.plaintext.clear();
        self.taken = 0;
        error
    }

    fn backlog(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Appends `message` as a record; the bytes already sent go first when
    /// they are at least half the buffer, so it stays within twice the
    /// backlog limit plus a record.
    fn queue_record(&mut self, message: &[u8]) {
        self.compact_outgoing();
        self.outgoing
            .extend_from_slice(&(message.len() as u16).to_be_bytes());
        self.outgoing.extend_from_slice(message);
    }

    fn compact_outgoing(&mut self) {
        if self.sent > 0 && self.sent >= self.backlog() {
            self.outgoing.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Hands the inner link what it takes of the queued records.
    fn flush_outgoing(&mut self) -> Result<(), LinkError> {
        while self.sent < self.outgoing.len() {
            let count = self.inner.send(&self.outgoing[self.sent..])?;
            if count == 0 {
                break;
            }
            self.sent += count;
        }
        if self.sent == self.outgoing.len() {
            self.outgoing.clear();
            self.sent = 0;
            self.is_first_message_sent = true;
        }
        Ok(())
    }

    /// A close while the handshake is on, after our first message left,
    /// is the responder refusing it.
    fn closed_in_handshake(&self, error: LinkError) -> LinkError {
        let is_refused = self.role == Role::Initiator
            && self.is_first_message_sent
            && matches!(self.phase, Phase::Handshake(_));
        if is_refused && error == LinkError::Closed {
            LinkError::HandshakeClosed
        } else {
            error
        }
    }

    /// Reads until a whole record has arrived: its length, if it has. A
    /// length the phase cannot have is refused before its body is read.
    fn read_record(&mut self) -> Result<Option<usize>, LinkError> {
        loop {
            if self.received >= LENGTH_BYTES {
                let length = usize::from(u16::from_be_bytes([self.record[0], self.record[1]]));
                if self.received == LENGTH_BYTES + length {
                    self.received = 0;
                    return Ok(Some(length));
                }
            }
            let wanted = if self.received < LENGTH_BYTES {
                LENGTH_BYTES
            } else {
                self.record.len()
            };
            let count = match self.inner.receive(&mut self.record[self.received..wanted]) {
                Ok(count) => count,
                Err(error) => return Err(self.closed_in_handshake(error)),
            };
            if count == 0 {
                return Ok(None);
            }
            self.received += count;
            if self.received == LENGTH_BYTES {
                let length = usize::from(u16::from_be_bytes([self.record[0], self.record[1]]));
                self.check_length(length)?;
                self.record.resize(LENGTH_BYTES + length, 0);
            }
        }
    }

    fn check_length(&self, length: usize) -> Result<(), LinkError> {
        match &self.phase {
            Phase::Handshake(_) if length == 0 || length > MAX_HANDSHAKE_RECORD_BYTES => {
                Err(LinkError::NotInCluster)
            }
            Phase::Transport { .. } if length < TAG_BYTES => Err(self.decrypt_error()),
            _ => Ok(()),
        }
    }

    /// What a record that fails to decrypt means: the responder's first
    /// one is a peer replaying an old exchange (its keys were another
    /// session's); any later one, tampering on the way.
    fn decrypt_error(&self) -> LinkError {
        match &self.phase {
            Phase::Transport {
                records_received: 0,
                ..
            } if self.role == Role::Responder => LinkError::NotInCluster,
            _ => LinkError::Tampered,
        }
    }

    /// Takes the handshake message in `self.record`: answers it (the
    /// responder) and enters the transport phase.
    fn take_handshake_message(&mut self, length: usize) -> Result<(), LinkError> {
        let Phase::Handshake(state) = &mut self.phase else {
            return Ok(());
        };
        let mut payload = [0u8; MAX_HANDSHAKE_RECORD_BYTES];
        state
            .read_message(
                &self.record[LENGTH_BYTES..LENGTH_BYTES + length],
                &mut payload,
            )
            .map_err(|_| LinkError::NotInCluster)?;
        if !state.is_handshake_finished() {
            let mut message = [0u8; MAX_HANDSHAKE_RECORD_BYTES];
            let length = state
                .write_message(&[], &mut message)
                .map_err(noise_failed)?;
            self.queue_record(&message[..length]);
        }
        let Phase::Handshake(state) =
            core::mem::replace(&mut self.phase, Phase::Failed(LinkError::Closed))
        else {
            return Ok(());
        };
        let transport = state.into_transport_mode().map_err(noise_failed)?;
        self.phase = Phase::Transport {
            transport: Box::new(transport),
            records_received: 0,
        };
        Ok(())
    }

    /// Decrypts the transport record in `self.record` into `buffer` when
    /// it has room, or else into `self.plaintext`; says how much went into
    /// `buffer`.
    fn take_transport_record(
        &mut self,
        length: usize,
        buffer: &mut [u8],
    ) -> Result<usize, LinkError> {
        let decrypt_error = self.decrypt_error();
        let Phase::Transport {
            transport,
            records_received,
        } = &mut self.phase
        else {
            return Ok(0);
        };
        let message = &self.record[LENGTH_BYTES..LENGTH_BYTES + length];
        let plaintext_bytes = length - TAG_BYTES;
        let started_ns = self.cipher_clock.map(|clock| clock.now_ns());
        let result = if buffer.len() >= plaintext_bytes {
            transport
                .read_message(message, buffer)
                .map(|_| plaintext_bytes)
        } else {
            self.plaintext.resize(plaintext_bytes, 0);
            self.taken = 0;
            transport
                .read_message(message, &mut self.plaintext)
                .map(|_| 0)
        };
        if let (Some(clock), Some(started_ns)) = (self.cipher_clock, started_ns) {
            clock.add_since(started_ns);
        }
        *records_received += 1;
        let count = result.map_err(|_| decrypt_error)?;
        if count == 0 {
            return Ok(self.take_plaintext(buffer));
        }
        Ok(count)
    }

    fn take_plaintext(&mut self, buffer: &mut [u8]) -> usize {
        let waiting = &self.plaintext[self.taken..];
        let count = waiting.len().min(buffer.len());
        buffer[..count].copy_from_slice(&waiting[..count]);
        self.taken += count;
        if self.taken == self.plaintext.len() {
            self.plaintext.clear();
            self.taken = 0;
        }
        count
    }

    fn receive_records(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        self.flush_outgoing()?;
        if self.taken < self.plaintext.len() {
            return Ok(self.take_plaintext(buffer));
        }
        if buffer.is_empty() {
            return Ok(0);
        }
        while let Some(length) = self.read_record()? {
            if matches!(self.phase, Phase::Handshake(_)) {
                self.take_handshake_message(length)?;
                self.flush_outgoing()?;
                continue;
            }
            let count = self.take_transport_record(length, buffer)?;
            if count > 0 {
                return Ok(count);
            }
        }
        Ok(0)
    }

    /// Takes the peer's handshake messages that have arrived, so that a
    /// side that only sends still completes the handshake.
    fn advance_handshake(&mut self) -> Result<(), LinkError> {
        while matches!(self.phase, Phase::Handshake(_)) {
            let Some(length) = self.read_record()? else {
                break;
            };
            self.take_handshake_message(length)?;
            self.flush_outgoing()?;
        }
        Ok(())
    }

    fn send_records(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        self.flush_outgoing()?;
        self.advance_handshake()?;
        let Phase::Transport { transport, .. } = &mut self.phase else {
            return Ok(0);
        };
        let started_ns = self.cipher_clock.map(|clock| clock.now_ns());
        let mut taken = 0;
        let mut result = Ok(());
        while taken < bytes.len() && self.outgoing.len() - self.sent < BACKLOG_LIMIT_BYTES {
            let chunk = &bytes[taken..bytes.len().min(taken + MAX_PLAINTEXT_BYTES)];
            if self.sent > 0 && self.sent >= self.outgoing.len() - self.sent {
                self.outgoing.drain(..self.sent);
                self.sent = 0;
            }
            let start = self.outgoing.len();
            let record_bytes = chunk.len() + TAG_BYTES;
            self.outgoing
                .extend_from_slice(&(record_bytes as u16).to_be_bytes());
            self.outgoing.resize(start + LENGTH_BYTES + record_bytes, 0);
            if let Err(error) =
                transport.write_message(chunk, &mut self.outgoing[start + LENGTH_BYTES..])
            {
                self.outgoing.truncate(start);
                result = Err(noise_failed(error));
                break;
            }
            taken += chunk.len();
        }
        if let (Some(clock), Some(started_ns)) = (self.cipher_clock, started_ns) {
            clock.add_since(started_ns);
        }
        result?;
        self.flush_outgoing()?;
        Ok(taken)
    }
}

impl<L: Link> Link for SecureLink<L> {
    fn send(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        self.failed()?;
        match self.send_records(bytes) {
            Ok(count) => Ok(count),
            Err(error) => Err(self.fail(error)),
        }
    }

    fn receive(&mut self, buffer: &mut [u8]) -> Result<usize, LinkError> {
        self.failed()?;
        match self.receive_records(buffer) {
            Ok(count) => Ok(count),
            Err(error) => Err(self.fail(error)),
        }
    }

    fn push(&mut self) {
        if self.failed().is_ok()
            && let Err(error) = self.flush_outgoing()
        {
            self.fail(error);
        }
        self.inner.push();
    }
}

/// A handshake for `role` with the cluster secret as the PSK, its
/// ephemeral key drawn from `entropy`.
fn handshake(
    role: Role,
    secret: &ClusterSecret,
    entropy: &mut dyn Entropy,
) -> Result<Box<HandshakeState>, LinkError> {
    let params = NOISE_PARAMS.parse().map_err(noise_failed)?;
    let resolver = LinkResolver::new(entropy);
    let builder = snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(PROLOGUE)
        .and_then(|builder| builder.psk(0, secret.as_key()))
        .map_err(noise_failed)?;
    let state = match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    };
    state.map(Box::new).map_err(noise_failed)
}

fn noise_failed(error: snow::Error) -> LinkError {
    LinkError::Failed(format!("the secure link failed: {error}"))
}

//! Fuzz input as a sequence of frames whose checksums the harness repairs.
//!
//! Random bytes almost never carry a right CRC-32C, so a state machine fed
//! them would only ever see checksum errors. The `target` and `source`
//! bodies therefore read their input as records of `[u16 length][frame]`
//! and give each frame a correct header (magic, version, reserved byte,
//! payload length and checksum) around the kind and payload the fuzzer
//! chose. The `wire` body fuzzes the header checks themselves.

use persist::migrate::wire::{HEADER_LEN, MAGIC, MAX_PAYLOAD_LEN, WIRE_VERSION};

/// How a state machine's run over one input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The input ran out first.
    OutOfInput,
    /// A frame was refused (an error, then an abort or a discard).
    Refused,
    /// The migration was aborted.
    Aborted,
    /// The migration completed: the domain runs on the target.
    Completed,
}

/// Splits `data` into records of a little-endian `u16` length and that
/// many bytes (the last one cut short by the end of the input).
pub fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    core::iter::from_fn(move || {
        let (length, rest) = data.split_first_chunk::<2>()?;
        let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
        let (record, rest) = rest.split_at(length);
        data = rest;
        Some(record)
    })
}

/// The frame `record` stands for: its first byte is the kind, the rest
/// (at most [`MAX_PAYLOAD_LEN`] bytes) the payload, under a header with a
/// right checksum.
pub fn repaired(record: &[u8]) -> Vec<u8> {
    let (kind, payload) = record.split_first().unwrap_or((&0, &[]));
    let payload = &payload[..payload.len().min(MAX_PAYLOAD_LEN)];
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    frame.push(*kind);
    frame.push(0);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut covered = frame.clone();
    covered.extend_from_slice(payload);
    frame.extend_from_slice(&persist::crc32c(&covered).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Appends the record [`repaired`] turns into `frame` (for seed corpora):
/// `prefix`, the kind and the payload, length-prefixed.
pub fn record_of(prefix: &[u8], frame: &[u8], out: &mut Vec<u8>) {
    let kind = frame.get(6).copied().unwrap_or(0);
    let payload = frame.get(HEADER_LEN..).unwrap_or(&[]);
    let mut record = prefix.to_vec();
    record.push(kind);
    record.extend_from_slice(payload);
    record.truncate(usize::from(u16::MAX));
    out.extend_from_slice(&(record.len() as u16).to_le_bytes());
    out.extend_from_slice(&record);
}

/// `input`'s records, each with `prefix` put before it (kernel-core's
/// `incoming` body reads a first byte of 1 as "a frame").
pub fn prefixed(prefix: u8, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records(input) {
        let mut with_prefix = vec![prefix];
        with_prefix.extend_from_slice(record);
        with_prefix.truncate(usize::from(u16::MAX));
        out.extend_from_slice(&(with_prefix.len() as u16).to_le_bytes());
        out.extend_from_slice(&with_prefix);
    }
    out
}

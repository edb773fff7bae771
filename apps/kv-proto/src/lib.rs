//! The message format between `kv` and its clients: one request, one response.
//!
//! Every message is one Amber message (at most 64 KiB). Integers are little-endian.
//!
//! ```text
//! request   = 'G' key_len:u32 key              get
//!           | 'P' key_len:u32 key value         put (value = the rest)
//!           | 'D' key_len:u32 key              delete
//! response  = 'V' value                         get: the value
//!           | 'N'                               get/delete: no such key
//!           | 'K'                               put/delete: done
//!           | 'E' text                          the request was malformed
//! ```
//!
//! Keys and values are arbitrary bytes. The format is plain Rust with no Amber
//! dependency, so its tests run on the host
//! (`cargo test -p kv-proto --target x86_64-unknown-linux-gnu`).

#![forbid(unsafe_code)]

use std::fmt;

/// The name the kv domain runs under; clients send to it.
pub const SERVICE_NAME: &str = "kv";

/// A request to kv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Read the value of `key`.
    Get { key: Vec<u8> },
    /// Set `key` to `value`, replacing any old value.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key`.
    Delete { key: Vec<u8> },
}

/// kv's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The value of the key asked for.
    Value(Vec<u8>),
    /// The key does not exist.
    NotFound,
    /// The put or delete is done.
    Done,
    /// The request could not be decoded; the text says why.
    Error(String),
}

/// Why bytes are not a valid request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The message is empty.
    Empty,
    /// The first byte is not a known tag.
    UnknownTag(u8),
    /// The message ends before the key does.
    Truncated,
    /// A get or delete carries bytes after its key.
    TrailingBytes,
    /// An error text is not UTF-8.
    InvalidText,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => formatter.write_str("empty message"),
            Self::UnknownTag(tag) => write!(formatter, "unknown tag byte {tag:#04x}"),
            Self::Truncated => formatter.write_str("message ends inside the key"),
            Self::TrailingBytes => formatter.write_str("unexpected bytes after the key"),
            Self::InvalidText => formatter.write_str("error text is not UTF-8"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl Request {
    /// The request as message bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, key, value): (u8, &[u8], &[u8]) = match self {
            Self::Get { key } => (b'G', key, &[]),
            Self::Put { key, value } => (b'P', key, value),
            Self::Delete { key } => (b'D', key, &[]),
        };
        let mut bytes = Vec::with_capacity(5 + key.len() + value.len());
        bytes.push(tag);
        // Keys are bounded by the 64 KiB message size, far below u32::MAX.
        bytes.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        bytes
    }

    /// The request in `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if !matches!(tag, b'G' | b'P' | b'D') {
            return Err(DecodeError::UnknownTag(tag));
        }
        let (length_bytes, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Truncated)?;
        let key_len = usize::try_from(u32::from_le_bytes(*length_bytes))
            .map_err(|_| DecodeError::Truncated)?;
        if rest.len() < key_len {
            return Err(DecodeError::Truncated);
        }
        let (key, value) = rest.split_at(key_len);
        let key = key.to_vec();
        match tag {
            b'P' => Ok(Self::Put {
                key,
                value: value.to_vec(),
            }),
            _ if !value.is_empty() => Err(DecodeError::TrailingBytes),
            b'G' => Ok(Self::Get { key }),
            _ => Ok(Self::Delete { key }),
        }
    }
}

impl Response {
    /// The response as message bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Value(value) => [b"V".as_slice(), value].concat(),
            Self::NotFound => b"N".to_vec(),
            Self::Done => b"K".to_vec(),
            Self::Error(text) => [b"E".as_slice(), text.as_bytes()].concat(),
        }
    }

    /// The response in `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        match tag {
            b'V' => Ok(Self::Value(rest.to_vec())),
            b'N' | b'K' if !rest.is_empty() => Err(DecodeError::TrailingBytes),
            b'N' => Ok(Self::NotFound),
            b'K' => Ok(Self::Done),
            b'E' => String::from_utf8(rest.to_vec())
                .map(Self::Error)
                .map_err(|_| DecodeError::InvalidText),
            other => Err(DecodeError::UnknownTag(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DecodeError, Request, Response};

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Get { key: b"a".to_vec() },
            Request::Put {
                key: b"greeting".to_vec(),
                value: b"hello".to_vec(),
            },
            Request::Put {
                key: Vec::new(),
                value: Vec::new(),
            },
            Request::Delete { key: vec![0, 255] },
        ];
        for request in requests {
            assert_eq!(Request::decode(&request.encode()), Ok(request));
        }
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            Response::Value(b"hello".to_vec()),
            Response::Value(Vec::new()),
            Response::NotFound,
            Response::Done,
            Response::Error("bad".to_owned()),
        ];
        for response in responses {
            assert_eq!(Response::decode(&response.encode()), Ok(response));
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(Request::decode(b""), Err(DecodeError::Empty));
        assert_eq!(Request::decode(b"X"), Err(DecodeError::UnknownTag(b'X')));
        assert_eq!(Request::decode(b"G\x05\0\0"), Err(DecodeError::Truncated));
        assert_eq!(
            Request::decode(b"G\x05\0\0\0ab"),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Request::decode(b"G\x01\0\0\0ab"),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(
            Request::decode(b"G\xff\xff\xff\xff"),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn malformed_responses_are_refused() {
        assert_eq!(Response::decode(b""), Err(DecodeError::Empty));
        assert_eq!(Response::decode(b"Kx"), Err(DecodeError::TrailingBytes));
        assert_eq!(Response::decode(b"E\xff"), Err(DecodeError::InvalidText));
        assert_eq!(Response::decode(b"?"), Err(DecodeError::UnknownTag(b'?')));
    }
}

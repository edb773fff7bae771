//! HTTP/1.1 requests parsed with bounds (httparse for the head), and replies.
//!
//! [`parse_request`] takes the bytes a connection has buffered and says
//! whether a whole request is there: the head (request line and headers)
//! through `httparse`, the body by `Content-Length` or chunked transfer
//! coding. Everything a client declares is checked against [`Limits`]
//! before it is buffered: a head that does not end within the limit, too
//! many headers, a body announced longer than the limit. A request with
//! both a length and a transfer coding is refused (RFC 9112 section 6.3
//! allows that, and it is how requests are smuggled past proxies).

use std::fmt;

/// What one request may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest head (request line and headers), in bytes.
    pub max_head_bytes: usize,
    /// The most headers.
    pub max_headers: usize,
    /// The longest body, in bytes (after chunked decoding).
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 1 << 20,
        }
    }
}

/// One request, its body whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ... as sent (methods are case-sensitive).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query after `?`, if any.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The headers in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Whether the connection stays open after the reply: HTTP/1.1 unless
    /// the client says `close`, HTTP/1.0 only if it says `keep-alive`.
    pub fn keeps_alive(&self) -> bool {
        let says = |token: &str| {
            self.header("connection").is_some_and(|value| {
                value
                    .split(|&byte| byte == b',')
                    .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        if self.minor_version >= 1 {
            !says("close")
        } else {
            says("keep-alive")
        }
    }
}

/// Why a request was refused; each is answered with its status, then the
/// connection closes (what follows cannot be framed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP, or a malformed length or chunk: 400.
    BadRequest(&'static str),
    /// The head is longer than the limit or has too many headers: 431.
    HeadTooLarge,
    /// The body is longer than the limit: 413.
    BodyTooLarge,
    /// A transfer coding other than chunked: 501.
    UnknownTransferCoding,
}

impl HttpError {
    /// The status the refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::HeadTooLarge => 431,
            Self::BodyTooLarge => 413,
            Self::UnknownTransferCoding => 501,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRequest(why) => write!(formatter, "bad request: {why}"),
            Self::HeadTooLarge => formatter.write_str("the request's head is too large"),
            Self::BodyTooLarge => formatter.write_str("the request's body is too large"),
            Self::UnknownTransferCoding => {
                formatter.write_str("only the chunked transfer coding is understood")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// The first whole request in `buffer` and the bytes it took, `None` while
/// it has not all arrived.
pub fn parse_request(
    buffer: &[u8],
    limits: &Limits,
) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_bytes = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() > limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::BadRequest("not an HTTP/1.x request")),
    };
    if head_bytes > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::BadRequest("an incomplete request line"));
    };
    let headers: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|header| (header.name.to_string(), header.value.to_vec()))
        .collect();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    };
    let mut request = Request {
        method: method.to_string(),
        path,
        query,
        minor_version,
        headers,
        body: Vec::new(),
    };
    let rest = &buffer[head_bytes..];
    let body = match framing(&request)? {
        Framing::Empty => Some((Vec::new(), 0)),
        Framing::Length(length) if length > limits.max_body_bytes => {
            return Err(HttpError::BodyTooLarge);
        }
        Framing::Length(length) => rest.get(..length).map(|body| (body.to_vec(), length)),
        Framing::Chunked => chunked(rest, limits)?,
    };
    Ok(body.map(|(body, used)| {
        request.body = body;
        (request, head_bytes + used)
    }))
}

/// How a request's body is delimited.
enum Framing {
    Empty,
    Length(usize),
    Chunked,
}

fn framing(request: &Request) -> Result<Framing, HttpError> {
    let mut lengths = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value);
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(value), None) => Some(parse_length(value)?),
        (Some(_), Some(_)) => return Err(HttpError::BadRequest("more than one Content-Length")),
    };
    match (request.header("transfer-encoding"), length) {
        (Some(_), Some(_)) => Err(HttpError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        )),
        (Some(coding), None) if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            Ok(Framing::Chunked)
        }
        (Some(_), None) => Err(HttpError::UnknownTransferCoding),
        (None, Some(length)) => Ok(Framing::Length(length)),
        (None, None) => Ok(Framing::Empty),
    }
}

/// A Content-Length: digits only, no sign, within usize.
fn parse_length(value: &[u8]) -> Result<usize, HttpError> {
    let bad = HttpError::BadRequest("a malformed Content-Length");
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(bad)
}

/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// A chunked body at the start of `rest`, decoded, and the bytes it took;
/// `None` while it has not all arrived.
fn chunked(rest: &[u8], limits: &Limits) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(&rest[at..], MAX_CHUNK_LINE_BYTES)? else {
            return Ok(None);
        };
        let line = &rest[at..at + line_end];
        let size_digits = line.split(|&byte| byte == b';').next().unwrap_or(line);
        let size = parse_chunk_size(size_digits.trim_ascii())?;
        at += line_end + 2;
        if size == 0 {
            // Trailer fields, then an empty line; they are read and dropped.
            loop {
                let Some(line_end) = find_crlf(&rest[at..], limits.max_head_bytes)? else {
                    return Ok(None);
                };
                at += line_end + 2;
                if line_end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len().saturating_add(size) > limits.max_body_bytes {
            return Err(HttpError::BodyTooLarge);
        }
        let Some(chunk) = rest.get(at..at + size) else {
            return Ok(None);
        };
        match rest.get(at + size..at + size + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(HttpError::BadRequest("a chunk not followed by CRLF")),
        }
        body.extend_from_slice(chunk);
        at += size + 2;
    }
}

/// Where the CRLF ending the line at the start of `bytes` is; `None` while
/// it has not arrived, an error once the line is longer than `max`.
fn find_crlf(bytes: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
    match bytes.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) if end <= max => Ok(Some(end)),
        Some(_) => Err(HttpError::BadRequest("a line too long in a chunked body")),
        None if bytes.len() > max + 1 => {
            Err(HttpError::BadRequest("a line too long in a chunked body"))
        }
        None => Ok(None),
    }
}

fn parse_chunk_size(digits: &[u8]) -> Result<usize, HttpError> {
    let bad = HttpError::BadRequest("a malformed chunk size");
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| usize::from_str_radix(text, 16).ok())
        .ok_or(bad)
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Headers besides the ones [`Response::encode`] writes itself
    /// (`Content-Length`, `Connection`).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A reply of `status` with `body` of `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    /// A reply with no body (204, or a refusal's own status).
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The same reply with one more header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the reply's wire form: the status line, the headers, then
    /// the body unless `head_only` (a reply to HEAD keeps its length).
    pub fn encode(&self, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
        let reason = reason_phrase(self.status);
        out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", self.status).as_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let has_body = !matches!(self.status, 100..=199 | 204 | 304);
        if has_body {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        let connection = if keep_alive { "keep-alive" } else { "close" };
        out.extend_from_slice(format!("Connection: {connection}\r\n\r\n").as_bytes());
        if has_body && !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The reason phrase of the statuses this server sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        507 => "Insufficient Storage",
        _ => "",
    }
}

#[cfg(test)]
mod tests;

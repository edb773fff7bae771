//! RESP2 on the wire: commands parsed with bounds, replies encoded.
//!
//! A client sends either a multibulk command (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`,
//! what every client library and `redis-cli` send) or an inline one (`GET
//! k\r\n`, what `redis-benchmark`'s inline tests and people at a telnet
//! prompt send). [`parse_command`] takes the bytes a connection has
//! buffered and says whether a whole command is there; everything a client
//! declares (argument counts, bulk lengths, inline lines) is checked against
//! [`Limits`] before a byte of it is buffered or allocated.

use std::fmt;

/// What one command may declare. The defaults are Redis's own where they
/// are small (64 KiB inline lines) and far below them where Redis trusts
/// memory it has (512 MiB bulk strings): a domain's memory is a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most arguments one command may have.
    pub max_arguments: usize,
    /// The longest argument, in bytes.
    pub max_bulk_bytes: usize,
    /// The longest inline command line, in bytes.
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_arguments: 64 * 1024,
            max_bulk_bytes: 4 << 20,
            max_inline_bytes: 64 * 1024,
        }
    }
}

/// A client broke the protocol. Redis answers with the error and closes
/// the connection: what follows cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*N` that is not a number or is over the limit.
    BadArgumentCount,
    /// An argument not introduced by `$`.
    ExpectedBulk { found: u8 },
    /// `$N` that is not a number or is over the limit.
    BadBulkLength,
    /// A bulk string not followed by CRLF.
    MissingCrlf,
    /// An inline line longer than the limit.
    InlineTooLong,
    /// An inline line with an unbalanced quote.
    UnbalancedQuotes,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadArgumentCount => formatter.write_str("invalid multibulk length"),
            Self::ExpectedBulk { found } => {
                write!(formatter, "expected '$', got '{}'", char::from(*found))
            }
            Self::BadBulkLength => formatter.write_str("invalid bulk length"),
            Self::MissingCrlf => formatter.write_str("bulk string not followed by CRLF"),
            Self::InlineTooLong => formatter.write_str("too big inline request"),
            Self::UnbalancedQuotes => formatter.write_str("unbalanced quotes in request"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// One command's arguments, the name first.
pub type Command = Vec<Vec<u8>>;

/// The first whole command in `buffer` and the bytes it took, `None` while
/// it has not all arrived. An empty inline line is skipped as Redis skips
/// it: it comes back as no arguments, with the bytes it took.
pub fn parse_command(
    buffer: &[u8],
    limits: &Limits,
) -> Result<Option<(Command, usize)>, ProtocolError> {
    match buffer.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buffer, limits),
        Some(_) => parse_inline(buffer, limits),
    }
}

/// The line at `buffer[start..]` up to CRLF, and where the next begins.
fn line(buffer: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = buffer.get(start..)?;
    let end = rest.windows(2).position(|pair| pair == b"\r\n")?;
    Some((&rest[..end], start + end + 2))
}

/// A decimal without sign, at most `max`: `None` for anything else.
fn bounded_number(digits: &[u8], max: usize) -> Option<usize> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: usize = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(usize::from(digit - b'0'))?;
    }
    (value <= max).then_some(value)
}

fn parse_multibulk(
    buffer: &[u8],
    limits: &Limits,
) -> Result<Option<(Command, usize)>, ProtocolError> {
    let Some((header, mut at)) = line(buffer, 1) else {
        return too_long_header(buffer).map(|()| None);
    };
    // `*-1` and `*0` are empty commands: Redis skips them.
    if header == b"-1" {
        return Ok(Some((Vec::new(), at)));
    }
    let count =
        bounded_number(header, limits.max_arguments).ok_or(ProtocolError::BadArgumentCount)?;
    // Every argument's header is checked before anything is kept, so a
    // command that has not all arrived costs no allocation.
    let mut spans = Vec::new();
    for _ in 0..count {
        let Some(&first) = buffer.get(at) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk { found: first });
        }
        let Some((length, body)) = line(buffer, at + 1) else {
            return too_long_header(&buffer[at..]).map(|()| None);
        };
        let length =
            bounded_number(length, limits.max_bulk_bytes).ok_or(ProtocolError::BadBulkLength)?;
        let end = body + length;
        if buffer.len() < end + 2 {
            return Ok(None);
        }
        if &buffer[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        spans.push(body..end);
        at = end + 2;
    }
    let command = spans
        .into_iter()
        .map(|span| buffer[span].to_vec())
        .collect();
    Ok(Some((command, at)))
}

/// A header line (`*N` or `$N`) still without its CRLF is refused once it
/// is longer than any valid one could be.
fn too_long_header(rest: &[u8]) -> Result<(), ProtocolError> {
    if rest.len() > 32 {
        Err(ProtocolError::BadBulkLength)
    } else {
        Ok(())
    }
}

fn parse_inline(buffer: &[u8], limits: &Limits) -> Result<Option<(Command, usize)>, ProtocolError> {
    let Some(newline) = buffer.iter().position(|&byte| byte == b'\n') else {
        if buffer.len() > limits.max_inline_bytes {
            return Err(ProtocolError::InlineTooLong);
        }
        return Ok(None);
    };
    if newline > limits.max_inline_bytes {
        return Err(ProtocolError::InlineTooLong);
    }
    let text = buffer[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&buffer[..newline]);
    let arguments = split_inline(text)?;
    if arguments.len() > limits.max_arguments {
        return Err(ProtocolError::BadArgumentCount);
    }
    Ok(Some((arguments, newline + 1)))
}

/// Splits an inline line on blanks, honouring "double" (with `\n`, `\r`,
/// `\t`, `\\`, `\"` and `\xHH` escapes) and 'single' quotes, as Redis's
/// `sdssplitargs` does.
fn split_inline(text: &[u8]) -> Result<Command, ProtocolError> {
    let mut arguments = Vec::new();
    let mut at = 0;
    loop {
        while text.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if at >= text.len() {
            return Ok(arguments);
        }
        let mut argument = Vec::new();
        match text[at] {
            b'"' => at = double_quoted(text, at + 1, &mut argument)?,
            b'\'' => at = single_quoted(text, at + 1, &mut argument)?,
            _ => {
                while let Some(&byte) = text.get(at).filter(|byte| !byte.is_ascii_whitespace()) {
                    argument.push(byte);
                    at += 1;
                }
            }
        }
        arguments.push(argument);
    }
}

/// After a closing quote there must be a blank or the end of the line.
fn after_quote(text: &[u8], at: usize) -> Result<usize, ProtocolError> {
    match text.get(at) {
        None => Ok(at),
        Some(byte) if byte.is_ascii_whitespace() => Ok(at),
        Some(_) => Err(ProtocolError::UnbalancedQuotes),
    }
}

fn double_quoted(text: &[u8], mut at: usize, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match text.get(at) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'"') => return after_quote(text, at + 1),
            Some(b'\\') => {
                let hex = text.get(at + 2..at + 4).and_then(|digits| {
                    let digits = std::str::from_utf8(digits).ok()?;
                    u8::from_str_radix(digits, 16).ok()
                });
                match (text.get(at + 1), hex) {
                    (Some(b'x'), Some(byte)) => {
                        out.push(byte);
                        at += 4;
                        continue;
                    }
                    (Some(&escaped), _) => out.push(match escaped {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    }),
                    (None, _) => return Err(ProtocolError::UnbalancedQuotes),
                }
                at += 2;
            }
            Some(&byte) => {
                out.push(byte);
                at += 1;
            }
        }
    }
}

fn single_quoted(text: &[u8], mut at: usize, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match text.get(at) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\'') => return after_quote(text, at + 1),
            Some(b'\\') if text.get(at + 1) == Some(&b'\'') => {
                out.push(b'\'');
                at += 2;
            }
            Some(&byte) => {
                out.push(byte);
                at += 1;
            }
        }
    }
}

/// One reply in RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`: a status without CR or LF.
    Status(&'static str),
    /// `-ERR ...`: the text starts with its kind (`ERR`, `WRONGTYPE`).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`, or `$-1` for nil.
    Bulk(Option<Vec<u8>>),
    /// `*N` and its elements, or `*-1` for nil.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Status("OK");

    /// An `-ERR` reply saying `text`.
    pub fn error(text: impl fmt::Display) -> Reply {
        Reply::Error(format!("ERR {text}"))
    }

    /// A bulk string.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(Some(bytes.into()))
    }

    /// An array of bulk strings.
    pub fn bulks<I: IntoIterator<Item = Vec<u8>>>(items: I) -> Reply {
        Reply::Array(Some(items.into_iter().map(Reply::bulk).collect()))
    }

    /// Appends the reply's wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Status(text) => {
                out.push(b'+');
                out.extend_from_slice(text.as_bytes());
            }
            Reply::Error(text) => {
                out.push(b'-');
                // A reply is one line: a CR or LF in an error (which may
                // quote a client's bytes) would end it early.
                out.extend(text.bytes().map(|byte| match byte {
                    b'\r' | b'\n' => b' ',
                    other => other,
                }));
            }
            Reply::Integer(value) => {
                out.push(b':');
                out.extend_from_slice(value.to_string().as_bytes());
            }
            Reply::Bulk(None) => out.extend_from_slice(b"$-1"),
            Reply::Bulk(Some(bytes)) => {
                out.push(b'$');
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(bytes);
            }
            Reply::Array(None) => out.extend_from_slice(b"*-1"),
            Reply::Array(Some(items)) => {
                out.push(b'*');
                out.extend_from_slice(items.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
                return;
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The reply's wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Command, usize)>, ProtocolError> {
        parse_command(bytes, &Limits::default())
    }

    fn args(list: &[&str]) -> Command {
        list.iter().map(|arg| arg.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_multibulk_command_parses_and_says_how_much_it_took() {
        let wire = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*1\r\n";
        let (command, used) = parse(wire).unwrap().unwrap();
        assert_eq!(command, args(&["SET", "k", "hello"]));
        assert_eq!(&wire[used..], b"*1\r\n");
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete_not_an_error() {
        let wire = b"*2\r\n$4\r\nECHO\r\n$10\r\n0123\r\n6789\r\n";
        for end in 0..wire.len() {
            assert_eq!(parse(&wire[..end]), Ok(None), "prefix of {end} bytes");
        }
        let (command, used) = parse(wire).unwrap().unwrap();
        assert_eq!(command, args(&["ECHO", "0123\r\n6789"]));
        assert_eq!(used, wire.len());
    }

    #[test]
    fn declared_sizes_over_the_limits_are_refused_before_they_arrive() {
        let limits = Limits {
            max_arguments: 4,
            max_bulk_bytes: 16,
            max_inline_bytes: 8,
        };
        let check = |wire: &[u8]| parse_command(wire, &limits);
        assert_eq!(check(b"*5\r\n"), Err(ProtocolError::BadArgumentCount));
        assert_eq!(
            check(b"*99999999999999999999999\r\n"),
            Err(ProtocolError::BadArgumentCount)
        );
        assert_eq!(check(b"*1\r\n$17\r\n"), Err(ProtocolError::BadBulkLength));
        assert_eq!(check(b"*1\r\n$-3\r\n"), Err(ProtocolError::BadBulkLength));
        assert_eq!(check(b"*x\r\n"), Err(ProtocolError::BadArgumentCount));
        assert_eq!(
            check(b"*1\r\n:3\r\n"),
            Err(ProtocolError::ExpectedBulk { found: b':' })
        );
        assert_eq!(
            check(b"*1\r\n$1\r\nab\r\n"),
            Err(ProtocolError::MissingCrlf)
        );
        assert_eq!(check(b"GET aaaaaaaa"), Err(ProtocolError::InlineTooLong));
        assert_eq!(check(&[b'*'; 40]), Err(ProtocolError::BadBulkLength));
    }

    #[test]
    fn inline_commands_split_on_blanks_and_honour_quotes() {
        let wire = b"SET  k \"a b\\x41\\n\" 'it\\'s'\r\nPING\n";
        let (command, used) = parse(wire).unwrap().unwrap();
        assert_eq!(
            command,
            vec![
                b"SET".to_vec(),
                b"k".to_vec(),
                b"a bA\n".to_vec(),
                b"it's".to_vec()
            ]
        );
        assert_eq!(&wire[used..], b"PING\n");
        assert_eq!(parse(b"PING\n").unwrap().unwrap().0, args(&["PING"]));
        assert_eq!(parse(b"\r\n").unwrap().unwrap(), (Vec::new(), 2));
        assert_eq!(parse(b"GET \"k\r\n"), Err(ProtocolError::UnbalancedQuotes));
        assert_eq!(
            parse(b"GET \"k\"x\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse(b"GET 'k''s'\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn replies_encode_as_resp2() {
        let reply = Reply::Array(Some(vec![
            Reply::OK,
            Reply::Integer(-7),
            Reply::bulk("ab"),
            Reply::Bulk(None),
            Reply::Array(None),
            Reply::error("bad\r\nthing"),
        ]));
        assert_eq!(
            reply.to_bytes(),
            b"*6\r\n+OK\r\n:-7\r\n$2\r\nab\r\n$-1\r\n*-1\r\n-ERR bad  thing\r\n".to_vec()
        );
    }
}

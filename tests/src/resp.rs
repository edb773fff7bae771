//! A small RESP2 client for tests that talk to the redis app themselves.
//!
//! Every read and write is bounded by the timeout given at connect, so a
//! server that stops answering (or a machine killed under it) shows as an
//! error, never as a hang. What the server sends is bounded before it is
//! buffered: a bulk string or an array past [`MAX_BULK_BYTES`] or
//! [`MAX_ARRAY_LENGTH`] is an [`io::ErrorKind::InvalidData`] error.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The longest bulk string a reply may carry.
pub const MAX_BULK_BYTES: usize = 1 << 20;

/// The most elements an array reply may have.
pub const MAX_ARRAY_LENGTH: usize = 1 << 16;

/// How deep arrays may nest in a reply.
const MAX_DEPTH: usize = 8;

/// The longest line (a simple string, an error, a length) a reply may have.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3 abc`, or `$-1` (none).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`, or `*-1` (none).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether this is `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(text) if text == "OK")
    }
}

/// A connection to a RESP2 server.
#[derive(Debug)]
pub struct RespClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl RespClient {
    /// Connects to `address`; the connect and every later read and write
    /// wait at most `timeout`.
    pub fn connect(address: SocketAddr, timeout: Duration) -> io::Result<RespClient> {
        let stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command (an array of bulk strings) without waiting for
    /// its reply: several sent in a row are a pipeline.
    pub fn send(&mut self, arguments: &[&[u8]]) -> io::Result<()> {
        self.writer.write_all(&encode(arguments))
    }

    /// Sends `commands` in one write, then reads their replies in order.
    pub fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> io::Result<Vec<Reply>> {
        let bytes: Vec<u8> = commands
            .iter()
            .flat_map(|arguments| encode(arguments))
            .collect();
        self.writer.write_all(&bytes)?;
        commands.iter().map(|_| self.read_reply()).collect()
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, arguments: &[&[u8]]) -> io::Result<Reply> {
        self.send(arguments)?;
        self.read_reply()
    }

    /// Reads the next reply. The end of the stream is an
    /// [`io::ErrorKind::UnexpectedEof`] error.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        self.read_reply_at(0)
    }

    /// A reply nested `depth` arrays deep.
    fn read_reply_at(&mut self, depth: usize) -> io::Result<Reply> {
        let line = self.read_line()?;
        let mut characters = line.chars();
        let kind = characters.next();
        let rest = characters.as_str();
        match kind {
            Some('+') => Ok(Reply::Simple(rest.to_string())),
            Some('-') => Ok(Reply::Error(rest.to_string())),
            Some(':') => rest
                .parse()
                .map(Reply::Integer)
                .map_err(|_| invalid(format!("an integer reply {rest:?}"))),
            Some('$') => {
                let Some(length) = length_of(rest, MAX_BULK_BYTES)? else {
                    return Ok(Reply::Bulk(None));
                };
                let mut bytes = vec![0; length + 2];
                self.reader.read_exact(&mut bytes)?;
                if !bytes.ends_with(b"\r\n") {
                    return Err(invalid("a bulk string not ended by CRLF".into()));
                }
                bytes.truncate(length);
                Ok(Reply::Bulk(Some(bytes)))
            }
            Some('*') => {
                if depth >= MAX_DEPTH {
                    return Err(invalid(format!("arrays nested past {MAX_DEPTH}")));
                }
                let Some(length) = length_of(rest, MAX_ARRAY_LENGTH)? else {
                    return Ok(Reply::Array(None));
                };
                let elements = (0..length)
                    .map(|_| self.read_reply_at(depth + 1))
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(Reply::Array(Some(elements)))
            }
            _ => Err(invalid(format!("a reply starting {line:?}"))),
        }
    }

    /// One CRLF-ended line, without its CRLF.
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        if !line.ends_with(b"\r\n") || line.len() < 3 {
            return Err(invalid(format!(
                "a reply line {:?} (cut short or too long)",
                String::from_utf8_lossy(&line)
            )));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| invalid("a reply line that is not UTF-8".into()))
    }
}

/// The length in a `$` or `*` line: none for -1, an error past `max`.
fn length_of(text: &str, max: usize) -> io::Result<Option<usize>> {
    if text == "-1" {
        return Ok(None);
    }
    match text.parse::<usize>() {
        Ok(length) if length <= max => Ok(Some(length)),
        _ => Err(invalid(format!("a length {text:?} (at most {max})"))),
    }
}

/// `arguments` as a RESP array of bulk strings.
pub fn encode(arguments: &[&[u8]]) -> Vec<u8> {
    let mut bytes = format!("*{}\r\n", arguments.len()).into_bytes();
    for argument in arguments {
        bytes.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        bytes.extend_from_slice(argument);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A server that sends `bytes` to its first client, then closes.
    fn server_sending(bytes: &'static [u8]) -> io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = stream.write_all(bytes);
            }
        });
        Ok(address)
    }

    #[test]
    fn replies_of_every_kind_parse_and_the_end_of_the_stream_is_an_eof() -> io::Result<()> {
        let address = server_sending(
            b"+OK\r\n-ERR no\r\n:-7\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\nx\r\n:1\r\n",
        )?;
        let mut client = RespClient::connect(address, Duration::from_secs(5))?;
        assert!(client.read_reply()?.is_ok());
        assert_eq!(client.read_reply()?, Reply::Error("ERR no".into()));
        assert_eq!(client.read_reply()?, Reply::Integer(-7));
        assert_eq!(client.read_reply()?, Reply::Bulk(Some(b"abc".to_vec())));
        assert_eq!(client.read_reply()?, Reply::Bulk(None));
        assert_eq!(
            client.read_reply()?,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Integer(1)
            ]))
        );
        let end = client.read_reply().map(drop);
        assert!(
            matches!(&end, Err(error) if error.kind() == io::ErrorKind::UnexpectedEof),
            "{end:?}"
        );
        Ok(())
    }

    #[test]
    fn a_server_that_lies_about_lengths_is_refused_before_buffering() -> io::Result<()> {
        for bytes in [
            &b"$99999999999\r\n"[..],
            b"*99999999\r\n",
            b"$-2\r\n",
            b"?what\r\n",
            b"$3\r\nabcde\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            let address = server_sending(bytes)?;
            let mut client = RespClient::connect(address, Duration::from_secs(5))?;
            let answer = client.read_reply();
            assert!(
                matches!(&answer, Err(error) if error.kind() == io::ErrorKind::InvalidData),
                "{:?}: {answer:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        Ok(())
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SET", b"k", b"v v"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv v\r\n"
        );
    }
}

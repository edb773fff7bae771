//! `TcpListener` on a declared port and `TcpStream`, std-style.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::{NetError, count_or_error};
use crate::sys;
use crate::time::duration_to_ns;

/// A socket number, as the host hands them out (shared with WASI's fds:
/// declared listeners are 3, 4, ... in declaration order, connections the
/// lowest free number above). What [`poll`](super::poll) entries name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Socket(pub(crate) u32);

impl Socket {
    /// The number itself.
    pub fn number(self) -> u32 {
        self.0
    }
}

/// A timeout for the ABI: `None` waits forever (`-1`), `Some(ZERO)` only
/// looks.
fn timeout_ns(timeout: Option<Duration>) -> i64 {
    timeout.map_or(-1, duration_to_ns)
}

/// A listener on one of the ports the domain's image declares.
///
/// The port belongs to the domain for its whole life, across restores, so
/// dropping a listener does not close it: binding the port again gives the
/// same socket.
#[derive(Debug)]
pub struct TcpListener {
    socket: Socket,
    port: u16,
}

impl TcpListener {
    /// The listener on `port`, which the image must declare
    /// ([`NetError::PortNotDeclared`] otherwise).
    pub fn bind(port: u16) -> Result<TcpListener, NetError> {
        let number = count_or_error(sys::tcp_listener(port))?;
        Ok(TcpListener {
            socket: Socket(number),
            port,
        })
    }

    /// The next client's connection, waiting for one as long as it takes
    /// (a safe point: the host may commit the domain meanwhile).
    pub fn accept(&self) -> Result<TcpStream, NetError> {
        self.accept_timeout(None)
    }

    /// The next client's connection, waiting at most `timeout` (`None`:
    /// forever; `Some(Duration::ZERO)`: only looks, [`NetError::Timeout`]
    /// when nobody waits).
    pub fn accept_timeout(&self, timeout: Option<Duration>) -> Result<TcpStream, NetError> {
        accept(self.socket, timeout_ns(timeout)).map(TcpStream::from_socket)
    }

    /// The clients' connections, one [`accept`](Self::accept) each, forever.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The port it listens on.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Its socket number, for [`poll`](super::poll).
    pub fn socket(&self) -> Socket {
        self.socket
    }
}

/// The iterator of [`TcpListener::incoming`]: never ends.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = Result<TcpStream, NetError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.listener.accept())
    }
}

/// A TCP connection, closed when dropped.
///
/// Reads and writes wait as long as their timeouts say (none by default: as
/// long as it takes); every wait is a safe point, where the host may commit
/// the domain. After a restore from such a commit the stream reads and
/// writes as [`NetError::ConnectionReset`].
#[derive(Debug)]
pub struct TcpStream {
    socket: Socket,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TcpStream {
    pub(crate) fn from_socket(socket: Socket) -> TcpStream {
        TcpStream {
            socket,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Connects to `address:port`, waiting as long as the host allows.
    pub fn connect(address: Ipv4Addr, port: u16) -> Result<TcpStream, NetError> {
        Self::connect_with(address, port, None)
    }

    /// Connects to `address:port`, waiting at most `timeout`.
    pub fn connect_timeout(
        address: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, NetError> {
        Self::connect_with(address, port, Some(timeout))
    }

    fn connect_with(
        address: Ipv4Addr,
        port: u16,
        timeout: Option<Duration>,
    ) -> Result<TcpStream, NetError> {
        let number = count_or_error(sys::tcp_connect(
            &address.octets(),
            port,
            timeout_ns(timeout),
        ))?;
        Ok(TcpStream::from_socket(Socket(number)))
    }

    /// How long a read waits (`None`: as long as it takes; `Some(ZERO)`:
    /// only looks). A read that times out is [`NetError::Timeout`]
    /// (`io::ErrorKind::TimedOut`).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// How long a write waits for room, as [`set_read_timeout`](Self::set_read_timeout).
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.write_timeout = timeout;
    }

    /// How long a read waits.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// How long a write waits.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// Reads into `buffer`: how many bytes, 0 when the peer ended the
    /// stream (or `buffer` is empty).
    pub fn read_bytes(&self, buffer: &mut [u8]) -> Result<usize, NetError> {
        read(self.socket, buffer, timeout_ns(self.read_timeout))
    }

    /// Writes some of `bytes` (at least one, unless `bytes` is empty): how
    /// many the host took.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<usize, NetError> {
        write(self.socket, bytes, timeout_ns(self.write_timeout))
    }

    /// Writes no more: the peer reads the end of the stream once what was
    /// written is delivered. Reading goes on.
    pub fn shutdown(&self) -> Result<(), NetError> {
        status(sys::tcp_shutdown(self.socket.0))
    }

    /// Its socket number, for [`poll`](super::poll).
    pub fn socket(&self) -> Socket {
        self.socket
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // A socket already reset or closed by the host has nothing left to free.
        let _ = close(self.socket);
    }
}

impl io::Read for TcpStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        Ok(self.read_bytes(buffer)?)
    }
}

impl io::Read for &TcpStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        Ok(self.read_bytes(buffer)?)
    }
}

impl io::Write for TcpStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Ok(self.write_bytes(bytes)?)
    }

    /// Nothing to do: the host sends what a write took without being asked.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for &TcpStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        Ok(self.write_bytes(bytes)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The ABI takes lengths as `i32`; a longer slice is passed in part (a
/// short read or write, which both allow).
fn abi_len(len: usize) -> usize {
    len.min(i32::MAX as usize)
}

/// `tcp_read` on a connection's socket.
pub(crate) fn read(socket: Socket, buffer: &mut [u8], timeout_ns: i64) -> Result<usize, NetError> {
    if buffer.is_empty() {
        return Ok(0);
    }
    let capacity = abi_len(buffer.len());
    let result = sys::tcp_read(socket.0, &mut buffer[..capacity], timeout_ns);
    within(count_or_error(result)?, capacity)
}

/// `tcp_write` on a connection's socket.
pub(crate) fn write(socket: Socket, bytes: &[u8], timeout_ns: i64) -> Result<usize, NetError> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let len_bytes = abi_len(bytes.len());
    let result = sys::tcp_write(socket.0, &bytes[..len_bytes], timeout_ns);
    match within(count_or_error(result)?, len_bytes)? {
        // "At least one byte": taking none breaks the ABI, and a caller
        // looping until all is written would spin.
        0 => Err(NetError::Unexpected(0)),
        taken => Ok(taken),
    }
}

/// `tcp_accept` on a listener's socket.
pub(crate) fn accept(listener: Socket, timeout_ns: i64) -> Result<Socket, NetError> {
    count_or_error(sys::tcp_accept(listener.0, timeout_ns)).map(Socket)
}

/// `tcp_close`.
pub(crate) fn close(socket: Socket) -> Result<(), NetError> {
    status(sys::tcp_close(socket.0))
}

/// A count the host returned, refused if past what it was given room for
/// (the caller would slice out of bounds).
fn within(count: u32, limit: usize) -> Result<usize, NetError> {
    match usize::try_from(count) {
        Ok(count) if count <= limit => Ok(count),
        _ => Err(NetError::Unexpected(
            i32::try_from(count).unwrap_or(i32::MAX),
        )),
    }
}

fn status(code: i32) -> Result<(), NetError> {
    if code == abi::StatusCode::Ok.code() {
        Ok(())
    } else {
        Err(NetError::from_code(code))
    }
}

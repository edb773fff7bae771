//! [`StdNetwork`]: the vm's [`Network`] over the host's sockets on 127.0.0.1.
//!
//! The host runner's network. Every socket is nonblocking and on the
//! loopback interface only: listeners bind 127.0.0.1 (never 0.0.0.0), and a
//! domain may connect to 127.0.0.1 alone, so a domain run on a developer's
//! machine serves that machine and reaches no other host. A [`PortMap`]
//! says which host port stands for each domain port (the same by default).
//!
//! Readiness without an event loop: a read is ready when a one-byte `peek`
//! finds data, the end of the stream or an error; a write is ready while
//! the connection's own send queue (at most `abi::SOCKET_BUFFER_BYTES`,
//! filled when the kernel's socket buffer is full) has room. Every call
//! first pushes what it can of that queue into the socket, and a closed
//! connection lingers, still counted against its domain, until its queue
//! is sent or [`LINGER`] has passed, so a reply written just before close
//! is not lost.
//!
//! A runner with nothing to run waits in [`StdNetwork::wait`]: `poll(2)` on
//! the sockets a readiness question last found not ready (the ones blocked
//! domains wait for) and on those with bytes still queued, so a client's
//! request wakes the runner at once instead of at its next timer.
//!
//! A read goes through a buffer of the runner's own, never straight from
//! the socket into the caller's bytes: those are the domain's linear
//! memory, which the host runner keeps read-only between commits to learn
//! which pages are written (vm-host's `ProtectedBacking`). The kernel does
//! not raise a fault on a page a system call writes; `recv` into such a
//! page fails with `EFAULT`, and the copy after it is what marks the page.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi::DomainId;
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::net::{ConnectionId, NetError, Network, Readiness};

/// How long a closed connection may keep unsent bytes before it is dropped.
pub const LINGER: Duration = Duration::from_secs(5);

/// How long a connect to 127.0.0.1 may take (a loopback connect completes
/// or is refused at once; this only bounds a stuck host).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Which host port stands for each domain port: an explicit entry, else the
/// domain port plus an offset (0 by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMap {
    offset: u16,
    explicit: BTreeMap<u16, u16>,
}

impl PortMap {
    /// Every domain port at the same host port.
    pub fn identity() -> Self {
        Self::default()
    }

    /// Domain port P at host port P + `offset` (ports past 65535 unmapped).
    pub fn with_offset(offset: u16) -> Self {
        Self {
            offset,
            explicit: BTreeMap::new(),
        }
    }

    /// Domain port `domain_port` at host port `host_port`, whatever the offset.
    pub fn forward(&mut self, host_port: u16, domain_port: u16) {
        self.explicit.insert(domain_port, host_port);
    }

    /// The host port for `domain_port`, or None when it falls past 65535.
    /// Port 0 stays 0 (the OS picks), which is what tests use.
    pub fn host_port(&self, domain_port: u16) -> Option<u16> {
        match self.explicit.get(&domain_port) {
            Some(&host_port) => Some(host_port),
            None if domain_port == 0 => Some(0),
            None => domain_port.checked_add(self.offset),
        }
    }
}

/// A port a domain listens on.
#[derive(Debug)]
struct Listener {
    domain: DomainId,
    socket: TcpListener,
    host_port: u16,
    /// One client taken from the OS backlog to answer
    /// [`Network::listener_has_client`]; the rest stay in the backlog.
    waiting: Option<TcpStream>,
}

/// Whether a connection is still the domain's or is only finishing its send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionState {
    Open,
    /// Closed by the domain; dropped once its queue is sent or at the instant.
    Lingering {
        until: Instant,
    },
}

#[derive(Debug)]
struct Connection {
    domain: DomainId,
    stream: TcpStream,
    /// Bytes the domain wrote that the socket had no room for yet.
    send_queue: Vec<u8>,
    /// The domain shut its writing side: shut the socket once the queue is sent.
    is_shutdown_requested: bool,
    /// The socket failed (reset, broken pipe): every later call says so.
    is_reset: bool,
    state: ConnectionState,
}

impl Connection {
    fn new(domain: DomainId, stream: TcpStream) -> Self {
        Self {
            domain,
            stream,
            send_queue: Vec::new(),
            is_shutdown_requested: false,
            is_reset: false,
            state: ConnectionState::Open,
        }
    }

    /// Pushes what the socket takes of the send queue, then shuts the
    /// writing side if that was asked and the queue is empty.
    fn flush(&mut self) {
        while !self.send_queue.is_empty() && !self.is_reset {
            match self.stream.write(&self.send_queue) {
                Ok(0) => self.is_reset = true,
                Ok(written) => {
                    self.send_queue.drain(..written);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.is_reset = true,
            }
        }
        if self.is_shutdown_requested && self.send_queue.is_empty() && !self.is_reset {
            // Asking twice is harmless; an error means the peer is gone.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    fn is_done_lingering(&self, now: Instant) -> bool {
        match self.state {
            ConnectionState::Open => false,
            ConnectionState::Lingering { until } => {
                self.send_queue.is_empty() || self.is_reset || now >= until
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// By domain port.
    listeners: BTreeMap<u16, Listener>,
    connections: BTreeMap<ConnectionId, Connection>,
    next_connection: ConnectionId,
    /// What a read takes from a socket before it is copied to the domain
    /// (see the module doc); grown to the largest read asked for, at most
    /// `abi::SOCKET_BUFFER_BYTES`.
    bounce: Vec<u8>,
    /// Listeners (by domain port) and connections that a readiness question
    /// found with nothing to read since the last [`StdNetwork::wait`].
    watched_listeners: BTreeSet<u16>,
    watched_connections: BTreeSet<ConnectionId>,
    /// How many of `connections` are closed and lingering.
    lingering: usize,
}

impl State {
    /// Sends what lingering connections still queue and drops those done.
    /// Every call asks it first, so it costs nothing while none linger.
    fn tidy(&mut self) {
        if self.lingering == 0 {
            return;
        }
        let now = Instant::now();
        self.connections.retain(|_, connection| {
            if connection.state == ConnectionState::Open {
                return true;
            }
            connection.flush();
            !connection.is_done_lingering(now)
        });
        self.count_lingering();
    }

    fn count_lingering(&mut self) {
        self.lingering = self
            .connections
            .values()
            .filter(|connection| connection.state != ConnectionState::Open)
            .count();
    }

    fn connections_of(&self, domain: DomainId) -> usize {
        self.connections
            .values()
            .filter(|connection| connection.domain == domain)
            .count()
    }

    fn has_room(&self, domain: DomainId) -> bool {
        self.connections_of(domain) < abi::MAX_CONNECTIONS_PER_DOMAIN
    }

    fn add(&mut self, domain: DomainId, stream: TcpStream) -> Result<ConnectionId, NetError> {
        stream.set_nonblocking(true).map_err(|_| NetError::Reset)?;
        // Small requests and replies (redis): no Nagle delay.
        let _ = stream.set_nodelay(true);
        self.next_connection = self.next_connection.wrapping_add(1);
        let id = self.next_connection;
        self.connections.insert(id, Connection::new(domain, stream));
        Ok(id)
    }

    fn open_connection(&mut self, connection: ConnectionId) -> Option<&mut Connection> {
        self.connections
            .get_mut(&connection)
            .filter(|connection| connection.state == ConnectionState::Open)
    }

    /// Takes one client off `port`'s backlog into its waiting slot, if the
    /// slot is empty and the domain has room for the connection.
    fn fill_waiting(&mut self, domain: DomainId, port: u16) {
        let has_room = self.has_room(domain);
        let Some(listener) = self.listeners.get_mut(&port) else {
            return;
        };
        if listener.domain != domain || listener.waiting.is_some() || !has_room {
            return;
        }
        if let Ok((stream, _)) = listener.socket.accept() {
            listener.waiting = Some(stream);
        }
    }
}

/// The host's TCP on 127.0.0.1 for every domain of a runner (see the
/// module doc). Interior mutability: one lock over all sockets, held only
/// for the nonblocking call.
#[derive(Debug, Default)]
pub struct StdNetwork {
    ports: PortMap,
    state: Mutex<State>,
}

impl StdNetwork {
    /// A network whose domain ports are the host ports `ports` says.
    pub fn new(ports: PortMap) -> Self {
        Self {
            ports,
            state: Mutex::new(State::default()),
        }
    }

    /// The host port a domain port is (or would be) reached at.
    pub fn host_port(&self, domain_port: u16) -> Option<u16> {
        self.ports.host_port(domain_port)
    }

    /// The host port `domain` actually listens on for `domain_port` (the
    /// port the OS chose when the map says 0), if it listens.
    pub fn bound_port(&self, domain: DomainId, domain_port: u16) -> Option<u16> {
        let state = self.lock();
        let listener = state.listeners.get(&domain_port)?;
        (listener.domain == domain).then_some(listener.host_port)
    }

    /// The connections `domain` holds (lingering ones included).
    pub fn connection_count(&self, domain: DomainId) -> usize {
        self.lock().connections_of(domain)
    }

    /// Waits up to `timeout` for something a domain waits for: a client on
    /// a listener or bytes on a connection that a readiness question last
    /// found idle, or room for a connection's queued bytes. Returns at once
    /// when one is ready, and after `timeout` when nothing is watched.
    pub fn wait(&self, timeout: Duration) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let listeners = core::mem::take(&mut state.watched_listeners);
        let connections = core::mem::take(&mut state.watched_connections);
        let mut fds = Vec::new();
        for port in &listeners {
            if let Some(listener) = state.listeners.get(port)
                && listener.waiting.is_none()
            {
                fds.push(PollFd::new(&listener.socket, PollFlags::IN));
            }
        }
        for (id, connection) in &state.connections {
            if connection.is_reset {
                continue;
            }
            let mut flags = PollFlags::empty();
            if connection.state == ConnectionState::Open && connections.contains(id) {
                flags |= PollFlags::IN;
            }
            if !connection.send_queue.is_empty() {
                flags |= PollFlags::OUT;
            }
            if !flags.is_empty() {
                fds.push(PollFd::new(&connection.stream, flags));
            }
        }
        if fds.is_empty() {
            drop(guard);
            std::thread::sleep(timeout);
            return;
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        // An interrupted or failed poll only ends the wait early: the
        // runner's loop asks every socket again either way. The lock is held
        // meanwhile; the runner's one thread is the only caller.
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still
        // consistent enough to go on with (each call mutates one entry).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// [`StdNetwork::read`] with the lock held, through `bounce`.
fn read_into(
    state: &mut State,
    connection: ConnectionId,
    buffer: &mut [u8],
    bounce: &mut Vec<u8>,
) -> Result<usize, NetError> {
    let connection = state.open_connection(connection).ok_or(NetError::Closed)?;
    connection.flush();
    if connection.is_reset {
        return Err(NetError::Reset);
    }
    let len_bytes = buffer.len().min(abi::SOCKET_BUFFER_BYTES);
    if len_bytes == 0 {
        return Ok(0);
    }
    if bounce.len() < len_bytes {
        bounce.resize(len_bytes, 0);
    }
    loop {
        return match connection.stream.read(&mut bounce[..len_bytes]) {
            Ok(read) => {
                buffer[..read].copy_from_slice(&bounce[..read]);
                Ok(read)
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => Err(NetError::WouldBlock),
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                connection.is_reset = true;
                Err(NetError::Reset)
            }
        };
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

impl Network for StdNetwork {
    fn listen(&self, domain: DomainId, port: u16) -> Result<(), NetError> {
        let mut state = self.lock();
        if let Some(listener) = state.listeners.get(&port) {
            return if listener.domain == domain {
                Ok(())
            } else {
                Err(NetError::PortTaken)
            };
        }
        let held = state
            .listeners
            .values()
            .filter(|listener| listener.domain == domain)
            .count();
        if held >= abi::MAX_LISTEN_PORTS {
            return Err(NetError::LimitReached);
        }
        let host_port = self.ports.host_port(port).ok_or(NetError::Refused)?;
        let socket =
            TcpListener::bind(loopback(host_port)).map_err(|error| match error.kind() {
                ErrorKind::AddrInUse | ErrorKind::PermissionDenied => NetError::PortTaken,
                _ => NetError::Refused,
            })?;
        socket
            .set_nonblocking(true)
            .map_err(|_| NetError::Refused)?;
        let host_port = socket
            .local_addr()
            .map(|address| address.port())
            .unwrap_or(host_port);
        state.listeners.insert(
            port,
            Listener {
                domain,
                socket,
                host_port,
                waiting: None,
            },
        );
        Ok(())
    }

    fn unlisten(&self, domain: DomainId, port: u16) {
        let mut state = self.lock();
        if state
            .listeners
            .get(&port)
            .is_some_and(|listener| listener.domain == domain)
        {
            state.listeners.remove(&port);
        }
    }

    fn accept(&self, domain: DomainId, port: u16) -> Result<ConnectionId, NetError> {
        let mut state = self.lock();
        state.tidy();
        match state.listeners.get(&port) {
            Some(listener) if listener.domain == domain => {}
            _ => return Err(NetError::NotListening),
        }
        if !state.has_room(domain) {
            return Err(NetError::LimitReached);
        }
        state.fill_waiting(domain, port);
        let stream = state
            .listeners
            .get_mut(&port)
            .and_then(|listener| listener.waiting.take())
            .ok_or(NetError::WouldBlock)?;
        state.add(domain, stream)
    }

    fn listener_has_client(&self, domain: DomainId, port: u16) -> bool {
        let mut state = self.lock();
        state.tidy();
        state.fill_waiting(domain, port);
        let has_client = state
            .listeners
            .get(&port)
            .is_some_and(|listener| listener.domain == domain && listener.waiting.is_some());
        // At its cap the domain waits for a connection to end, not for the
        // backlog: watching the listener then would wake the runner for
        // clients it cannot take.
        if !has_client && state.has_room(domain) {
            state.watched_listeners.insert(port);
        }
        has_client
    }

    fn connect(
        &self,
        domain: DomainId,
        address: [u8; 4],
        port: u16,
    ) -> Result<ConnectionId, NetError> {
        // The host runner reaches this machine only.
        if Ipv4Addr::from(address) != Ipv4Addr::LOCALHOST || port == 0 {
            return Err(NetError::Refused);
        }
        let mut state = self.lock();
        state.tidy();
        if !state.has_room(domain) {
            return Err(NetError::LimitReached);
        }
        // A port a domain here listens on is reached where it listens;
        // any other at the same port on the host.
        let host_port = state
            .listeners
            .get(&port)
            .map_or(port, |listener| listener.host_port);
        let stream = TcpStream::connect_timeout(&loopback(host_port), CONNECT_TIMEOUT)
            .map_err(|_| NetError::Refused)?;
        state.add(domain, stream)
    }

    fn read(&self, connection: ConnectionId, buffer: &mut [u8]) -> Result<usize, NetError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut bounce = core::mem::take(&mut state.bounce);
        let read = read_into(state, connection, buffer, &mut bounce);
        state.bounce = bounce;
        read
    }

    fn write(&self, connection: ConnectionId, bytes: &[u8]) -> Result<usize, NetError> {
        let mut state = self.lock();
        let connection = state.open_connection(connection).ok_or(NetError::Closed)?;
        if connection.is_shutdown_requested {
            return Err(NetError::Closed);
        }
        connection.flush();
        if connection.is_reset {
            return Err(NetError::Reset);
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        if connection.send_queue.is_empty() {
            loop {
                match connection.stream.write(bytes) {
                    Ok(0) => {}
                    Ok(written) => return Ok(written),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                    Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        connection.is_reset = true;
                        return Err(NetError::Reset);
                    }
                }
                break;
            }
        }
        let room = abi::SOCKET_BUFFER_BYTES.saturating_sub(connection.send_queue.len());
        if room == 0 {
            return Err(NetError::WouldBlock);
        }
        let queued = room.min(bytes.len());
        connection.send_queue.extend_from_slice(&bytes[..queued]);
        Ok(queued)
    }

    fn shutdown(&self, connection: ConnectionId) {
        let mut state = self.lock();
        if let Some(connection) = state.open_connection(connection) {
            connection.is_shutdown_requested = true;
            connection.flush();
        }
    }

    fn close(&self, connection: ConnectionId) {
        let mut state = self.lock();
        if let Some(open) = state.open_connection(connection) {
            open.flush();
            open.state = ConnectionState::Lingering {
                until: Instant::now() + LINGER,
            };
            // The peer reads the end of the stream once the queue is sent.
            open.is_shutdown_requested = true;
            open.flush();
            state.lingering += 1;
        }
        state.tidy();
    }

    fn connection_readiness(&self, id: ConnectionId) -> Readiness {
        let mut state = self.lock();
        state.tidy();
        let Some(connection) = state.open_connection(id) else {
            return Readiness {
                hangup: true,
                ..Readiness::default()
            };
        };
        connection.flush();
        if connection.is_reset {
            return Readiness {
                readable: true,
                writable: true,
                hangup: true,
            };
        }
        let mut byte = [0_u8; 1];
        let (readable, hangup) = match connection.stream.peek(&mut byte) {
            Ok(0) => (true, true),
            Ok(_) => (true, false),
            Err(error)
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) =>
            {
                (false, false)
            }
            Err(_) => {
                connection.is_reset = true;
                (true, true)
            }
        };
        let writable = connection.is_reset
            || (!connection.is_shutdown_requested
                && connection.send_queue.len() < abi::SOCKET_BUFFER_BYTES);
        if !readable {
            state.watched_connections.insert(id);
        }
        Readiness {
            readable,
            writable,
            hangup,
        }
    }

    fn forget_domain(&self, domain: DomainId) {
        let mut state = self.lock();
        state
            .listeners
            .retain(|_, listener| listener.domain != domain);
        state.connections.retain(|_, connection| {
            if connection.domain == domain {
                let _ = connection.stream.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
        state.count_lingering();
    }
}

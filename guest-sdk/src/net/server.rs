//! `serve`: one thread serving many clients of a listener, over `poll`.
//!
//! The loop keeps, per connection, the app's session and the bytes waiting
//! to be sent; it reads only from clients whose replies are not piling up
//! (a client that does not read cannot make the domain buffer without
//! bound), closes connections idle too long, and never waits anywhere but
//! in `poll`: every read, write and accept it makes is nonblocking. The
//! loop is written against [`Backend`], so its logic is tested on the host
//! with a fake network (server/tests.rs).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use abi::{MAX_CONNECTIONS_PER_DOMAIN, MAX_POLL_ENTRIES, SOCKET_BUFFER_BYTES};

use super::{Interest, NetError, PollEntry, Ready, Socket, TcpListener, poll, tcp};
use crate::time::duration_to_ns;

/// Whether a connection goes on after the bytes a [`Service`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep it open for more.
    KeepOpen,
    /// Send what was produced, then close it.
    Close,
}

/// An app's protocol, as [`serve`] drives it.
pub trait Service {
    /// What the app keeps per connection (e.g. the bytes of a request not
    /// yet complete).
    type Session;

    /// A client connected.
    fn open(&mut self) -> Self::Session;

    /// The client sent `bytes`: append the reply bytes to `out`.
    fn receive(&mut self, session: &mut Self::Session, bytes: &[u8], out: &mut Vec<u8>) -> Flow;

    /// Called about every [`ServerLimits::tick_interval`] with the domain's
    /// clock, e.g. to expire keys nobody reads. Does nothing by default.
    fn tick(&mut self, now_ns: u64) {
        let _ = now_ns;
    }
}

/// What [`serve`] allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// The most clients served at once; the others wait in the listener's
    /// backlog. At most `MAX_CONNECTIONS_PER_DOMAIN`, which the host
    /// enforces anyway.
    pub max_connections: usize,
    /// A client is not read from while this many reply bytes wait for it.
    pub max_pending_output_bytes: usize,
    /// How much one read takes.
    pub read_chunk_bytes: usize,
    /// How often [`Service::tick`] runs and idle connections are looked for.
    pub tick_interval: Duration,
    /// A connection that neither sends nor takes a byte for this long is
    /// closed, so idle clients cannot hold every connection.
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: MAX_CONNECTIONS_PER_DOMAIN,
            max_pending_output_bytes: 1 << 20,
            read_chunk_bytes: SOCKET_BUFFER_BYTES,
            tick_interval: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The network calls the loop makes, all nonblocking but `poll`: the
/// host's in a domain, a fake one in the tests.
pub(crate) trait Backend {
    fn now_ns(&mut self) -> u64;
    fn poll(&mut self, entries: &mut [PollEntry], timeout: Duration) -> Result<usize, NetError>;
    /// A waiting client, or [`NetError::Timeout`] when none waits.
    fn accept(&mut self, listener: Socket) -> Result<Socket, NetError>;
    fn read(&mut self, socket: Socket, buffer: &mut [u8]) -> Result<usize, NetError>;
    fn write(&mut self, socket: Socket, bytes: &[u8]) -> Result<usize, NetError>;
    /// Ends the stream after what was written, and frees the socket.
    fn close(&mut self, socket: Socket);
}

/// The host's network, through the `amber` imports.
#[derive(Debug)]
struct Host;

impl Backend for Host {
    fn now_ns(&mut self) -> u64 {
        crate::now_ns()
    }

    fn poll(&mut self, entries: &mut [PollEntry], timeout: Duration) -> Result<usize, NetError> {
        poll(entries, Some(timeout))
    }

    fn accept(&mut self, listener: Socket) -> Result<Socket, NetError> {
        tcp::accept(listener, 0)
    }

    fn read(&mut self, socket: Socket, buffer: &mut [u8]) -> Result<usize, NetError> {
        tcp::read(socket, buffer, 0)
    }

    fn write(&mut self, socket: Socket, bytes: &[u8]) -> Result<usize, NetError> {
        tcp::write(socket, bytes, 0)
    }

    fn close(&mut self, socket: Socket) {
        // A reset connection has nothing to shut down or free: both fail
        // harmlessly.
        let _ = crate::sys::tcp_shutdown(socket.number());
        let _ = tcp::close(socket);
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading requests and sending replies.
    Open,
    /// The client ended its stream or the service said [`Flow::Close`]:
    /// sending what is left, then closing.
    Finishing,
}

#[derive(Debug)]
struct Connection<T> {
    session: T,
    state: State,
    /// Reply bytes not yet taken by the host.
    out: Vec<u8>,
    last_active_ns: u64,
}

/// The loop of [`serve`], with its connections; [`Server::run`] runs it.
pub struct Server<S: Service> {
    listener: Socket,
    limits: ServerLimits,
    connections: BTreeMap<Socket, Connection<S::Session>>,
    entries: Vec<PollEntry>,
    chunk: Vec<u8>,
    last_tick_ns: u64,
}

impl<S: Service> std::fmt::Debug for Server<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .field("connection_count", &self.connections.len())
            .finish_non_exhaustive()
    }
}

/// Serves `listener`'s clients with `service`, forever (until a call on
/// the listener itself fails). Errors on one connection close that
/// connection only.
pub fn serve<S: Service>(
    listener: &TcpListener,
    service: &mut S,
    limits: ServerLimits,
) -> Result<Infallible, NetError> {
    Server::new(listener, limits).run(service)
}

impl<S: Service> Server<S> {
    /// A loop over `listener` within `limits` (connections past
    /// `MAX_CONNECTIONS_PER_DOMAIN` are not asked for, and a chunk is at
    /// least one byte).
    pub fn new(listener: &TcpListener, limits: ServerLimits) -> Server<S> {
        Server::with_socket(listener.socket(), limits)
    }

    pub(crate) fn with_socket(listener: Socket, limits: ServerLimits) -> Server<S> {
        let limits = ServerLimits {
            max_connections: limits
                .max_connections
                .min(MAX_CONNECTIONS_PER_DOMAIN)
                .min(MAX_POLL_ENTRIES - 1),
            read_chunk_bytes: limits.read_chunk_bytes.max(1),
            ..limits
        };
        Server {
            listener,
            limits,
            connections: BTreeMap::new(),
            entries: Vec::new(),
            chunk: vec![0; limits.read_chunk_bytes],
            last_tick_ns: 0,
        }
    }

    /// How many clients are connected.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Serves forever; returns only the error of a call on the listener
    /// (or of `poll` itself).
    pub fn run(&mut self, service: &mut S) -> Result<Infallible, NetError> {
        loop {
            self.step(&mut Host, service)?;
        }
    }

    /// One round: poll, then accept, read and write what is ready.
    pub(crate) fn step(
        &mut self,
        backend: &mut impl Backend,
        service: &mut S,
    ) -> Result<(), NetError> {
        let mut entries = std::mem::take(&mut self.entries);
        entries.clear();
        if self.connections.len() < self.limits.max_connections {
            entries.push(PollEntry::new(self.listener, Interest::READABLE));
        }
        for (socket, connection) in &self.connections {
            entries.push(PollEntry::new(*socket, self.interest(connection)));
        }
        let polled = backend.poll(&mut entries, self.limits.tick_interval);
        if polled.is_ok() {
            for entry in &entries {
                if entry.ready.is_empty() {
                    continue;
                }
                if entry.socket == self.listener {
                    self.accept_clients(backend, service)?;
                } else {
                    self.serve_connection(entry.socket, entry.ready, backend, service);
                }
            }
        }
        self.entries = entries;
        match polled {
            // The host knows none of some connection: one of the commit's
            // that it should report as reset (README "Network"), but a
            // server that ended over it would serve nobody. Drop them all
            // (their clients reconnect); if the listener itself is the
            // unknown socket, the next poll, without connections, says so.
            Err(NetError::NoSuchSocket) if !self.connections.is_empty() => {
                for socket in std::mem::take(&mut self.connections).into_keys() {
                    backend.close(socket);
                }
            }
            polled => {
                polled?;
            }
        }
        let now_ns = backend.now_ns();
        if now_ns.saturating_sub(self.last_tick_ns) >= duration_ns(self.limits.tick_interval) {
            self.last_tick_ns = now_ns;
            service.tick(now_ns);
            self.close_idle(now_ns, backend);
        }
        Ok(())
    }

    fn interest(&self, connection: &Connection<S::Session>) -> Interest {
        let mut interest = Interest::NONE;
        if connection.state == State::Open
            && connection.out.len() < self.limits.max_pending_output_bytes
        {
            interest = interest | Interest::READABLE;
        }
        if !connection.out.is_empty() {
            interest = interest | Interest::WRITABLE;
        }
        interest
    }

    /// Takes the waiting clients, as many as there is room for.
    fn accept_clients(
        &mut self,
        backend: &mut impl Backend,
        service: &mut S,
    ) -> Result<(), NetError> {
        let room = self
            .limits
            .max_connections
            .saturating_sub(self.connections.len());
        for _ in 0..room {
            match backend.accept(self.listener) {
                Ok(socket) => {
                    let connection = Connection {
                        session: service.open(),
                        state: State::Open,
                        out: Vec::new(),
                        last_active_ns: backend.now_ns(),
                    };
                    self.connections.insert(socket, connection);
                }
                // Nobody waits any more, or the host has no room now.
                Err(NetError::Timeout | NetError::LimitReached) => break,
                // A client that left before it was accepted.
                Err(NetError::ConnectionReset | NetError::ConnectionRefused) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Reads from and writes to one ready connection, and closes it when
    /// it is finished or broken.
    fn serve_connection(
        &mut self,
        socket: Socket,
        ready: Ready,
        backend: &mut impl Backend,
        service: &mut S,
    ) {
        let Some(connection) = self.connections.get_mut(&socket) else {
            return;
        };
        let mut is_broken = false;
        let may_read = connection.state == State::Open
            && connection.out.len() < self.limits.max_pending_output_bytes;
        if may_read && (ready.is_readable() || ready.is_hangup()) {
            match backend.read(socket, &mut self.chunk) {
                Ok(0) => connection.state = State::Finishing,
                Ok(len_bytes) => {
                    connection.last_active_ns = backend.now_ns();
                    let bytes = self.chunk.get(..len_bytes).unwrap_or(&self.chunk);
                    let flow = service.receive(&mut connection.session, bytes, &mut connection.out);
                    if flow == Flow::Close {
                        connection.state = State::Finishing;
                    }
                }
                Err(NetError::Timeout) => {}
                Err(_) => is_broken = true,
            }
        }
        // Replies go out at once rather than a poll later; a write with no
        // room is a cheap Timeout.
        while !is_broken && !connection.out.is_empty() {
            match backend.write(socket, &connection.out) {
                // Nothing taken breaks the Backend's promise; waiting for
                // the next poll beats spinning here.
                Ok(0) => break,
                Ok(taken) => {
                    connection.last_active_ns = backend.now_ns();
                    connection.out.drain(..taken.min(connection.out.len()));
                }
                Err(NetError::Timeout) => break,
                Err(_) => is_broken = true,
            }
        }
        let is_done = connection.state == State::Finishing && connection.out.is_empty();
        if is_broken || is_done {
            self.connections.remove(&socket);
            backend.close(socket);
        }
    }

    fn close_idle(&mut self, now_ns: u64, backend: &mut impl Backend) {
        let idle_ns = duration_ns(self.limits.idle_timeout);
        let idle: Vec<Socket> = self
            .connections
            .iter()
            .filter(|(_, connection)| now_ns.saturating_sub(connection.last_active_ns) > idle_ns)
            .map(|(socket, _)| *socket)
            .collect();
        for socket in idle {
            self.connections.remove(&socket);
            backend.close(socket);
        }
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration_to_ns(duration)).unwrap_or(0)
}

#[cfg(test)]
mod tests;

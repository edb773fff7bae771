//! The socket work of blocking TCP calls: accept, connect, read, write, poll.
//!
//! Shared by the `amber` calls (abi_tcp.rs) and WASI's (wasi_sockets.rs):
//! each step either completes (`Ok(Some(_))`), fails with a
//! [`SocketError`] the caller turns into its status or errno, or would
//! block (`Ok(None)`), which the caller turns into a wait, a timeout, or
//! `AGAIN` on a nonblocking socket. Every step charges the network call
//! and the bytes it copied (fuel.rs).

use alloc::sync::Arc;

use abi::{StatusCode, errno, readiness};

use crate::error::TrapReason;
use crate::fuel;
use crate::guest_memory;
use crate::held_replies::AfterRelease;
use crate::host_state::HostState;
use crate::net::NetError;
use crate::platform::Platform;
use crate::sockets::{ConnectionState, SocketKind};

/// Why a socket call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketError {
    /// No open socket has the number.
    NoSuchSocket,
    /// A listener where a connection is needed, or the other way round.
    WrongSocket,
    /// A write after the writing side was shut down.
    WriteShut,
    /// The connection was reset (by the peer, or by a restore).
    Reset,
    /// The connection was refused, or there is no network.
    Refused,
    /// The domain's connection cap, or the machine's room, is used up.
    LimitReached,
    /// The wait ended without the call completing (or a nonblocking socket
    /// had nothing to do).
    Timeout,
}

impl SocketError {
    /// The status an `amber` call reports.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::NoSuchSocket => StatusCode::NoSuchSocket,
            Self::WrongSocket | Self::WriteShut => StatusCode::WrongSocket,
            Self::Reset => StatusCode::ConnectionReset,
            Self::Refused => StatusCode::ConnectionRefused,
            Self::LimitReached => StatusCode::LimitReached,
            Self::Timeout => StatusCode::Timeout,
        }
    }

    /// The errno a WASI call reports.
    pub(crate) fn errno(self) -> i32 {
        match self {
            Self::NoSuchSocket => errno::BADF,
            Self::WrongSocket => errno::NOTCONN,
            Self::WriteShut => errno::PIPE,
            Self::Reset => errno::CONNRESET,
            Self::Refused => errno::CONNREFUSED,
            Self::LimitReached => errno::MFILE,
            Self::Timeout => errno::AGAIN,
        }
    }

    fn from_net(error: NetError) -> Self {
        match error {
            NetError::Reset | NetError::Closed => Self::Reset,
            NetError::Refused | NetError::Unsupported | NetError::PortTaken => Self::Refused,
            NetError::NotListening => Self::NoSuchSocket,
            NetError::LimitReached => Self::LimitReached,
            // Callers handle WouldBlock before they map an error.
            NetError::WouldBlock => Self::Timeout,
        }
    }
}

/// A step's outcome: done with a value, would block, or failed.
pub(crate) type Step = Result<Option<u32>, SocketError>;

/// Ends a step that would block as a timeout when the call may not wait.
pub(crate) fn settle(step: Step, may_wait: bool) -> Option<Result<u32, SocketError>> {
    match step {
        Ok(Some(value)) => Some(Ok(value)),
        Ok(None) if may_wait => None,
        Ok(None) => Some(Err(SocketError::Timeout)),
        Err(error) => Some(Err(error)),
    }
}

/// The value an `amber` call returns for a settled step.
pub(crate) fn amber_result(result: Result<u32, SocketError>) -> i32 {
    match result {
        // Lengths and socket numbers are far below i32::MAX.
        Ok(value) => value as i32,
        Err(error) => error.status().negated(),
    }
}

fn platform(state: &HostState) -> Arc<dyn Platform> {
    state.platform.clone()
}

/// Whether socket `number` is set nonblocking (a missing one is not).
pub(crate) fn is_nonblocking(state: &HostState, number: u32) -> bool {
    state
        .sockets
        .get(number)
        .is_some_and(|socket| socket.is_nonblocking)
}

/// Whether a call on `number` waiting for any of `wanted` could go on: a
/// missing socket completes at once (with its error).
pub(crate) fn is_socket_ready(state: &HostState, number: u32, wanted: u16) -> bool {
    let platform = platform(state);
    match state
        .sockets
        .readiness(platform.network(), state.id, number)
    {
        None => true,
        Some(bits) => bits & (wanted | readiness::HANGUP) != 0,
    }
}

/// Whether an accept on `number` could go on: a client waits, or it fails
/// at once (no listener there, or no room for another connection).
pub(crate) fn is_listener_ready(state: &HostState, number: u32) -> bool {
    match state.sockets.get(number).map(|socket| socket.kind) {
        Some(SocketKind::Listener { .. }) => {
            !state.sockets.has_room() || is_socket_ready(state, number, readiness::READABLE)
        }
        _ => true,
    }
}

/// Whether a read (`wanted` READABLE) or write (WRITABLE) on `number`
/// could go on: the connection is ready, or the call fails at once (no
/// live connection there, or its writing side is shut).
pub(crate) fn is_connection_ready(state: &HostState, number: u32, wanted: u16) -> bool {
    match state.sockets.get(number).map(|socket| socket.kind) {
        Some(SocketKind::Connection {
            state: ConnectionState::Live(_),
            is_write_shut,
        }) => {
            let is_write = wanted == readiness::WRITABLE;
            (is_write && is_write_shut)
                || (is_write && state.sockets.has_durable_replies() && state.held.room() > 0)
                || is_socket_ready(state, number, wanted)
        }
        _ => true,
    }
}

/// Takes a client waiting on listener `number` as a new connection.
pub(crate) fn accept(state: &mut HostState, number: u32, is_nonblocking: bool) -> Step {
    let port = match state.sockets.get(number).map(|socket| socket.kind) {
        None => return Err(SocketError::NoSuchSocket),
        Some(SocketKind::Connection { .. }) => return Err(SocketError::WrongSocket),
        Some(SocketKind::Listener { port }) => port,
    };
    // Past the cap, clients stay in the listener's backlog.
    if !state.sockets.has_room() {
        return Err(SocketError::LimitReached);
    }
    state.charge_later(fuel::NETWORK_CALL);
    let platform = platform(state);
    match platform.network().accept(state.id, port) {
        Ok(connection) => Ok(Some(
            state.sockets.insert_connection(connection, is_nonblocking),
        )),
        Err(NetError::WouldBlock) => Ok(None),
        Err(error) => Err(SocketError::from_net(error)),
    }
}

/// Starts connecting to `address:port` (on the first step) and completes
/// once the connection is writable.
pub(crate) fn connect(state: &mut HostState, address: [u8; 4], port: u16, may_wait: bool) -> Step {
    let platform = platform(state);
    let network = platform.network();
    let number = match state.connecting {
        Some(number) => number,
        None => {
            if port == 0 {
                return Err(SocketError::Refused);
            }
            if !state.sockets.has_room() {
                return Err(SocketError::LimitReached);
            }
            state.charge_later(fuel::NETWORK_CALL);
            let connection = network
                .connect(state.id, address, port)
                .map_err(SocketError::from_net)?;
            let number = state.sockets.insert_connection(connection, false);
            state.connecting = Some(number);
            number
        }
    };
    let bits = state
        .sockets
        .readiness(network, state.id, number)
        .unwrap_or(readiness::HANGUP);
    let outcome = if bits & readiness::HANGUP != 0 {
        Err(SocketError::Refused)
    } else if bits & readiness::WRITABLE != 0 {
        state.connecting = None;
        return Ok(Some(number));
    } else if may_wait {
        return Ok(None);
    } else {
        Err(SocketError::Timeout)
    };
    state.connecting = None;
    state.sockets.close(network, state.id, number);
    outcome
}

/// The live connection `number` may read from or write to.
fn connection_of(
    state: &HostState,
    number: u32,
    is_write: bool,
) -> Result<crate::net::ConnectionId, SocketError> {
    match state.sockets.get(number).map(|socket| socket.kind) {
        None => Err(SocketError::NoSuchSocket),
        Some(SocketKind::Listener { .. }) => Err(SocketError::WrongSocket),
        Some(SocketKind::Connection {
            state: ConnectionState::Reset,
            ..
        }) => Err(SocketError::Reset),
        Some(SocketKind::Connection {
            is_write_shut: true,
            ..
        }) if is_write => Err(SocketError::WriteShut),
        Some(SocketKind::Connection {
            state: ConnectionState::Live(connection),
            ..
        }) => Ok(connection),
    }
}

/// Marks `number` reset when the network says its connection is.
fn note_failure(state: &mut HostState, number: u32, error: NetError) -> SocketError {
    let error = SocketError::from_net(error);
    if error == SocketError::Reset
        && let Some(socket) = state.sockets.get_mut(number)
        && let SocketKind::Connection { state, .. } = &mut socket.kind
    {
        *state = ConnectionState::Reset;
    }
    error
}

/// Reads what has arrived on `number` into `memory[buffer..][..capacity]`
/// (0: the stream ended).
pub(crate) fn read(
    memory: &mut [u8],
    state: &mut HostState,
    call: &'static str,
    number: u32,
    buffer: i32,
    capacity: i32,
) -> Result<Step, TrapReason> {
    let connection = match connection_of(state, number, false) {
        Ok(connection) => connection,
        Err(error) => return Ok(Err(error)),
    };
    let target = guest_memory::slice_mut(memory, call, buffer, capacity)?;
    if target.is_empty() {
        return Ok(Ok(Some(0)));
    }
    let platform = platform(state);
    let result = platform.network().read(connection, target);
    state.charge_later(fuel::NETWORK_CALL);
    Ok(match result {
        Ok(read) => {
            let read = read.min(capacity as u32 as usize);
            state.charge_later(fuel::copy(read));
            Ok(Some(read as u32))
        }
        Err(NetError::WouldBlock) => Ok(None),
        Err(error) => Err(note_failure(state, number, error)),
    })
}

/// Queues as much of `memory[bytes..][..length]` on `number` as there is
/// room for.
pub(crate) fn write(
    memory: &[u8],
    state: &mut HostState,
    call: &'static str,
    number: u32,
    bytes: i32,
    length: i32,
) -> Result<Step, TrapReason> {
    let connection = match connection_of(state, number, true) {
        Ok(connection) => connection,
        Err(error) => return Ok(Err(error)),
    };
    let source = guest_memory::slice(memory, call, bytes, length)?;
    if source.is_empty() {
        return Ok(Ok(Some(0)));
    }
    if state.sockets.has_durable_replies() {
        // Held until the next commit, which the held bytes ask for.
        let now_ns = state.now_ns();
        state.replies_held_since_ns.get_or_insert(now_ns);
        let taken = state.held.hold(connection, source);
        state.charge_later(fuel::copy(taken));
        return Ok(Ok((taken > 0).then_some(taken as u32)));
    }
    let platform = platform(state);
    let result = platform.network().write(connection, source);
    state.charge_later(fuel::NETWORK_CALL);
    Ok(match result {
        Ok(written) => {
            let written = written.min(source.len());
            state.charge_later(fuel::copy(written));
            Ok(Some(written as u32))
        }
        Err(NetError::WouldBlock) => Ok(None),
        Err(error) => Err(note_failure(state, number, error)),
    })
}

/// Ends the writing side of connection `number`.
pub(crate) fn shutdown_write(state: &mut HostState, number: u32) -> Result<(), SocketError> {
    let connection = connection_of(state, number, false)?;
    let platform = platform(state);
    if state.held.is_holding(connection) {
        state.held.after_release(connection, AfterRelease::Shutdown);
    } else {
        platform.network().shutdown(connection);
    }
    state.charge_later(fuel::NETWORK_CALL);
    if let Some(socket) = state.sockets.get_mut(number)
        && let SocketKind::Connection { is_write_shut, .. } = &mut socket.kind
    {
        *is_write_shut = true;
    }
    Ok(())
}

/// Closes socket `number`.
pub(crate) fn close(state: &mut HostState, number: u32) -> Result<(), SocketError> {
    let platform = platform(state);
    state.charge_later(fuel::NETWORK_CALL);
    if let Ok(connection) = connection_of(state, number, false)
        && state.held.is_holding(connection)
    {
        // Closed once the held bytes are sent.
        state.sockets.remove(number);
        state.held.after_release(connection, AfterRelease::Close);
        return Ok(());
    }
    if state.sockets.close(platform.network(), state.id, number) {
        Ok(())
    } else {
        Err(SocketError::NoSuchSocket)
    }
}

/// The first iovec with room among `count` at `iovs` (at most
/// `crate::abi_wasi::MAX_IOVECS_PER_CALL` are read), as (pointer, length);
/// `None` when every one is empty. Traps on an iovec outside memory.
pub(crate) fn first_iovec(
    memory: &[u8],
    call: &'static str,
    iovs: i32,
    count: i32,
) -> Result<Option<(i32, i32)>, TrapReason> {
    let count = (count.max(0) as usize).min(crate::abi_wasi::MAX_IOVECS_PER_CALL);
    for index in 0..count {
        let iov = iovs.wrapping_add((index as i32).wrapping_mul(8));
        let pointer = guest_memory::read_u32(memory, call, iov)?;
        let length = guest_memory::read_u32(memory, call, iov.wrapping_add(4))?;
        guest_memory::slice(memory, call, pointer as i32, length as i32)?;
        if length > 0 {
            return Ok(Some((pointer as i32, length as i32)));
        }
    }
    Ok(None)
}

//! Blocking host calls: complete now, unwind the guest stack, or pause.
//!
//! A blocking call that cannot complete at once leaves the guest in one of two
//! ways. An asyncified module is unwound into its memory (asyncify.rs): the
//! domain then holds no native stack, so it can be committed, restored after a
//! reboot, or moved, and is rewound into the same call when it can go on. A
//! module without asyncify pauses its wasmi call with a host error carrying a
//! [`Request`]; the scheduler resumes it with the results (it cannot be
//! resumed after a restart and starts again at its entry, see README.md).

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use wasmi::{Caller, Val};

use crate::error::TrapReason;
use crate::guest_memory;
use crate::host_state::HostState;
use crate::net_calls;
use crate::storage::{BlockingImport, Suspension};
use abi::{StatusCode, errno, readiness};

/// A blocking call with the guest arguments its completion needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingCall {
    Sleep,
    Yield,
    Recv {
        buffer: i32,
        capacity: i32,
        from: i32,
    },
    Checkpoint,
    SchedYield,
    PollOneoff {
        subscriptions: i32,
        events: i32,
        count: i32,
        events_written: i32,
    },
    TcpAccept {
        listener: u32,
    },
    TcpConnect {
        address: [u8; 4],
        port: u16,
    },
    TcpRead {
        socket: u32,
        buffer: i32,
        capacity: i32,
    },
    TcpWrite {
        socket: u32,
        bytes: i32,
        length: i32,
    },
    /// The entries' sockets and interests are in `HostState::poll_interest`.
    NetPoll {
        entries: i32,
        count: i32,
    },
    SockAccept {
        listener: u32,
        flags: u16,
        new_fd: i32,
    },
    /// `fd_read` or `sock_recv` on a socket (`flags_out` only for the latter).
    SocketRecv {
        via: WasiStreamCall,
        socket: u32,
        iovs: i32,
        count: i32,
        length_out: i32,
        flags_out: i32,
    },
    /// `fd_write` or `sock_send` on a socket.
    SocketSend {
        via: WasiStreamCall,
        socket: u32,
        iovs: i32,
        count: i32,
        length_out: i32,
    },
}

/// Which WASI import a socket read or write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasiStreamCall {
    /// `fd_read` / `fd_write`.
    Fd,
    /// `sock_recv` / `sock_send`.
    Sock,
}

/// One socket a poll waits on, and the `abi::readiness` bits it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollInterest {
    pub socket: u32,
    pub interest: u16,
}

impl BlockingCall {
    /// The import this call came through.
    pub fn import(&self) -> BlockingImport {
        match self {
            Self::Sleep => BlockingImport::AmberSleep,
            Self::Yield => BlockingImport::AmberYield,
            Self::Recv { .. } => BlockingImport::AmberRecv,
            Self::Checkpoint => BlockingImport::AmberCheckpoint,
            Self::SchedYield => BlockingImport::WasiSchedYield,
            Self::PollOneoff { .. } => BlockingImport::WasiPollOneoff,
            Self::TcpAccept { .. } => BlockingImport::AmberTcpAccept,
            Self::TcpConnect { .. } => BlockingImport::AmberTcpConnect,
            Self::TcpRead { .. } => BlockingImport::AmberTcpRead,
            Self::TcpWrite { .. } => BlockingImport::AmberTcpWrite,
            Self::NetPoll { .. } => BlockingImport::AmberNetPoll,
            Self::SockAccept { .. } => BlockingImport::WasiSockAccept,
            Self::SocketRecv {
                via: WasiStreamCall::Fd,
                ..
            } => BlockingImport::WasiFdRead,
            Self::SocketRecv {
                via: WasiStreamCall::Sock,
                ..
            } => BlockingImport::WasiSockRecv,
            Self::SocketSend {
                via: WasiStreamCall::Fd,
                ..
            } => BlockingImport::WasiFdWrite,
            Self::SocketSend {
                via: WasiStreamCall::Sock,
                ..
            } => BlockingImport::WasiSockSend,
        }
    }

    /// The value an unwinding import returns (ignored by asyncify).
    fn placeholder_result(&self) -> Option<Val> {
        match self {
            Self::Sleep | Self::Yield => None,
            _ => Some(Val::I32(0)),
        }
    }
}

/// A call waiting to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub call: BlockingCall,
    /// Domain-clock time at which it completes anyway (sleep, timeouts).
    pub deadline_ns: Option<u64>,
}

/// Why a host call paused its wasmi call (the payload of the host error).
#[derive(Debug)]
pub enum Request {
    /// A module without asyncify blocked.
    Block(Blocked),
    /// `send`: the scheduler delivers and resumes with a status.
    Send { target: Vec<u8>, message: Vec<u8> },
    /// `exit` or `proc_exit`.
    Exit(i32),
}

impl fmt::Display for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Block(blocked) => write!(formatter, "blocked in {:?}", blocked.call),
            Self::Send { message, .. } => write!(formatter, "send of {} bytes", message.len()),
            Self::Exit(code) => write!(formatter, "exit({code})"),
        }
    }
}

impl wasmi::errors::HostError for Request {}

/// Whether a call is being entered for the first time or after a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    First,
    Resumed,
}

/// How the guest came into a blocking import, as [`enter`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A call as any other.
    Called,
    /// A rewind brought the guest back into the import it was suspended
    /// in; the rewind is over, and the call keeps the deadline its
    /// suspension recorded.
    Rewound { deadline_ns: Option<u64> },
}

/// Turns a trap reason into the host error that ends the domain.
pub fn trap(reason: TrapReason) -> wasmi::Error {
    wasmi::Error::host(reason)
}

/// Starts a blocking import: if the guest is being rewound (it can only be
/// re-entering the import it was suspended in, since asyncified code makes
/// no other call while it rewinds), ends the rewind first.
///
/// Every blocking import calls this before it looks at anything but its
/// arguments, because what it finds may differ from what the suspended call
/// saw: after a restore, a rollback or a move the socket table is the
/// record's, and a socket the guest holds may be reset or unknown. An
/// import that then returns at once (`NoSuchSocket`, `BADF`) must still
/// have ended the rewind: asyncified code that runs on while rewinding
/// skips what it should do and reaches `unreachable`.
pub fn enter(
    caller: &mut Caller<'_, HostState>,
    import: BlockingImport,
) -> Result<Arrival, wasmi::Error> {
    if !caller.data().is_rewinding {
        return Ok(Arrival::Called);
    }
    let asyncify = caller
        .data()
        .asyncify
        .ok_or_else(|| trap(TrapReason::Asyncify("rewinding without asyncify".into())))?;
    asyncify.stop_rewind(&mut *caller).map_err(trap)?;
    let state = caller.data_mut();
    state.is_rewinding = false;
    state.waiting = None;
    let suspension = state
        .suspension
        .take()
        .ok_or_else(|| trap(TrapReason::Asyncify("rewound without a suspension".into())))?;
    if suspension.import != import {
        return Err(trap(TrapReason::Asyncify(format!(
            "suspended in {:?} but rewound into {:?}",
            suspension.import, import
        ))));
    }
    Ok(Arrival::Rewound {
        deadline_ns: suspension.deadline_ns,
    })
}

/// Runs a blocking call from inside its host function, which [`enter`]ed
/// it as `arrival`. Returns the call's result, or a placeholder while the
/// stack unwinds.
pub fn blocking_call(
    caller: &mut Caller<'_, HostState>,
    call: BlockingCall,
    deadline_ns: Option<u64>,
    arrival: Arrival,
) -> Result<Option<Val>, wasmi::Error> {
    let memory = caller.data().memory.ok_or_else(|| {
        trap(TrapReason::BadArgument {
            call: "blocking call",
            detail: "the domain has no memory",
        })
    })?;
    if caller.data().is_rewinding {
        return Err(trap(TrapReason::Asyncify(format!(
            "{:?} was rewound into without ending the rewind",
            call.import()
        ))));
    }
    let (entry, deadline_ns) = match arrival {
        Arrival::Called => (Entry::First, deadline_ns),
        Arrival::Rewound { deadline_ns } => (Entry::Resumed, deadline_ns),
    };
    let blocked = Blocked { call, deadline_ns };
    // A wanted commit needs a safe point: the first entry then stops here
    // whatever the call could do, and completes when resumed. Held replies
    // stop it only once due (`HostState::are_replies_due`); before that a
    // call that completes at once goes on, and one that waits commits.
    let is_stopping = entry == Entry::First
        && (caller.data().is_checkpoint_wanted || caller.data().are_replies_due());
    if !is_stopping {
        let (bytes, state) = memory.data_and_store_mut(&mut *caller);
        if let Some(result) = try_complete(bytes, state, &blocked, entry).map_err(trap)? {
            return Ok(result);
        }
    }
    let state = caller.data();
    let Some(asyncify) = state.asyncify else {
        return Err(wasmi::Error::host(Request::Block(blocked)));
    };
    let buffer = match state.save_buffer {
        Some(buffer) => buffer,
        None => {
            let buffer = crate::asyncify::grow_save_buffer(&mut *caller, memory).map_err(trap)?;
            caller.data_mut().save_buffer = Some(buffer);
            buffer
        }
    };
    let state = caller.data_mut();
    state.waiting = Some(blocked);
    state.suspension = Some(Suspension {
        module_fingerprint: state.module_fingerprint,
        import: call.import(),
        save_buffer: buffer,
        deadline_ns: blocked.deadline_ns,
    });
    asyncify
        .start_unwind(&mut *caller, memory, buffer)
        .map_err(trap)?;
    Ok(call.placeholder_result())
}

/// Whether a waiting call can complete now (the scheduler's wake-up test).
pub fn is_ready(state: &HostState, blocked: &Blocked) -> bool {
    let is_past_deadline = blocked
        .deadline_ns
        .is_some_and(|deadline| state.now_ns() >= deadline);
    match blocked.call {
        BlockingCall::Recv { .. } => !state.mailbox.is_empty() || is_past_deadline,
        BlockingCall::Sleep => blocked.deadline_ns.is_none() || is_past_deadline,
        BlockingCall::PollOneoff { .. } => {
            is_past_deadline
                || (blocked.deadline_ns.is_none() && state.poll_interest.is_empty())
                || is_any_polled_ready(state)
        }
        BlockingCall::NetPoll { .. } => is_past_deadline || is_any_polled_ready(state),
        BlockingCall::Yield | BlockingCall::SchedYield | BlockingCall::Checkpoint => true,
        BlockingCall::TcpAccept { listener } => {
            is_past_deadline || net_calls::is_listener_ready(state, listener)
        }
        BlockingCall::SockAccept { listener, .. } => {
            is_past_deadline
                || net_calls::is_nonblocking(state, listener)
                || net_calls::is_listener_ready(state, listener)
        }
        BlockingCall::TcpConnect { .. } => {
            is_past_deadline
                || state.connecting.is_none_or(|socket| {
                    net_calls::is_socket_ready(state, socket, readiness::WRITABLE)
                })
        }
        BlockingCall::TcpRead { socket, .. } => {
            is_past_deadline || net_calls::is_connection_ready(state, socket, readiness::READABLE)
        }
        BlockingCall::TcpWrite { socket, .. } => {
            is_past_deadline || net_calls::is_connection_ready(state, socket, readiness::WRITABLE)
        }
        BlockingCall::SocketRecv { socket, .. } => {
            net_calls::is_nonblocking(state, socket)
                || net_calls::is_connection_ready(state, socket, readiness::READABLE)
        }
        BlockingCall::SocketSend { socket, .. } => {
            net_calls::is_nonblocking(state, socket)
                || net_calls::is_connection_ready(state, socket, readiness::WRITABLE)
        }
    }
}

/// Whether a socket `net_poll` or `poll_oneoff` waits on is ready.
fn is_any_polled_ready(state: &HostState) -> bool {
    state
        .poll_interest
        .iter()
        .any(|entry| net_calls::is_socket_ready(state, entry.socket, entry.interest))
}

/// Completes `blocked` if it can: writes its outputs and returns its result
/// (`Some(None)` for calls without one), or `None` to keep waiting.
pub fn try_complete(
    memory: &mut [u8],
    state: &mut HostState,
    blocked: &Blocked,
    entry: Entry,
) -> Result<Option<Option<Val>>, TrapReason> {
    let is_resumed = entry == Entry::Resumed;
    if !is_ready(state, blocked) {
        return Ok(None);
    }
    Ok(match blocked.call {
        // A sleep, even of zero, always gives way once (guest-sdk/README.md).
        BlockingCall::Sleep | BlockingCall::Yield => is_resumed.then_some(None),
        BlockingCall::SchedYield => is_resumed.then_some(Some(Val::I32(errno::SUCCESS))),
        BlockingCall::Checkpoint => {
            is_resumed.then_some(Some(Val::I32(state.checkpoint_status.code())))
        }
        BlockingCall::Recv {
            buffer,
            capacity,
            from,
        } => Some(Some(Val::I32(complete_recv(
            memory, state, buffer, capacity, from,
        )?))),
        BlockingCall::PollOneoff {
            subscriptions,
            events,
            count,
            events_written,
        } => {
            let events_cost = (count.max(0) as u64).saturating_mul(crate::fuel::SUBSCRIPTION);
            state.charge_later(events_cost);
            let is_past_deadline = blocked
                .deadline_ns
                .is_some_and(|deadline| state.now_ns() >= deadline);
            let written = crate::wasi_poll::write_events(
                memory,
                state,
                subscriptions,
                events,
                count,
                is_past_deadline,
            )?;
            if written == 0 && !is_past_deadline {
                // Readiness went away between the check and the scan.
                return Ok(None);
            }
            guest_memory::write_u32(memory, "poll_oneoff", events_written, written)?;
            Some(Some(Val::I32(errno::SUCCESS)))
        }
        _ => return crate::net_complete::try_complete(memory, state, blocked),
    })
}

fn complete_recv(
    memory: &mut [u8],
    state: &mut HostState,
    buffer: i32,
    capacity: i32,
    from: i32,
) -> Result<i32, TrapReason> {
    let Some(message) = state.mailbox.front() else {
        return Ok(StatusCode::Timeout.negated());
    };
    if message.bytes.len() > capacity as u32 as usize {
        return Ok(StatusCode::BufferTooSmall.negated());
    }
    let cost = crate::fuel::copy(message.bytes.len());
    guest_memory::write(memory, "recv", buffer, &message.bytes)?;
    guest_memory::write(memory, "recv", from, &message.from.to_le_bytes())?;
    let length = message.bytes.len() as i32;
    state.charge_later(cost);
    state.drop_oldest_message();
    Ok(length)
}

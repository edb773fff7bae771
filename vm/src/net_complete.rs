//! Completing a waiting TCP call: its result, and the outputs it writes.
//!
//! `blocking::try_complete` hands the network's calls here once
//! `blocking::is_ready` says they may go on (or their deadline passed). A
//! step that would still block keeps waiting, ends as `Timeout` at the
//! deadline, or as `AGAIN` on a nonblocking WASI socket.

use wasmi::Val;

use abi::{errno, readiness};

use crate::blocking::{Blocked, BlockingCall, WasiStreamCall};
use crate::error::TrapReason;
use crate::fuel;
use crate::guest_memory;
use crate::host_state::HostState;
use crate::net_calls::{self, SocketError, amber_result, settle};

/// WASI's `fdflags.nonblock`.
pub(crate) const FDFLAGS_NONBLOCK: u16 = 4;

/// Completes a network call if it can (see `blocking::try_complete`).
pub(crate) fn try_complete(
    memory: &mut [u8],
    state: &mut HostState,
    blocked: &Blocked,
) -> Result<Option<Option<Val>>, TrapReason> {
    let is_past_deadline = blocked
        .deadline_ns
        .is_some_and(|deadline| state.now_ns() >= deadline);
    let may_wait = !is_past_deadline;
    let value = match blocked.call {
        BlockingCall::TcpAccept { listener } => {
            settle(net_calls::accept(state, listener, false), may_wait).map(amber_result)
        }
        BlockingCall::TcpConnect { address, port } => {
            settle(net_calls::connect(state, address, port, may_wait), may_wait).map(amber_result)
        }
        BlockingCall::TcpRead {
            socket,
            buffer,
            capacity,
        } => {
            let step = net_calls::read(memory, state, "tcp_read", socket, buffer, capacity)?;
            settle(step, may_wait).map(amber_result)
        }
        BlockingCall::TcpWrite {
            socket,
            bytes,
            length,
        } => {
            let step = net_calls::write(memory, state, "tcp_write", socket, bytes, length)?;
            settle(step, may_wait).map(amber_result)
        }
        BlockingCall::NetPoll { entries, count } => {
            complete_net_poll(memory, state, entries, count, is_past_deadline)?
        }
        BlockingCall::SockAccept {
            listener,
            flags,
            new_fd,
        } => {
            let may_wait = !net_calls::is_nonblocking(state, listener);
            let is_nonblocking = flags & FDFLAGS_NONBLOCK != 0;
            let step = net_calls::accept(state, listener, is_nonblocking);
            match settle(step, may_wait) {
                None => None,
                Some(result) => Some(wasi_result(memory, "sock_accept", new_fd, result)?),
            }
        }
        BlockingCall::SocketRecv {
            via,
            socket,
            iovs,
            count,
            length_out,
            flags_out,
        } => {
            let call = match via {
                WasiStreamCall::Fd => "fd_read",
                WasiStreamCall::Sock => "sock_recv",
            };
            let may_wait = !net_calls::is_nonblocking(state, socket);
            let step = match net_calls::first_iovec(memory, call, iovs, count)? {
                None => Ok(Some(0)),
                Some((pointer, length)) => {
                    net_calls::read(memory, state, call, socket, pointer, length)?
                }
            };
            match settle(step, may_wait) {
                None => None,
                Some(result) => {
                    if via == WasiStreamCall::Sock && result.is_ok() {
                        // ro_flags: no RECV_DATA_TRUNCATED for a stream.
                        guest_memory::write(memory, call, flags_out, &0u16.to_le_bytes())?;
                    }
                    Some(wasi_result(memory, call, length_out, result)?)
                }
            }
        }
        BlockingCall::SocketSend {
            via,
            socket,
            iovs,
            count,
            length_out,
        } => {
            let call = match via {
                WasiStreamCall::Fd => "fd_write",
                WasiStreamCall::Sock => "sock_send",
            };
            let may_wait = !net_calls::is_nonblocking(state, socket);
            let step = match net_calls::first_iovec(memory, call, iovs, count)? {
                None => Ok(Some(0)),
                Some((pointer, length)) => {
                    net_calls::write(memory, state, call, socket, pointer, length)?
                }
            };
            match settle(step, may_wait) {
                None => None,
                Some(result) => Some(wasi_result(memory, call, length_out, result)?),
            }
        }
        // The other calls complete in `blocking::try_complete`.
        _ => return Ok(None),
    };
    Ok(value.map(|value| Some(Val::I32(value))))
}

/// Writes a settled WASI step's value at `out` and returns its errno.
fn wasi_result(
    memory: &mut [u8],
    call: &'static str,
    out: i32,
    result: Result<u32, SocketError>,
) -> Result<i32, TrapReason> {
    match result {
        Ok(value) => {
            guest_memory::write_u32(memory, call, out, value)?;
            Ok(errno::SUCCESS)
        }
        Err(error) => Ok(error.errno()),
    }
}

/// Writes each `net_poll` entry's ready bits and counts the ready ones;
/// keeps waiting while none is and the deadline has not passed.
fn complete_net_poll(
    memory: &mut [u8],
    state: &mut HostState,
    entries: i32,
    count: i32,
    is_past_deadline: bool,
) -> Result<Option<i32>, TrapReason> {
    const CALL: &str = "net_poll";
    let platform = state.platform.clone();
    let network = platform.network();
    state.charge_later((count.max(0) as u64).saturating_mul(fuel::POLL_ENTRY));
    let mut ready_count = 0;
    for index in 0..count.max(0) {
        let base = entries.wrapping_add(index.wrapping_mul(8));
        let socket = guest_memory::read_u32(memory, CALL, base)?;
        let entry = guest_memory::slice(memory, CALL, base.wrapping_add(4), 2)?;
        let interest = u16::from_le_bytes([entry[0], entry[1]]);
        let bits = match state.sockets.readiness(network, state.id, socket) {
            None => readiness::HANGUP,
            Some(bits) => bits & (interest | readiness::HANGUP),
        };
        guest_memory::write(memory, CALL, base.wrapping_add(6), &bits.to_le_bytes())?;
        if bits != 0 {
            ready_count += 1;
        }
    }
    if ready_count == 0 && !is_past_deadline {
        return Ok(None);
    }
    Ok(Some(ready_count))
}

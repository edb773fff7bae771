//! WASI preview1 on sockets: sock_* calls and fd_* calls on socket fds.
//!
//! A socket's fd is its number in the domain's table (`crate::sockets`),
//! so an unmodified wasip1 program serves with `TcpListener::from_raw_fd(3)`
//! (`LISTEN_FDS` in its environment says how many, as wasmtime's
//! `--tcplisten`): std's accept is `sock_accept`, its reads and writes
//! `fd_read` / `fd_write`, `shutdown` is `sock_shutdown`, `set_nonblocking`
//! is `fd_fdstat_get` then `fd_fdstat_set_flags`, and drop is `fd_close`.
//! A call on a nonblocking socket that would wait returns `AGAIN`.

use wasmi::{Caller, Val};

use abi::errno;

use crate::abi_amber::memory_of;
use crate::abi_wasi::MAX_IOVECS_PER_CALL;
use crate::blocking::{Arrival, BlockingCall, WasiStreamCall, blocking_call, enter, trap};
use crate::fuel;
use crate::guest_memory;
use crate::host_functions::HostFunctions;
use crate::host_state::HostState;
use crate::net_calls;
use crate::net_complete::FDFLAGS_NONBLOCK;
use crate::sockets::SocketKind;
use crate::storage::BlockingImport;

type Result<T> = core::result::Result<T, wasmi::Error>;

/// witx `filetype.socket_stream`.
const FILETYPE_SOCKET_STREAM: u8 = 6;
/// witx `sdflags`.
const SDFLAGS_RD: i32 = 1;
const SDFLAGS_WR: i32 = 2;

fn errno_of(value: Option<Val>) -> i32 {
    match value {
        Some(Val::I32(value)) => value,
        _ => errno::SUCCESS,
    }
}

/// Whether `fd` is one of the domain's sockets.
pub(crate) fn is_socket(state: &HostState, fd: i32) -> bool {
    state.sockets.get(fd as u32).is_some()
}

/// Charges and checks a socket call's iovec list (at most
/// [`MAX_IOVECS_PER_CALL`] are read; the rest are not looked at).
fn check_iovecs(
    caller: &mut Caller<'_, HostState>,
    call: &'static str,
    iovs: i32,
    count: i32,
) -> Result<()> {
    let read = (count.max(0) as usize).min(MAX_IOVECS_PER_CALL);
    fuel::charge(caller, (read as u64).saturating_mul(fuel::IOVEC))?;
    let memory = memory_of(caller)?;
    // read <= 1024, so read * 8 fits.
    guest_memory::slice(memory.data(&*caller), call, iovs, (read * 8) as i32).map_err(trap)?;
    Ok(())
}

/// `fd_read` (`WasiStreamCall::Fd`) or `sock_recv` on socket `fd`,
/// [`enter`]ed as `arrival`.
#[expect(
    clippy::too_many_arguments,
    reason = "sock_recv's own arguments, and how and through which import it came"
)]
pub(crate) fn receive(
    caller: &mut Caller<'_, HostState>,
    arrival: Arrival,
    via: WasiStreamCall,
    fd: i32,
    iovs: i32,
    count: i32,
    length_out: i32,
    flags_out: i32,
) -> Result<i32> {
    let call = match via {
        WasiStreamCall::Fd => "fd_read",
        WasiStreamCall::Sock => "sock_recv",
    };
    check_iovecs(caller, call, iovs, count)?;
    let call = BlockingCall::SocketRecv {
        via,
        socket: fd as u32,
        iovs,
        count,
        length_out,
        flags_out,
    };
    Ok(errno_of(blocking_call(caller, call, None, arrival)?))
}

/// `fd_write` (`WasiStreamCall::Fd`) or `sock_send` on socket `fd`,
/// [`enter`]ed as `arrival`.
pub(crate) fn send(
    caller: &mut Caller<'_, HostState>,
    arrival: Arrival,
    via: WasiStreamCall,
    fd: i32,
    iovs: i32,
    count: i32,
    length_out: i32,
) -> Result<i32> {
    let call = match via {
        WasiStreamCall::Fd => "fd_write",
        WasiStreamCall::Sock => "sock_send",
    };
    check_iovecs(caller, call, iovs, count)?;
    let call = BlockingCall::SocketSend {
        via,
        socket: fd as u32,
        iovs,
        count,
        length_out,
    };
    Ok(errno_of(blocking_call(caller, call, None, arrival)?))
}

/// `fd_close` on socket `fd`.
pub(crate) fn close(caller: &mut Caller<'_, HostState>, fd: i32) -> Result<i32> {
    let result = net_calls::close(caller.data_mut(), fd as u32);
    fuel::settle(caller)?;
    Ok(match result {
        Ok(()) => errno::SUCCESS,
        Err(error) => error.errno(),
    })
}

/// `fd_fdstat_get` on socket `fd`: a stream socket, with its flags.
pub(crate) fn fdstat(caller: &mut Caller<'_, HostState>, fd: i32, stat: i32) -> Result<i32> {
    let flags = if net_calls::is_nonblocking(caller.data(), fd as u32) {
        FDFLAGS_NONBLOCK
    } else {
        0
    };
    // fdstat: filetype u8 @0, flags u16 @2, rights_base u64 @8,
    // rights_inheriting u64 @16.
    let mut bytes = [0u8; 24];
    bytes[0] = FILETYPE_SOCKET_STREAM;
    bytes[2..4].copy_from_slice(&flags.to_le_bytes());
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let memory = memory_of(caller)?;
    guest_memory::write(memory.data_mut(&mut *caller), "fd_fdstat_get", stat, &bytes)
        .map_err(trap)?;
    Ok(errno::SUCCESS)
}

/// Adds the WASI socket functions.
pub(crate) fn define(functions: &mut HostFunctions<'_>) -> Result<()> {
    functions.func_wrap(
        "sock_accept",
        |mut caller: Caller<'_, HostState>, fd: i32, flags: i32, new_fd: i32| -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::WasiSockAccept)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            if flags & !i32::from(FDFLAGS_NONBLOCK) != 0 {
                return Ok(errno::INVAL);
            }
            let memory = memory_of(&caller)?;
            guest_memory::slice(memory.data(&caller), "sock_accept", new_fd, 4).map_err(trap)?;
            match caller
                .data()
                .sockets
                .get(fd as u32)
                .map(|socket| socket.kind)
            {
                None if (0..=2).contains(&fd) => return Ok(errno::NOTSOCK),
                None => return Ok(errno::BADF),
                Some(SocketKind::Connection { .. }) => return Ok(errno::INVAL),
                Some(SocketKind::Listener { .. }) => {}
            }
            let call = BlockingCall::SockAccept {
                listener: fd as u32,
                flags: flags as u16,
                new_fd,
            };
            Ok(errno_of(blocking_call(&mut caller, call, None, arrival)?))
        },
    )?;
    functions.func_wrap(
        "sock_recv",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         iovs: i32,
         count: i32,
         flags: i32,
         length_out: i32,
         flags_out: i32|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::WasiSockRecv)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            if !is_socket(caller.data(), fd) {
                return Ok(not_a_socket(fd));
            }
            // RECV_PEEK and RECV_WAITALL are not offered (std's peek is
            // unsupported on wasip1 anyway).
            if flags != 0 {
                return Ok(errno::NOTSUP);
            }
            receive(
                &mut caller,
                arrival,
                WasiStreamCall::Sock,
                fd,
                iovs,
                count,
                length_out,
                flags_out,
            )
        },
    )?;
    functions.func_wrap(
        "sock_send",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         iovs: i32,
         count: i32,
         _flags: i32,
         length_out: i32|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::WasiSockSend)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            if !is_socket(caller.data(), fd) {
                return Ok(not_a_socket(fd));
            }
            send(
                &mut caller,
                arrival,
                WasiStreamCall::Sock,
                fd,
                iovs,
                count,
                length_out,
            )
        },
    )?;
    functions.func_wrap(
        "sock_shutdown",
        |mut caller: Caller<'_, HostState>, fd: i32, how: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            if how & !(SDFLAGS_RD | SDFLAGS_WR) != 0 || how == 0 {
                return Ok(errno::INVAL);
            }
            if !is_socket(caller.data(), fd) {
                return Ok(not_a_socket(fd));
            }
            // Shutting the reading side down has nothing to stop: the guest
            // simply reads no more.
            let result = if how & SDFLAGS_WR != 0 {
                net_calls::shutdown_write(caller.data_mut(), fd as u32)
            } else {
                Ok(())
            };
            fuel::settle(&mut caller)?;
            Ok(match result {
                Ok(()) => errno::SUCCESS,
                Err(net_calls::SocketError::WrongSocket) => errno::NOTCONN,
                Err(error) => error.errno(),
            })
        },
    )?;
    functions.func_wrap(
        "fd_fdstat_set_flags",
        |mut caller: Caller<'_, HostState>, fd: i32, flags: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let state = caller.data_mut();
            let Some(socket) = state.sockets.get_mut(fd as u32) else {
                return Ok(if (0..=2).contains(&fd) {
                    errno::NOTSUP
                } else {
                    errno::BADF
                });
            };
            if flags & !i32::from(FDFLAGS_NONBLOCK) != 0 {
                return Ok(errno::NOTSUP);
            }
            socket.is_nonblocking = flags & i32::from(FDFLAGS_NONBLOCK) != 0;
            Ok(errno::SUCCESS)
        },
    )?;
    Ok(())
}

/// The errno of a socket call on `fd`, which is no socket.
fn not_a_socket(fd: i32) -> i32 {
    if (0..=2).contains(&fd) {
        errno::NOTSOCK
    } else {
        errno::BADF
    }
}

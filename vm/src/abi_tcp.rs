//! The `amber` TCP calls: listeners, connections, reads, writes and polls.
//!
//! Signatures and meanings are `abi::IMPORTS`' (guest-sdk/README.md,
//! "Network"). Socket numbers come from the domain's table
//! (`crate::sockets`); a blocking call's socket work happens when it
//! completes (net_calls.rs), never in the host function itself, because
//! an asyncified guest re-enters the function when it is rewound; and
//! each blocking function starts with `blocking::enter`, which ends such a
//! rewind before the function can return early. A pointer is checked when
//! the call is made, so a bad one traps at once.

use abi::{MAX_POLL_ENTRIES, StatusCode};
use wasmi::Caller;

use crate::abi_amber::{deadline_after, memory_of, result_i32};
use crate::blocking::{BlockingCall, PollInterest, blocking_call, enter, trap};
use crate::fuel;
use crate::guest_memory;
use crate::host_functions::HostFunctions;
use crate::host_state::HostState;
use crate::net_calls;
use crate::storage::BlockingImport;

type Result<T> = core::result::Result<T, wasmi::Error>;

/// A socket number from the guest (negative ones are no socket).
fn socket_number(socket: i32) -> u32 {
    socket as u32
}

/// Adds the `amber` TCP functions.
pub(crate) fn define(functions: &mut HostFunctions<'_>) -> Result<()> {
    functions.func_wrap(
        "tcp_listener",
        |mut caller: Caller<'_, HostState>, port: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let Ok(port) = u16::try_from(port) else {
                return Ok(StatusCode::PortNotDeclared.negated());
            };
            let state = caller.data_mut();
            if state.sockets.listener_for(port).is_none() {
                return Ok(StatusCode::PortNotDeclared.negated());
            }
            let is_open = state
                .sockets
                .listener_for(port)
                .and_then(|number| state.sockets.get(number))
                .is_some();
            if !is_open {
                // Closed by the guest: listen again.
                state.charge_later(fuel::NETWORK_CALL);
                let platform = state.platform.clone();
                if platform.network().listen(state.id, port).is_err() {
                    return Ok(StatusCode::LimitReached.negated());
                }
            }
            let number = state.sockets.reopen_listener(port);
            Ok(
                number.map_or(StatusCode::PortNotDeclared.negated(), |number| {
                    number as i32
                }),
            )
        },
    )?;
    functions.func_wrap(
        "tcp_accept",
        |mut caller: Caller<'_, HostState>, listener: i32, timeout_ns: i64| -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberTcpAccept)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            let deadline = deadline_after(&caller, timeout_ns);
            let call = BlockingCall::TcpAccept {
                listener: socket_number(listener),
            };
            Ok(result_i32(blocking_call(
                &mut caller,
                call,
                deadline,
                arrival,
            )?))
        },
    )?;
    functions.func_wrap(
        "tcp_connect",
        |mut caller: Caller<'_, HostState>,
         address: i32,
         port: i32,
         timeout_ns: i64|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberTcpConnect)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            let memory = memory_of(&caller)?;
            let bytes = guest_memory::slice(memory.data(&caller), "tcp_connect", address, 4)
                .map_err(trap)?;
            let address = [bytes[0], bytes[1], bytes[2], bytes[3]];
            let Ok(port) = u16::try_from(port) else {
                return Ok(StatusCode::ConnectionRefused.negated());
            };
            let deadline = deadline_after(&caller, timeout_ns);
            let call = BlockingCall::TcpConnect { address, port };
            Ok(result_i32(blocking_call(
                &mut caller,
                call,
                deadline,
                arrival,
            )?))
        },
    )?;
    functions.func_wrap(
        "tcp_read",
        |mut caller: Caller<'_, HostState>,
         socket: i32,
         buffer: i32,
         capacity: i32,
         timeout_ns: i64|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberTcpRead)?;
            // The bytes are charged when they are read (net_calls.rs).
            fuel::charge(&mut caller, fuel::CALL)?;
            let memory = memory_of(&caller)?;
            guest_memory::slice(memory.data(&caller), "tcp_read", buffer, capacity)
                .map_err(trap)?;
            let deadline = deadline_after(&caller, timeout_ns);
            let call = BlockingCall::TcpRead {
                socket: socket_number(socket),
                buffer,
                capacity,
            };
            Ok(result_i32(blocking_call(
                &mut caller,
                call,
                deadline,
                arrival,
            )?))
        },
    )?;
    functions.func_wrap(
        "tcp_write",
        |mut caller: Caller<'_, HostState>,
         socket: i32,
         bytes: i32,
         length: i32,
         timeout_ns: i64|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberTcpWrite)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            let memory = memory_of(&caller)?;
            guest_memory::slice(memory.data(&caller), "tcp_write", bytes, length).map_err(trap)?;
            let deadline = deadline_after(&caller, timeout_ns);
            let call = BlockingCall::TcpWrite {
                socket: socket_number(socket),
                bytes,
                length,
            };
            Ok(result_i32(blocking_call(
                &mut caller,
                call,
                deadline,
                arrival,
            )?))
        },
    )?;
    functions.func_wrap(
        "tcp_shutdown",
        |mut caller: Caller<'_, HostState>, socket: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let state = caller.data_mut();
            let result = net_calls::shutdown_write(state, socket_number(socket));
            fuel::settle(&mut caller)?;
            Ok(match result {
                Ok(()) => StatusCode::Ok.code(),
                Err(error) => error.status().code(),
            })
        },
    )?;
    functions.func_wrap(
        "tcp_close",
        |mut caller: Caller<'_, HostState>, socket: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let result = net_calls::close(caller.data_mut(), socket_number(socket));
            fuel::settle(&mut caller)?;
            Ok(match result {
                Ok(()) => StatusCode::Ok.code(),
                Err(error) => error.status().code(),
            })
        },
    )?;
    functions.func_wrap(
        "net_poll",
        |mut caller: Caller<'_, HostState>,
         entries: i32,
         count: i32,
         timeout_ns: i64|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberNetPoll)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            // Bounded before anything is read, and charged before the scan.
            if count < 0 || count as usize > MAX_POLL_ENTRIES {
                return Ok(StatusCode::TooLarge.negated());
            }
            fuel::charge(&mut caller, (count as u64).saturating_mul(fuel::POLL_ENTRY))?;
            let memory = memory_of(&caller)?;
            let (bytes, state) = memory.data_and_store_mut(&mut caller);
            // count <= MAX_POLL_ENTRIES, so count * 8 fits.
            guest_memory::slice(bytes, "net_poll", entries, count * 8).map_err(trap)?;
            state.poll_interest.clear();
            for index in 0..count {
                let base = entries.wrapping_add(index * 8);
                let socket = guest_memory::read_u32(bytes, "net_poll", base).map_err(trap)?;
                let interest = guest_memory::slice(bytes, "net_poll", base.wrapping_add(4), 2)
                    .map_err(trap)?;
                let interest = u16::from_le_bytes([interest[0], interest[1]]);
                // Also when a restored guest polls a socket the record did
                // not keep: `enter` has ended its rewind, so it hears this.
                if state.sockets.get(socket).is_none() {
                    state.poll_interest.clear();
                    return Ok(StatusCode::NoSuchSocket.negated());
                }
                state.poll_interest.push(PollInterest { socket, interest });
            }
            let deadline = deadline_after(&caller, timeout_ns);
            let call = BlockingCall::NetPoll { entries, count };
            Ok(result_i32(blocking_call(
                &mut caller,
                call,
                deadline,
                arrival,
            )?))
        },
    )?;
    Ok(())
}

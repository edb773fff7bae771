//! The `amber` import module: Amber's own host calls.
//!
//! Names, signatures and status codes are the abi crate's (`abi::IMPORTS`,
//! `abi::StatusCode`; guest-sdk/README.md explains each call), and a test
//! holds what this module defines against that list. Every pointer is
//! checked (guest_memory.rs), and every call charges fuel for its work
//! (fuel.rs).

use alloc::format;
use alloc::vec::Vec;

use wasmi::{Caller, Memory, Val};

use crate::blocking::{BlockingCall, Request, blocking_call, enter, trap};
use crate::error::TrapReason;
use crate::guest_memory;
use crate::host_functions::HostFunctions;
use crate::host_state::HostState;
use crate::platform::{LogLevel, Stream};
use crate::storage::BlockingImport;
use crate::{fuel, output};
use abi::{MAX_MESSAGE_BYTES, MAX_NAME_BYTES, StatusCode};

type Result<T> = core::result::Result<T, wasmi::Error>;

/// The domain's memory, which every host call needs.
pub(crate) fn memory_of(caller: &Caller<'_, HostState>) -> Result<Memory> {
    caller.data().memory.ok_or_else(|| {
        trap(TrapReason::BadArgument {
            call: "host call",
            detail: "the domain has no memory",
        })
    })
}

pub(crate) fn result_i32(value: Option<Val>) -> i32 {
    match value {
        Some(Val::I32(value)) => value,
        _ => 0,
    }
}

/// Domain-clock deadline `timeout_ns` from now; negative waits forever.
pub(crate) fn deadline_after(caller: &Caller<'_, HostState>, timeout_ns: i64) -> Option<u64> {
    u64::try_from(timeout_ns)
        .ok()
        .map(|timeout| caller.data().now_ns().saturating_add(timeout))
}

/// Adds the `amber` functions.
pub(crate) fn define(functions: &mut HostFunctions<'_>) -> Result<()> {
    functions.func_wrap(
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, pointer: i32, length: i32| -> Result<()> {
            let memory = memory_of(&caller)?;
            let message =
                guest_memory::slice(memory.data(&caller), "log", pointer, length).map_err(trap)?;
            // Bounded before anything is printed, and charged for it.
            let shown_len = output::log_shown_len(message);
            let is_cut = shown_len < message.len();
            let lines = message[..shown_len]
                .iter()
                .filter(|&&byte| byte == b'\n')
                .count()
                + 1
                + usize::from(is_cut);
            let escapable = output::escapable_bytes(&message[..shown_len]) as u64;
            let cost = fuel::CALL
                .saturating_add((shown_len as u64).saturating_mul(fuel::OUTPUT_BYTE))
                .saturating_add(escapable.saturating_mul(fuel::ESCAPED_BYTE))
                .saturating_add((lines as u64).saturating_mul(fuel::OUTPUT_LINE));
            fuel::charge(&mut caller, cost)?;
            let (bytes, state) = memory.data_and_store_mut(&mut caller);
            let message = guest_memory::slice(bytes, "log", pointer, length).map_err(trap)?;
            let stream = Stream::Log(LogLevel::from_abi(level));
            let (shown, cut) = message.split_at(shown_len);
            // One call is one line: split embedded newlines so prefixes stay right.
            for line in shown.split(|&byte| byte == b'\n') {
                state.print_line(stream, line);
            }
            if is_cut {
                let note = format!("(log message cut: {} more bytes)", cut.len());
                state.print_line(stream, note.as_bytes());
            }
            Ok(())
        },
    )?;
    functions.func_wrap(
        "generation",
        |mut caller: Caller<'_, HostState>| -> Result<i64> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let environment = caller
                .data()
                .environment
                .iter()
                .map(alloc::string::String::as_str);
            Ok(abi::generation(environment) as i64)
        },
    )?;
    functions.func_wrap("now", |mut caller: Caller<'_, HostState>| -> Result<i64> {
        fuel::charge(&mut caller, fuel::CALL)?;
        Ok(caller.data().now_ns() as i64)
    })?;
    functions.func_wrap(
        "sleep",
        |mut caller: Caller<'_, HostState>, duration_ns: i64| -> Result<()> {
            let arrival = enter(&mut caller, BlockingImport::AmberSleep)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            let deadline = deadline_after(&caller, duration_ns.max(0));
            blocking_call(&mut caller, BlockingCall::Sleep, deadline, arrival)?;
            Ok(())
        },
    )?;
    functions.func_wrap("yield", |mut caller: Caller<'_, HostState>| -> Result<()> {
        let arrival = enter(&mut caller, BlockingImport::AmberYield)?;
        fuel::charge(&mut caller, fuel::CALL)?;
        blocking_call(&mut caller, BlockingCall::Yield, None, arrival)?;
        Ok(())
    })?;
    functions.func_wrap(
        "random",
        |mut caller: Caller<'_, HostState>, pointer: i32, length: i32| -> Result<()> {
            let memory = memory_of(&caller)?;
            guest_memory::slice(memory.data(&caller), "random", pointer, length).map_err(trap)?;
            let cost = fuel::CALL.saturating_add(fuel::random(length as u32 as usize));
            fuel::charge(&mut caller, cost)?;
            let (bytes, state) = memory.data_and_store_mut(&mut caller);
            let target = guest_memory::slice_mut(bytes, "random", pointer, length).map_err(trap)?;
            state.platform.fill_random(target);
            Ok(())
        },
    )?;
    functions.func_wrap(
        "self_id",
        |mut caller: Caller<'_, HostState>, pointer: i32| -> Result<()> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let memory = memory_of(&caller)?;
            let (bytes, state) = memory.data_and_store_mut(&mut caller);
            let id = state.id.to_le_bytes();
            guest_memory::write(bytes, "self_id", pointer, &id).map_err(trap)
        },
    )?;
    functions.func_wrap(
        "checkpoint",
        |mut caller: Caller<'_, HostState>| -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberCheckpoint)?;
            // The commit's work is charged when it is done (Domain).
            fuel::charge(&mut caller, fuel::CALL)?;
            Ok(result_i32(blocking_call(
                &mut caller,
                BlockingCall::Checkpoint,
                None,
                arrival,
            )?))
        },
    )?;
    functions.func_wrap(
        "exit",
        |_caller: Caller<'_, HostState>, code: i32| -> Result<()> {
            Err(wasmi::Error::host(Request::Exit(code)))
        },
    )?;
    functions.func_wrap(
        "send",
        |mut caller: Caller<'_, HostState>,
         name_pointer: i32,
         name_length: i32,
         message_pointer: i32,
         message_length: i32|
         -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            let memory = memory_of(&caller)?;
            let bytes = memory.data(&caller);
            let name =
                guest_memory::slice(bytes, "send", name_pointer, name_length).map_err(trap)?;
            let message = guest_memory::slice(bytes, "send", message_pointer, message_length)
                .map_err(trap)?;
            if name.len() > MAX_NAME_BYTES || message.len() > MAX_MESSAGE_BYTES {
                return Ok(StatusCode::TooLarge.code());
            }
            // The delivery is charged before it is asked for: the name is
            // looked up, the message copied into the request, the outbox
            // and the mailbox.
            let copied = name.len().saturating_add(message.len().saturating_mul(3));
            let (name, message) = (Vec::from(name), Vec::from(message));
            fuel::charge(
                &mut caller,
                fuel::MESSAGE.saturating_add(fuel::copy(copied)),
            )?;
            Err(wasmi::Error::host(Request::Send {
                target: name,
                message,
            }))
        },
    )?;
    functions.func_wrap(
        "recv",
        |mut caller: Caller<'_, HostState>,
         buffer: i32,
         capacity: i32,
         from: i32,
         timeout_ns: i64|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::AmberRecv)?;
            // The message's copy is charged when it is taken (blocking.rs).
            fuel::charge(&mut caller, fuel::CALL)?;
            // Check the buffers now, so a bad pointer traps at the call and
            // not later when a message arrives.
            let memory = memory_of(&caller)?;
            let bytes = memory.data(&caller);
            guest_memory::slice(bytes, "recv", buffer, capacity).map_err(trap)?;
            guest_memory::slice(bytes, "recv", from, 16).map_err(trap)?;
            let deadline = deadline_after(&caller, timeout_ns);
            let call = BlockingCall::Recv {
                buffer,
                capacity,
                from,
            };
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

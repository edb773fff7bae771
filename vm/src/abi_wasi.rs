//! The wasi_snapshot_preview1 subset that lets ordinary `std` Rust run.
//!
//! Implemented: fd_write to 1 and 2 (at most 4 KiB per call: a short write),
//! fd_read of 0 (end of file), proc_exit, clock_time_get, clock_res_get,
//! random_get, args_*, environ_*, sched_yield, poll_oneoff with clock
//! subscriptions, fd_fdstat_get of 0-2 and fd_prestat_get (no preopens:
//! EBADF, which ends libc's preopen scan).
//! Every other function a module imports from this module is linked to a stub
//! returning ENOSYS (see `stub_unknown_imports`), so any wasip1 program
//! instantiates. Signatures follow the witx of wasi_snapshot_preview1.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use wasmi::{Caller, Linker, Module, Val};

use abi::WASI_MODULE as MODULE;

use crate::abi_amber::{charge_fuel, memory_of};
use crate::blocking::{BlockingCall, Request, blocking_call, trap};
use crate::error::TrapReason;
use crate::guest_memory;
use crate::host_functions::HostFunctions;
use crate::host_state::HostState;
use crate::platform::Stream;
use abi::{MAX_OUTPUT_BYTES_PER_CALL, OUTPUT_FUEL_PER_BYTE, errno};

type Result<T> = core::result::Result<T, wasmi::Error>;

const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;
const CLOCK_PROCESS_CPUTIME: i32 = 2;
const CLOCK_THREAD_CPUTIME: i32 = 3;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;

/// Adds the implemented WASI functions: exactly the WASI part of
/// `abi::IMPORTS`, which `stub_unknown_imports` relies on.
pub(crate) fn define(functions: &mut HostFunctions<'_>) -> Result<()> {
    functions.func_wrap("fd_write", fd_write)?;
    functions.func_wrap(
        "fd_read",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         _iovs: i32,
         _count: i32,
         read: i32|
         -> Result<i32> {
            if fd != 0 {
                return Ok(errno::BADF);
            }
            // Domains have no input stream: standard input is at its end.
            let memory = memory_of(&caller)?;
            guest_memory::write_u32(memory.data_mut(&mut caller), "fd_read", read, 0)
                .map_err(trap)?;
            Ok(errno::SUCCESS)
        },
    )?;
    functions.func_wrap(
        "proc_exit",
        |_caller: Caller<'_, HostState>, code: i32| -> Result<()> {
            Err(wasmi::Error::host(Request::Exit(code)))
        },
    )?;
    functions.func_wrap(
        "clock_time_get",
        |mut caller: Caller<'_, HostState>,
         clock: i32,
         _precision: i64,
         time: i32|
         -> Result<i32> {
            let now = match clock {
                CLOCK_REALTIME => caller.data().platform.realtime_ns(),
                CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => {
                    caller.data().now_ns()
                }
                _ => return Ok(errno::INVAL),
            };
            let memory = memory_of(&caller)?;
            guest_memory::write_u64(memory.data_mut(&mut caller), "clock_time_get", time, now)
                .map_err(trap)?;
            Ok(errno::SUCCESS)
        },
    )?;
    functions.func_wrap(
        "clock_res_get",
        |mut caller: Caller<'_, HostState>, clock: i32, resolution: i32| -> Result<i32> {
            if !(0..=3).contains(&clock) {
                return Ok(errno::INVAL);
            }
            let memory = memory_of(&caller)?;
            guest_memory::write_u64(memory.data_mut(&mut caller), "clock_res_get", resolution, 1)
                .map_err(trap)?;
            Ok(errno::SUCCESS)
        },
    )?;
    functions.func_wrap(
        "random_get",
        |mut caller: Caller<'_, HostState>, pointer: i32, length: i32| -> Result<i32> {
            let memory = memory_of(&caller)?;
            let (bytes, state) = memory.data_and_store_mut(&mut caller);
            let target =
                guest_memory::slice_mut(bytes, "random_get", pointer, length).map_err(trap)?;
            state.platform.fill_random(target);
            Ok(errno::SUCCESS)
        },
    )?;
    functions.func_wrap(
        "args_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, buffer_size: i32| -> Result<i32> {
            let strings = arguments(caller.data());
            sizes_get(&mut caller, "args_sizes_get", &strings, count, buffer_size)
        },
    )?;
    functions.func_wrap(
        "args_get",
        |mut caller: Caller<'_, HostState>, pointers: i32, buffer: i32| -> Result<i32> {
            let strings = arguments(caller.data());
            strings_get(&mut caller, "args_get", &strings, pointers, buffer)
        },
    )?;
    functions.func_wrap(
        "environ_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, buffer_size: i32| -> Result<i32> {
            let strings = caller.data().environment.clone();
            sizes_get(
                &mut caller,
                "environ_sizes_get",
                &strings,
                count,
                buffer_size,
            )
        },
    )?;
    functions.func_wrap(
        "environ_get",
        |mut caller: Caller<'_, HostState>, pointers: i32, buffer: i32| -> Result<i32> {
            let strings = caller.data().environment.clone();
            strings_get(&mut caller, "environ_get", &strings, pointers, buffer)
        },
    )?;
    functions.func_wrap(
        "sched_yield",
        |mut caller: Caller<'_, HostState>| -> Result<i32> {
            let result = blocking_call(&mut caller, BlockingCall::SchedYield, None)?;
            Ok(match result {
                Some(Val::I32(value)) => value,
                _ => errno::SUCCESS,
            })
        },
    )?;
    functions.func_wrap(
        "poll_oneoff",
        |mut caller: Caller<'_, HostState>,
         subscriptions: i32,
         events: i32,
         count: i32,
         events_written: i32|
         -> Result<i32> {
            if count == 0 {
                return Ok(errno::INVAL);
            }
            let memory = memory_of(&caller)?;
            let deadline = crate::wasi_poll::deadline_ns(
                memory.data(&caller),
                caller.data(),
                subscriptions,
                count,
            )
            .map_err(trap)?;
            let call = BlockingCall::PollOneoff {
                subscriptions,
                events,
                count,
                events_written,
            };
            Ok(match blocking_call(&mut caller, call, deadline)? {
                Some(Val::I32(value)) => value,
                _ => errno::SUCCESS,
            })
        },
    )?;
    functions.func_wrap(
        "fd_fdstat_get",
        |mut caller: Caller<'_, HostState>, fd: i32, stat: i32| -> Result<i32> {
            if !(0..=2).contains(&fd) {
                return Ok(errno::BADF);
            }
            // fdstat: filetype u8 @0, flags u16 @2, rights_base u64 @8,
            // rights_inheriting u64 @16.
            let mut bytes = [0u8; 24];
            bytes[0] = FILETYPE_CHARACTER_DEVICE;
            bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            let memory = memory_of(&caller)?;
            guest_memory::write(memory.data_mut(&mut caller), "fd_fdstat_get", stat, &bytes)
                .map_err(trap)?;
            Ok(errno::SUCCESS)
        },
    )?;
    functions.func_wrap(
        "fd_prestat_get",
        |_caller: Caller<'_, HostState>, _fd: i32, _prestat: i32| -> i32 { errno::BADF },
    )?;
    functions.func_wrap(
        "fd_seek",
        |_caller: Caller<'_, HostState>,
         fd: i32,
         _offset: i64,
         _whence: i32,
         _position: i32|
         -> i32 {
            // The standard streams are not seekable.
            if (0..=2).contains(&fd) {
                errno::SPIPE
            } else {
                errno::BADF
            }
        },
    )?;
    functions.func_wrap(
        "fd_prestat_dir_name",
        |_caller: Caller<'_, HostState>, _fd: i32, _path: i32, _length: i32| -> i32 { errno::BADF },
    )?;
    functions.func_wrap(
        "fd_close",
        |_caller: Caller<'_, HostState>, fd: i32| -> i32 {
            if (0..=2).contains(&fd) {
                errno::SUCCESS
            } else {
                errno::BADF
            }
        },
    )?;
    Ok(())
}

fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    count: i32,
    written: i32,
) -> Result<i32> {
    const CALL: &str = "fd_write";
    let stream = match fd {
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        _ => return Ok(errno::BADF),
    };
    let memory = memory_of(&caller)?;
    let (bytes, state) = memory.data_and_store_mut(&mut caller);
    // At most MAX_OUTPUT_BYTES_PER_CALL per call: a short write, which the
    // guest sees in `written` (std's write_all simply writes the rest next).
    let mut total: usize = 0;
    let mut iovecs_read: u64 = 0;
    // An iovec is {buf: u32, buf_len: u32}.
    for index in 0..count.max(0) {
        if total == MAX_OUTPUT_BYTES_PER_CALL {
            break;
        }
        let iov = iovs.wrapping_add(index.wrapping_mul(8));
        let pointer = guest_memory::read_u32(bytes, CALL, iov).map_err(trap)?;
        let length = guest_memory::read_u32(bytes, CALL, iov.wrapping_add(4)).map_err(trap)?;
        let data = guest_memory::slice(bytes, CALL, pointer as i32, length as i32).map_err(trap)?;
        let taken = &data[..data.len().min(MAX_OUTPUT_BYTES_PER_CALL - total)];
        state.write_output(stream, taken);
        total += taken.len();
        iovecs_read += 1;
    }
    // total <= MAX_OUTPUT_BYTES_PER_CALL, far below u32::MAX.
    guest_memory::write_u32(bytes, CALL, written, total as u32).map_err(trap)?;
    let printed = total as u64;
    charge_fuel(
        &mut caller,
        printed
            .saturating_mul(OUTPUT_FUEL_PER_BYTE)
            .saturating_add(iovecs_read),
    )?;
    Ok(errno::SUCCESS)
}

/// argv: the domain name, then the image's arguments.
fn arguments(state: &HostState) -> Vec<String> {
    let mut strings = Vec::with_capacity(state.args.len() + 1);
    strings.push(state.name.clone());
    strings.extend(state.args.iter().cloned());
    strings
}

fn sizes_get(
    caller: &mut Caller<'_, HostState>,
    call: &'static str,
    strings: &[String],
    count: i32,
    buffer_size: i32,
) -> Result<i32> {
    let total: usize = strings.iter().map(|string| string.len() + 1).sum();
    let memory = memory_of(caller)?;
    let bytes = memory.data_mut(&mut *caller);
    guest_memory::write_u32(bytes, call, count, strings.len() as u32).map_err(trap)?;
    guest_memory::write_u32(bytes, call, buffer_size, total as u32).map_err(trap)?;
    Ok(errno::SUCCESS)
}

fn strings_get(
    caller: &mut Caller<'_, HostState>,
    call: &'static str,
    strings: &[String],
    pointers: i32,
    buffer: i32,
) -> Result<i32> {
    let memory = memory_of(caller)?;
    let bytes = memory.data_mut(&mut *caller);
    let mut cursor = buffer;
    for (index, string) in strings.iter().enumerate() {
        let slot = pointers.wrapping_add((index as i32).wrapping_mul(4));
        guest_memory::write_u32(bytes, call, slot, cursor as u32).map_err(trap)?;
        guest_memory::write(bytes, call, cursor, string.as_bytes()).map_err(trap)?;
        let terminator = cursor.wrapping_add(string.len() as i32);
        guest_memory::write(bytes, call, terminator, &[0]).map_err(trap)?;
        cursor = terminator.wrapping_add(1);
    }
    Ok(errno::SUCCESS)
}

/// Links every WASI function `module` imports that the subset lacks to a stub
/// returning ENOSYS (or trapping with a clear reason, for the rare signature
/// without an errno result).
pub fn stub_unknown_imports(linker: &mut Linker<HostState>, module: &Module) -> Result<()> {
    let mut missing = Vec::new();
    for import in module.imports() {
        if import.module() != MODULE {
            continue;
        }
        if let wasmi::ExternType::Func(func_type) = import.ty()
            && abi::find_import(MODULE, import.name()).is_none()
        {
            missing.push((String::from(import.name()), func_type.clone()));
        }
    }
    for (name, func_type) in missing {
        let returns_errno = func_type.results() == [wasmi::ValType::I32];
        let trap_name = format!("{MODULE}.{name}");
        linker.func_new(
            MODULE,
            &name,
            func_type,
            move |_caller, _params, results| {
                if returns_errno {
                    results[0] = Val::I32(errno::NOSYS);
                    Ok(())
                } else {
                    Err(trap(TrapReason::Unsupported(trap_name.clone())))
                }
            },
        )?;
    }
    Ok(())
}

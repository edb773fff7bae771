//! The wasi_snapshot_preview1 subset that lets ordinary `std` Rust run.
//!
//! Implemented: fd_write to 1 and 2 (at most 4 KiB, 64 lines and
//! [`MAX_IOVECS_PER_CALL`] iovecs per call: a short write),
//! fd_read of 0 (end of file), proc_exit, clock_time_get, clock_res_get,
//! random_get, args_*, environ_*, sched_yield, poll_oneoff with clock and
//! socket subscriptions (at most [`MAX_SUBSCRIPTIONS_PER_CALL`]),
//! fd_fdstat_get of 0-2 and of sockets, fd_prestat_get (no preopens:
//! EBADF, which ends libc's preopen scan), and the socket calls of
//! wasi_sockets.rs (fd_read, fd_write and fd_close on socket fds too).
//! Every other function a module imports from this module is linked to a stub
//! returning ENOSYS (see `stub_unknown_imports`), so any wasip1 program
//! instantiates. Signatures follow the witx of wasi_snapshot_preview1.
//! Every function charges fuel for its work (fuel.rs).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use wasmi::{Caller, Linker, Module, Val};

use abi::WASI_MODULE as MODULE;

use crate::abi_amber::memory_of;
use crate::blocking::{BlockingCall, Request, WasiStreamCall, blocking_call, enter, trap};
use crate::error::TrapReason;
use crate::guest_memory;
use crate::host_functions::HostFunctions;
use crate::host_state::HostState;
use crate::platform::Stream;
use crate::storage::BlockingImport;
use crate::{fuel, output, wasi_sockets};
use abi::{MAX_OUTPUT_BYTES_PER_CALL, errno};

type Result<T> = core::result::Result<T, wasmi::Error>;

const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;
const CLOCK_PROCESS_CPUTIME: i32 = 2;
const CLOCK_THREAD_CPUTIME: i32 = 3;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;

/// The most iovecs one `fd_write` reads (POSIX's `IOV_MAX` on Linux): the
/// rest of a longer list is not read, a short write. 8.4 million
/// zero-length iovecs once took 109 ms in one call.
pub const MAX_IOVECS_PER_CALL: usize = 1024;

/// The most subscriptions one `poll_oneoff` takes; more is `EINVAL` (as
/// POSIX `poll` with more descriptors than a process may have). 1.3
/// million once took 82 ms over three calls.
pub const MAX_SUBSCRIPTIONS_PER_CALL: usize = 1024;

/// Adds the implemented WASI functions: exactly the WASI part of
/// `abi::IMPORTS`, which `stub_unknown_imports` relies on.
pub(crate) fn define(functions: &mut HostFunctions<'_>) -> Result<()> {
    functions.func_wrap("fd_write", fd_write)?;
    functions.func_wrap(
        "fd_read",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         iovs: i32,
         count: i32,
         read: i32|
         -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::WasiFdRead)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            if wasi_sockets::is_socket(caller.data(), fd) {
                let via = WasiStreamCall::Fd;
                return wasi_sockets::receive(&mut caller, arrival, via, fd, iovs, count, read, 0);
            }
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
            fuel::charge(&mut caller, fuel::CALL)?;
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
            fuel::charge(&mut caller, fuel::CALL)?;
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
            guest_memory::slice(memory.data(&caller), "random_get", pointer, length)
                .map_err(trap)?;
            let cost = fuel::CALL.saturating_add(fuel::random(length as u32 as usize));
            fuel::charge(&mut caller, cost)?;
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
            charge_strings(&mut caller, StringList::Arguments)?;
            let strings = arguments(caller.data());
            sizes_get(&mut caller, "args_sizes_get", &strings, count, buffer_size)
        },
    )?;
    functions.func_wrap(
        "args_get",
        |mut caller: Caller<'_, HostState>, pointers: i32, buffer: i32| -> Result<i32> {
            charge_strings(&mut caller, StringList::Arguments)?;
            let strings = arguments(caller.data());
            strings_get(&mut caller, "args_get", &strings, pointers, buffer)
        },
    )?;
    functions.func_wrap(
        "environ_sizes_get",
        |mut caller: Caller<'_, HostState>, count: i32, buffer_size: i32| -> Result<i32> {
            charge_strings(&mut caller, StringList::Environment)?;
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
            charge_strings(&mut caller, StringList::Environment)?;
            let strings = caller.data().environment.clone();
            strings_get(&mut caller, "environ_get", &strings, pointers, buffer)
        },
    )?;
    functions.func_wrap(
        "sched_yield",
        |mut caller: Caller<'_, HostState>| -> Result<i32> {
            let arrival = enter(&mut caller, BlockingImport::WasiSchedYield)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            let result = blocking_call(&mut caller, BlockingCall::SchedYield, None, arrival)?;
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
            let arrival = enter(&mut caller, BlockingImport::WasiPollOneoff)?;
            fuel::charge(&mut caller, fuel::CALL)?;
            if count == 0 || count as u32 as usize > MAX_SUBSCRIPTIONS_PER_CALL {
                return Ok(errno::INVAL);
            }
            // Bounded, so charged before the scan; writing the events is
            // charged when the call completes (blocking.rs).
            let scan = (count as u64).saturating_mul(fuel::SUBSCRIPTION);
            fuel::charge(&mut caller, scan)?;
            let memory = memory_of(&caller)?;
            let (bytes, state) = memory.data_and_store_mut(&mut caller);
            let deadline =
                crate::wasi_poll::deadline_ns(bytes, state, subscriptions, count).map_err(trap)?;
            let call = BlockingCall::PollOneoff {
                subscriptions,
                events,
                count,
                events_written,
            };
            Ok(match blocking_call(&mut caller, call, deadline, arrival)? {
                Some(Val::I32(value)) => value,
                _ => errno::SUCCESS,
            })
        },
    )?;
    functions.func_wrap(
        "fd_fdstat_get",
        |mut caller: Caller<'_, HostState>, fd: i32, stat: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            if wasi_sockets::is_socket(caller.data(), fd) {
                return wasi_sockets::fdstat(&mut caller, fd, stat);
            }
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
        |mut caller: Caller<'_, HostState>, _fd: i32, _prestat: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            Ok(errno::BADF)
        },
    )?;
    functions.func_wrap(
        "fd_seek",
        |mut caller: Caller<'_, HostState>,
         fd: i32,
         _offset: i64,
         _whence: i32,
         _position: i32|
         -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            // The standard streams are not seekable.
            Ok(if (0..=2).contains(&fd) {
                errno::SPIPE
            } else {
                errno::BADF
            })
        },
    )?;
    functions.func_wrap(
        "fd_prestat_dir_name",
        |mut caller: Caller<'_, HostState>, _fd: i32, _path: i32, _length: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            Ok(errno::BADF)
        },
    )?;
    functions.func_wrap(
        "fd_close",
        |mut caller: Caller<'_, HostState>, fd: i32| -> Result<i32> {
            fuel::charge(&mut caller, fuel::CALL)?;
            if wasi_sockets::is_socket(caller.data(), fd) {
                return wasi_sockets::close(&mut caller, fd);
            }
            Ok(if (0..=2).contains(&fd) {
                errno::SUCCESS
            } else {
                errno::BADF
            })
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
    let arrival = enter(&mut caller, BlockingImport::WasiFdWrite)?;
    fuel::charge(&mut caller, fuel::CALL)?;
    let stream = match fd {
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        _ if wasi_sockets::is_socket(caller.data(), fd) => {
            let via = WasiStreamCall::Fd;
            return wasi_sockets::send(&mut caller, arrival, via, fd, iovs, count, written);
        }
        _ => return Ok(errno::BADF),
    };
    // Bounded before it is read, and charged before: the iovecs it reads.
    let iovec_count = (count.max(0) as usize).min(MAX_IOVECS_PER_CALL);
    fuel::charge(
        &mut caller,
        (iovec_count as u64).saturating_mul(fuel::IOVEC),
    )?;
    let memory = memory_of(&caller)?;
    // At most MAX_OUTPUT_BYTES_PER_CALL and MAX_OUTPUT_LINES_PER_CALL per
    // call: a short write, which the guest sees in `written` (std's
    // write_all simply writes the rest next).
    let mut taken: Vec<u8> = Vec::new();
    let mut lines_left = output::MAX_OUTPUT_LINES_PER_CALL;
    let mut is_bounded = false;
    let bytes = memory.data(&caller);
    // An iovec is {buf: u32, buf_len: u32}.
    for index in 0..iovec_count {
        if taken.len() == MAX_OUTPUT_BYTES_PER_CALL || lines_left == 0 {
            is_bounded = true;
            break;
        }
        let iov = iovs.wrapping_add((index as i32).wrapping_mul(8));
        let pointer = guest_memory::read_u32(bytes, CALL, iov).map_err(trap)?;
        let length = guest_memory::read_u32(bytes, CALL, iov.wrapping_add(4)).map_err(trap)?;
        let data = guest_memory::slice(bytes, CALL, pointer as i32, length as i32).map_err(trap)?;
        let piece = &data[..data.len().min(MAX_OUTPUT_BYTES_PER_CALL - taken.len())];
        let piece = match output::nth_line_break(piece, lines_left) {
            Some(end) => {
                lines_left = 0;
                &piece[..=end]
            }
            None => {
                lines_left -= piece.iter().filter(|&&byte| byte == b'\n').count();
                piece
            }
        };
        taken.extend_from_slice(piece);
    }
    let lines_ended = output::MAX_OUTPUT_LINES_PER_CALL - lines_left;
    let escapable = output::escapable_bytes(&taken) as u64;
    let cost = (taken.len() as u64)
        .saturating_mul(fuel::OUTPUT_BYTE)
        .saturating_add(escapable.saturating_mul(fuel::ESCAPED_BYTE))
        .saturating_add((lines_ended as u64).saturating_mul(fuel::OUTPUT_LINE));
    fuel::charge(&mut caller, cost)?;
    let (bytes, state) = memory.data_and_store_mut(&mut caller);
    state.write_output(stream, &taken);
    if !is_bounded && count.max(0) as usize > iovec_count {
        check_unread_iovecs(bytes, iovs, count, iovec_count).map_err(trap)?;
    }
    // taken.len() <= MAX_OUTPUT_BYTES_PER_CALL, far below u32::MAX.
    guest_memory::write_u32(bytes, CALL, written, taken.len() as u32).map_err(trap)?;
    Ok(errno::SUCCESS)
}

/// Traps if the iovecs past the first `read` of `count` at `iovs` leave
/// memory, naming the first word outside as reading them one by one would
/// (as `fd_write` did before it read at most [`MAX_IOVECS_PER_CALL`]): a
/// list that runs off memory is a wild pointer, however long. O(1): only
/// the list's end is checked, not the unread iovecs' buffers.
fn check_unread_iovecs(
    memory: &[u8],
    iovs: i32,
    count: i32,
    read: usize,
) -> core::result::Result<(), TrapReason> {
    const CALL: &str = "fd_write";
    let start = u64::from(iovs as u32);
    let memory_len = memory.len() as u64;
    let end = start.saturating_add(u64::from(count as u32).saturating_mul(8));
    if end <= memory_len {
        return Ok(());
    }
    // The first iovec whose 8 bytes do not all lie in memory (the `read`
    // before it did); past 4 GiB the old reading wrapped around instead.
    let first_outside =
        (memory_len.saturating_sub(start).saturating_sub(8) / 8 + 1).max(read as u64);
    let iov = start + first_outside * 8;
    if iov > u64::from(u32::MAX) {
        return Ok(());
    }
    guest_memory::read_u32(memory, CALL, iov as i32)?;
    guest_memory::read_u32(memory, CALL, (iov + 4) as i32)?;
    Ok(())
}

/// Which strings an `args_*` or `environ_*` call copies.
#[derive(Debug, Clone, Copy)]
enum StringList {
    Arguments,
    Environment,
}

/// Charges a call that copies a string list twice (out of the domain's
/// state, into guest memory) before it does.
fn charge_strings(caller: &mut Caller<'_, HostState>, list: StringList) -> Result<()> {
    let state = caller.data();
    let len_bytes: usize = match list {
        StringList::Arguments => {
            state.name.len() + state.args.iter().map(String::len).sum::<usize>()
        }
        StringList::Environment => state.environment.iter().map(String::len).sum(),
    };
    let cost = fuel::CALL.saturating_add(fuel::copy(len_bytes.saturating_mul(2)));
    fuel::charge(caller, cost)
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
            move |mut caller, _params, results| {
                fuel::charge(&mut caller, fuel::CALL)?;
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

//! Unwinding and rewinding a guest stack with binaryen's asyncify exports.
//!
//! Protocol (binaryen's Asyncify pass, tried with binaryen 108): at a blocking
//! import the host calls `asyncify_start_unwind(buffer)` and returns; every
//! instrumented frame saves itself into the buffer and returns, so the entry
//! export returns normally and the host calls `asyncify_stop_unwind`. To go on,
//! the host calls `asyncify_start_rewind(buffer)` and the entry export again;
//! the frames restore themselves and re-enter the same import, which calls
//! `asyncify_stop_rewind` and returns its result as if nothing had happened.
//! `buffer` points at `{current: u32, end: u32}` followed by the save area.

use wasmi::{AsContextMut, Instance, TypedFunc};

use crate::error::TrapReason;
use crate::guest_memory;
use crate::memory_backing::WASM_PAGE_BYTES;

/// The five functions asyncify adds to a module.
#[derive(Debug, Clone, Copy)]
pub struct AsyncifyExports {
    start_unwind: TypedFunc<i32, ()>,
    stop_unwind: TypedFunc<(), ()>,
    start_rewind: TypedFunc<i32, ()>,
    stop_rewind: TypedFunc<(), ()>,
}

/// Fuel added for the few instructions of an asyncify control export that the
/// host calls itself, so that they never run out mid-way.
const CONTROL_FUEL: u64 = 10_000;

impl AsyncifyExports {
    /// The exports of an asyncified instance, or `None` if it was not built so.
    pub fn find(store: impl AsContextMut, instance: &Instance) -> Option<Self> {
        let store = store.as_context();
        Some(Self {
            start_unwind: instance
                .get_typed_func(store, "asyncify_start_unwind")
                .ok()?,
            stop_unwind: instance
                .get_typed_func(store, "asyncify_stop_unwind")
                .ok()?,
            start_rewind: instance
                .get_typed_func(store, "asyncify_start_rewind")
                .ok()?,
            stop_rewind: instance
                .get_typed_func(store, "asyncify_stop_rewind")
                .ok()?,
        })
    }

    /// Starts unwinding into `buffer`, resetting its header first.
    pub fn start_unwind(
        &self,
        mut store: impl AsContextMut,
        memory: wasmi::Memory,
        buffer: u32,
    ) -> Result<(), TrapReason> {
        let end = buffer as u64 + WASM_PAGE_BYTES as u64;
        let header_end = buffer
            .checked_add(8)
            .ok_or_else(|| asyncify_trap("save buffer address overflows"))?;
        {
            let bytes = memory.data_mut(&mut store);
            guest_memory::write_u32(bytes, "asyncify", buffer as i32, header_end)?;
            let end = u32::try_from(end)
                .map_err(|_| asyncify_trap("save buffer leaves 32-bit memory"))?;
            guest_memory::write_u32(bytes, "asyncify", (buffer + 4) as i32, end)?;
        }
        with_fuel(&mut store, |store| {
            self.start_unwind.call(store, buffer as i32)
        })
    }

    /// Ends an unwind once the entry export has returned.
    pub fn stop_unwind(&self, mut store: impl AsContextMut) -> Result<(), TrapReason> {
        with_fuel(&mut store, |store| self.stop_unwind.call(store, ()))
    }

    /// Starts rewinding from `buffer`; the caller then calls the entry export.
    pub fn start_rewind(
        &self,
        mut store: impl AsContextMut,
        buffer: u32,
    ) -> Result<(), TrapReason> {
        with_fuel(&mut store, |store| {
            self.start_rewind.call(store, buffer as i32)
        })
    }

    /// Ends a rewind inside the re-entered import.
    pub fn stop_rewind(&self, mut store: impl AsContextMut) -> Result<(), TrapReason> {
        with_fuel(&mut store, |store| self.stop_rewind.call(store, ()))
    }
}

/// Grows memory by one Wasm page for the save area and returns its address.
/// Allocators take memory only through `memory.grow`, so none will use it.
pub fn grow_save_buffer(
    mut store: impl AsContextMut,
    memory: wasmi::Memory,
) -> Result<u32, TrapReason> {
    let old_pages = memory
        .grow(&mut store, 1)
        .map_err(|_| asyncify_trap("memory is at its maximum; no room for the save area"))?;
    let address = old_pages
        .checked_mul(WASM_PAGE_BYTES as u64)
        .and_then(|address| u32::try_from(address).ok())
        .ok_or_else(|| asyncify_trap("save area leaves 32-bit memory"))?;
    Ok(address)
}

fn with_fuel<S: AsContextMut>(
    store: &mut S,
    call: impl FnOnce(&mut S) -> Result<(), wasmi::Error>,
) -> Result<(), TrapReason> {
    let fuel = store.as_context().get_fuel().unwrap_or(0);
    // Fuel metering may be off (plain stores in benchmarks); ignore that case.
    let _ = store
        .as_context_mut()
        .set_fuel(fuel.saturating_add(CONTROL_FUEL));
    let result = call(store);
    // Give back what the control call did not use, but never more than before.
    let left = store.as_context().get_fuel().unwrap_or(0);
    let _ = store.as_context_mut().set_fuel(left.min(fuel));
    result.map_err(|error| TrapReason::Asyncify(alloc::format!("{error}")))
}

fn asyncify_trap(reason: &str) -> TrapReason {
    TrapReason::Asyncify(reason.into())
}

//! Bounds-checked access to a domain's linear memory from host calls.
//!
//! Guests pass pointers and lengths as i32; both are read as unsigned (the Wasm
//! spec's memory addresses are u32 for memory32). Any range that leaves memory
//! is a `TrapReason::BadPointer` naming the call: that domain traps, the host
//! never panics.

use crate::error::TrapReason;

/// The byte range `[pointer, pointer + length)` of `memory`, or the trap reason.
pub fn slice<'a>(
    memory: &'a [u8],
    call: &'static str,
    pointer: i32,
    length: i32,
) -> Result<&'a [u8], TrapReason> {
    let range = range(memory.len(), call, pointer, length)?;
    Ok(&memory[range])
}

/// The mutable byte range `[pointer, pointer + length)` of `memory`.
pub fn slice_mut<'a>(
    memory: &'a mut [u8],
    call: &'static str,
    pointer: i32,
    length: i32,
) -> Result<&'a mut [u8], TrapReason> {
    let range = range(memory.len(), call, pointer, length)?;
    Ok(&mut memory[range])
}

/// Copies `bytes` into memory at `pointer`.
pub fn write(
    memory: &mut [u8],
    call: &'static str,
    pointer: i32,
    bytes: &[u8],
) -> Result<(), TrapReason> {
    let length = i32::try_from(bytes.len()).map_err(|_| TrapReason::BadArgument {
        call,
        detail: "a result does not fit in 32-bit memory",
    })?;
    slice_mut(memory, call, pointer, length)?.copy_from_slice(bytes);
    Ok(())
}

/// Reads a little-endian u32 at `pointer`.
pub fn read_u32(memory: &[u8], call: &'static str, pointer: i32) -> Result<u32, TrapReason> {
    let bytes = slice(memory, call, pointer, 4)?;
    let mut word = [0; 4];
    word.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(word))
}

/// Reads a little-endian u64 at `pointer`.
pub fn read_u64(memory: &[u8], call: &'static str, pointer: i32) -> Result<u64, TrapReason> {
    let bytes = slice(memory, call, pointer, 8)?;
    let mut word = [0; 8];
    word.copy_from_slice(bytes);
    Ok(u64::from_le_bytes(word))
}

/// Writes a little-endian u32 at `pointer`.
pub fn write_u32(
    memory: &mut [u8],
    call: &'static str,
    pointer: i32,
    value: u32,
) -> Result<(), TrapReason> {
    write(memory, call, pointer, &value.to_le_bytes())
}

/// Writes a little-endian u64 at `pointer`.
pub fn write_u64(
    memory: &mut [u8],
    call: &'static str,
    pointer: i32,
    value: u64,
) -> Result<(), TrapReason> {
    write(memory, call, pointer, &value.to_le_bytes())
}

fn range(
    memory_bytes: usize,
    call: &'static str,
    pointer: i32,
    length: i32,
) -> Result<core::ops::Range<usize>, TrapReason> {
    let bad = || TrapReason::BadPointer {
        call,
        pointer: pointer as u32,
        length: length as u32,
        memory_bytes,
    };
    // Wasm addresses are unsigned: reinterpret the bits, as the spec does.
    let start = pointer as u32 as usize;
    let end = start.checked_add(length as u32 as usize).ok_or_else(bad)?;
    if end > memory_bytes {
        return Err(bad());
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_inside_memory_are_returned() {
        let memory = [1u8, 2, 3, 4];
        assert_eq!(slice(&memory, "test", 1, 2), Ok(&[2u8, 3][..]));
        assert_eq!(slice(&memory, "test", 4, 0), Ok(&[][..]));
    }

    #[test]
    fn ranges_leaving_memory_trap() {
        let memory = [0u8; 4];
        assert!(slice(&memory, "test", 3, 2).is_err());
        assert!(slice(&memory, "test", -1, 1).is_err());
        assert!(slice(&memory, "test", 0, -1).is_err());
        assert!(slice(&memory, "test", 5, 0).is_err());
    }
}

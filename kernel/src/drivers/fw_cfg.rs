//! QEMU's fw_cfg: named files the host hands the machine (the cluster secret).
//!
//! The legacy I/O-port interface: a 16-bit selector at port 0x510 picks an
//! item, whose bytes are then read one at a time from port 0x511. Item 0 is
//! the signature "QEMU"; item 0x19 the file directory: a big-endian count,
//! then entries of a big-endian size (u32), selector (u16), two reserved
//! bytes and a NUL-padded name of 56 bytes (QEMU's docs/specs/fw_cfg.rst).
//! Items are read-only and the host fixes them before boot, so reading one
//! twice gives the same bytes.

use alloc::vec;
use alloc::vec::Vec;

use x86_64::instructions::port::Port;

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const SIGNATURE_ITEM: u16 = 0x0000;
const DIRECTORY_ITEM: u16 = 0x0019;
const NAME_BYTES: usize = 56;
const ENTRY_BYTES: usize = 4 + 2 + 2 + NAME_BYTES;

/// More files than any QEMU machine carries: a directory claiming more is
/// not read past this.
const MAX_FILES: u32 = 1024;

/// Why a named file could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwCfgError {
    /// The file is longer than the caller takes.
    TooLong { size_bytes: u32, max_bytes: usize },
}

/// Selects `item` and reads `buffer.len()` bytes of it from the start.
fn read_item(item: u16, buffer: &mut [u8]) {
    let mut selector: Port<u16> = Port::new(SELECTOR_PORT);
    let mut data: Port<u8> = Port::new(DATA_PORT);
    // SAFETY: ports 0x510 and 0x511 are fw_cfg's on every QEMU x86 machine
    // and nothing else uses them; selecting an item and reading its bytes
    // has no effect beyond this interface's own read position. On a machine
    // without fw_cfg the reads give 0xff, which fails the signature check.
    unsafe {
        selector.write(item);
        for byte in buffer.iter_mut() {
            *byte = data.read();
        }
    }
}

/// Whether this machine has fw_cfg at all.
fn is_present() -> bool {
    let mut signature = [0u8; 4];
    read_item(SIGNATURE_ITEM, &mut signature);
    &signature == b"QEMU"
}

/// The file named `name` (e.g. "opt/amber/cluster-secret"), if the host
/// gave one; refused when longer than `max_bytes`, before reading it.
pub fn read_file(name: &str, max_bytes: usize) -> Result<Option<Vec<u8>>, FwCfgError> {
    if !is_present() {
        return Ok(None);
    }
    let mut count = [0u8; 4];
    read_item(DIRECTORY_ITEM, &mut count);
    let count = u32::from_be_bytes(count).min(MAX_FILES);
    // The directory is read in one pass: each selection restarts at byte 0.
    let mut directory = vec![0; 4 + count as usize * ENTRY_BYTES];
    read_item(DIRECTORY_ITEM, &mut directory);
    for entry in directory[4..].chunks_exact(ENTRY_BYTES) {
        let entry_name = &entry[8..];
        let length = entry_name
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(NAME_BYTES);
        if &entry_name[..length] != name.as_bytes() {
            continue;
        }
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
        if size as usize > max_bytes {
            return Err(FwCfgError::TooLong {
                size_bytes: size,
                max_bytes,
            });
        }
        let item = u16::from_be_bytes([entry[4], entry[5]]);
        let mut contents = vec![0; size as usize];
        read_item(item, &mut contents);
        return Ok(Some(contents));
    }
    Ok(None)
}

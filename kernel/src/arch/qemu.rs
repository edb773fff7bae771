//! Ending a QEMU run with a status the test harness can read.

use x86_64::instructions::port::Port;

/// I/O port of QEMU's isa-debug-exit device (xtask/src/qemu.rs passes the same).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the kernel writes there after a fault or panic. QEMU exits with
/// status (0x31 << 1) | 1 = 99 (xtask/src/qemu.rs: FAILURE_EXIT_STATUS).
const FAILURE_CODE: u32 = 0x31;

/// Makes QEMU exit with the failure status when the isa-debug-exit device is
/// present; does nothing on machines without it (the caller halts next).
pub fn exit_failure() {
    let mut port = Port::<u32>::new(DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is either QEMU's debug-exit device, which stops the
    // VM, or unassigned, where an OUT is ignored. No memory is touched.
    unsafe { port.write(FAILURE_CODE) };
}

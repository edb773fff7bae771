//! Time: the TSC calibrated against the PIT, and the PIT's periodic tick.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use super::cpu::read_tsc;

/// The PIT's input clock (Intel 8254 on every PC).
const PIT_FREQUENCY_HZ: u64 = 1_193_182;

/// Timer interrupts per second: 1 ms granularity for sleeps, and `hlt` still
/// spends almost all idle time asleep.
pub const TICK_HZ: u64 = 1000;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC frequency over 10 ms of PIT channel 2 (polled, so it
/// works before interrupts are set up), then starts the periodic tick on
/// channel 0. `entry_tsc` is the TSC at kernel entry: uptime counts from it.
pub fn init(entry_tsc: u64) {
    BOOT_TSC.store(entry_tsc, Ordering::Relaxed);
    let calibration_ms = 10;
    let count = PIT_FREQUENCY_HZ * calibration_ms / 1000;
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    let mut channel0 = Port::<u8>::new(0x40);
    // SAFETY: ports 0x40-0x43 and 0x61 are the PIT and its gate on every PC;
    // programming them touches no memory. Channel 2 drives only the speaker,
    // kept off (bit 1 clear).
    let elapsed_tsc = unsafe {
        let value = gate.read();
        gate.write((value & !0x02) | 0x01);
        command.write(0b1011_0000); // channel 2, low then high byte, mode 0
        channel2.write((count & 0xff) as u8);
        channel2.write((count >> 8) as u8);
        // Restart the count by pulsing the gate.
        let value = gate.read();
        gate.write(value & !0x01);
        gate.write(value | 0x01);
        let start = read_tsc();
        while gate.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        read_tsc() - start
    };
    TSC_HZ.store(elapsed_tsc * 1000 / calibration_ms, Ordering::Relaxed);
    let divisor = PIT_FREQUENCY_HZ / TICK_HZ;
    // SAFETY: as above; channel 0 raises IRQ 0, which stays masked until
    // interrupts::init unmasks it with its handler installed.
    unsafe {
        command.write(0b0011_0100); // channel 0, low then high byte, rate generator
        channel0.write((divisor & 0xff) as u8);
        channel0.write((divisor >> 8) as u8);
    }
}

/// TSC ticks per second (0 before `init`).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts a TSC difference to nanoseconds.
pub fn tsc_to_ns(ticks: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64
}

/// Nanoseconds since kernel entry.
pub fn uptime_ns() -> u64 {
    tsc_to_ns(read_tsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Nanoseconds since the CPU was reset (the TSC starts at 0 there), which
/// includes firmware time before the kernel ran.
pub fn since_reset_ns() -> u64 {
    tsc_to_ns(read_tsc())
}

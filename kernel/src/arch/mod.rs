//! x86_64 specifics: boot entry, CPU set-up, interrupts, timers, power.
//!
//! With drivers/ and memory/, one of the three places where the kernel uses
//! `unsafe`; every block says why it is sound.

pub mod acpi;
pub mod cpu;
pub mod exception_entry;
pub mod gdt;
pub mod interrupts;
pub mod limine;
pub mod pvh;
pub mod qemu;
pub mod rtc;
pub mod timer;

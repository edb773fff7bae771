//! Diagnostics: boot self-tests and the raw disk and network baselines.
//!
//! Nothing here is a service the domains rely on: `selftest` runs instead of
//! the domains when the boot line asks for it (`test=...`), and the console
//! runs `diskbench` and `nettest` in the foreground for the benchmarks.

pub mod disk_bench;
pub mod nettest;
pub mod selftest;
pub mod tcp_echo;

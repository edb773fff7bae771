//! `log` output on the serial console, with uptime and level.

use log::{LevelFilter, Log, Metadata, Record};

use crate::arch::timer;

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl Log for SerialLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let uptime_us = timer::uptime_ns() / 1000;
        crate::println!(
            "[{:>5}.{:06}] {:<5} {}",
            uptime_us / 1_000_000,
            uptime_us % 1_000_000,
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Parses a `log=LEVEL` value (error, warn, info, debug, trace, off).
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    text.parse().ok()
}

/// Installs the logger at `level`.
pub fn init(level: LevelFilter) {
    // Only fails if a logger is already installed, which would be this one.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

//! Logging to the console: `amber::log` and the `error!` ... `trace!` macros.

use std::fmt;

use crate::sys;

/// How important a log line is; the numbers are the ABI's `level` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something looks wrong but the app goes on.
    Warn = 2,
    /// Ordinary output; the host prints it as the bare text.
    Info = 3,
    /// Detail for whoever debugs the app.
    Debug = 4,
    /// Even more detail.
    Trace = 5,
}

/// Writes one line of `text` to the console at `level`.
///
/// The host prefixes it with the domain's name (`[counter] count 3`). `amber.log`
/// is not a blocking import: logging never suspends the domain.
pub fn log(level: Level, text: &str) {
    sys::log(level as i32, text.as_bytes());
}

/// Formats and logs `arguments`; what the macros expand to.
///
/// A plain literal (`info!("ready")`) is logged without allocating.
pub fn log_arguments(level: Level, arguments: fmt::Arguments<'_>) {
    match arguments.as_str() {
        Some(text) => log(level, text),
        None => log(level, &arguments.to_string()),
    }
}

/// Logs a `format!`-style line at [`Level::Error`].
#[macro_export]
macro_rules! error {
    ($($argument:tt)*) => {
        $crate::__private::log_arguments($crate::Level::Error, ::core::format_args!($($argument)*))
    };
}

/// Logs a `format!`-style line at [`Level::Warn`].
#[macro_export]
macro_rules! warn {
    ($($argument:tt)*) => {
        $crate::__private::log_arguments($crate::Level::Warn, ::core::format_args!($($argument)*))
    };
}

/// Logs a `format!`-style line at [`Level::Info`]: an app's ordinary output.
#[macro_export]
macro_rules! info {
    ($($argument:tt)*) => {
        $crate::__private::log_arguments($crate::Level::Info, ::core::format_args!($($argument)*))
    };
}

/// Logs a `format!`-style line at [`Level::Debug`].
#[macro_export]
macro_rules! debug {
    ($($argument:tt)*) => {
        $crate::__private::log_arguments($crate::Level::Debug, ::core::format_args!($($argument)*))
    };
}

/// Logs a `format!`-style line at [`Level::Trace`].
#[macro_export]
macro_rules! trace {
    ($($argument:tt)*) => {
        $crate::__private::log_arguments($crate::Level::Trace, ::core::format_args!($($argument)*))
    };
}

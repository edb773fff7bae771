//! What the vm needs from the machine: clocks, randomness and a console.

/// Where a line of domain output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// WASI fd 1.
    Stdout,
    /// WASI fd 2.
    Stderr,
    /// `amber.log` with its level.
    Log(LogLevel),
}

/// `amber.log` levels; the numbers are part of the ABI (as the `log` crate's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl LogLevel {
    /// The level for an ABI value; unknown values count as `Info`.
    pub fn from_abi(level: i32) -> Self {
        match level {
            1 => Self::Error,
            2 => Self::Warn,
            4 => Self::Debug,
            5 => Self::Trace,
            _ => Self::Info,
        }
    }

    /// The label printed before a message (empty for `Info`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Error => "error: ",
            Self::Warn => "warn: ",
            Self::Info => "",
            Self::Debug => "debug: ",
            Self::Trace => "trace: ",
        }
    }
}

/// The machine under the vm. The kernel implements it over its timer, RNG and
/// serial console; `StdPlatform` over Linux.
pub trait Platform: Send + Sync {
    /// A monotonic clock in nanoseconds (any origin).
    fn monotonic_ns(&self) -> u64;
    /// Wall-clock time in nanoseconds since the Unix epoch.
    fn realtime_ns(&self) -> u64;
    /// Fills `bytes` with unpredictable bytes.
    fn fill_random(&self, bytes: &mut [u8]);
    /// One complete line (without its newline) a domain wrote, or the vm
    /// wrote about it, to be printed `[NAME] line`. Both are already made
    /// safe to print (`crate::output`): no control character but the tab,
    /// and within the domain's budget.
    fn output(&self, domain_name: &str, stream: Stream, line: &str);
    /// The machine's TCP stack (see [`crate::net`]); none by default.
    fn network(&self) -> &dyn crate::net::Network {
        &crate::net::NoNetwork
    }
}

/// Collects a domain's output into lines so that prefixes stay on line starts.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: alloc::vec::Vec<u8>,
}

/// A line longer than this is flushed even without a newline.
const MAX_LINE_BYTES: usize = 4096;

impl LineBuffer {
    /// Appends `bytes`, handing every completed line to `emit`.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        for &byte in bytes {
            if byte == b'\n' {
                emit(&self.pending);
                self.pending.clear();
            } else {
                self.pending.push(byte);
                if self.pending.len() >= MAX_LINE_BYTES {
                    emit(&self.pending);
                    self.pending.clear();
                }
            }
        }
    }

    /// Hands an unfinished last line to `emit`.
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

#[cfg(feature = "std")]
pub use std_platform::StdPlatform;

#[cfg(feature = "std")]
mod std_platform {
    use super::{Platform, Stream};
    use crate::net::{Network, NoNetwork};
    use crate::net_std::StdNetwork;
    use std::hash::{BuildHasher, Hasher};
    use std::io::Write;
    use std::sync::Arc;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    /// Linux: `Instant`, `SystemTime`, OS-seeded hashing for randomness,
    /// `[NAME] line` on stdout (stderr for fd 2 and errors), and no network
    /// unless one is given ([`StdPlatform::with_network`]).
    #[derive(Debug)]
    pub struct StdPlatform {
        origin: Instant,
        network: Option<Arc<StdNetwork>>,
    }

    impl Default for StdPlatform {
        fn default() -> Self {
            Self {
                origin: Instant::now(),
                network: None,
            }
        }
    }

    impl StdPlatform {
        /// A platform whose domains use `network` (shared with the caller,
        /// which may ask it which ports are bound).
        pub fn with_network(network: Arc<StdNetwork>) -> Self {
            Self {
                network: Some(network),
                ..Self::default()
            }
        }
    }

    impl Platform for StdPlatform {
        fn monotonic_ns(&self) -> u64 {
            u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }

        fn realtime_ns(&self) -> u64 {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        }

        fn fill_random(&self, bytes: &mut [u8]) {
            // RandomState is seeded from the OS once per process and perturbed
            // per instance: enough for guests' `random`, with no extra crate.
            for chunk in bytes.chunks_mut(8) {
                let mut hasher = std::hash::RandomState::new().build_hasher();
                hasher.write_u64(self.monotonic_ns());
                let word = hasher.finish().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
        }

        fn output(&self, domain_name: &str, stream: Stream, text: &str) {
            // A closed stdout must not take the runner down: ignore write errors.
            match stream {
                Stream::Stdout => {
                    let _ = writeln!(std::io::stdout().lock(), "[{domain_name}] {text}");
                }
                Stream::Stderr => {
                    let _ = writeln!(std::io::stderr().lock(), "[{domain_name}] {text}");
                }
                Stream::Log(level) => {
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "[{domain_name}] {}{text}",
                        level.label()
                    );
                }
            }
        }

        fn network(&self) -> &dyn Network {
            match &self.network {
                Some(network) => network.as_ref(),
                None => &NoNetwork,
            }
        }
    }
}

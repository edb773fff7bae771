//! The machine as the vm sees it: clocks, randomness, the console and the
//! network.

use alloc::string::String;
use alloc::vec::Vec;

use spin::Mutex;
use vm::{Platform, Stream};

use crate::arch::{cpu, timer};
use crate::println;

/// The kernel's `vm::Platform`.
#[derive(Debug)]
pub struct KernelPlatform {
    /// Wall-clock time at boot, in nanoseconds since the Unix epoch.
    boot_realtime_ns: u64,
    random: Mutex<SplitMix64>,
}

impl KernelPlatform {
    pub fn new() -> KernelPlatform {
        let seed = cpu::hardware_random_u64().unwrap_or(0) ^ cpu::read_tsc();
        KernelPlatform {
            boot_realtime_ns: crate::arch::rtc::read_unix_time_s()
                .map_or(0, |seconds| seconds.saturating_mul(1_000_000_000)),
            random: Mutex::new(SplitMix64(seed)),
        }
    }
}

impl Default for KernelPlatform {
    fn default() -> Self {
        KernelPlatform::new()
    }
}

impl Platform for KernelPlatform {
    fn monotonic_ns(&self) -> u64 {
        timer::uptime_ns()
    }

    fn realtime_ns(&self) -> u64 {
        self.boot_realtime_ns.saturating_add(timer::uptime_ns())
    }

    fn fill_random(&self, bytes: &mut [u8]) {
        let mut generator = self.random.lock();
        for chunk in bytes.chunks_mut(8) {
            // RDRAND where the CPU has it, mixed into the generator so that a
            // CPU without it still gives unpredictable-enough bytes.
            let hardware = cpu::hardware_random_u64().unwrap_or(0);
            let value = generator.next() ^ hardware;
            chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        }
    }

    /// Both `domain_name` and `text` come escaped by the vm
    /// (`vm::escape_into`) and within the domain's output budget. The vm
    /// keeps every line for the domain's log whether or not the console
    /// follows the domain (`follow`).
    fn output(&self, domain_name: &str, stream: Stream, text: &str) {
        if !FOLLOW.lock().follows(domain_name) {
            return;
        }
        match stream {
            Stream::Stdout | Stream::Stderr => println!("[{domain_name}] {text}"),
            Stream::Log(level) => println!("[{domain_name}] {}{text}", level.label()),
        }
    }

    /// The domains' TCP over the kernel's cards (net::domain_sockets).
    fn network(&self) -> &dyn vm::net::Network {
        &crate::net::domain_sockets::NETWORK
    }
}

/// Whose output the console shows as it comes: `follow all|none|NAME...`.
/// Every domain's lines go to its own log either way (`logs NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    /// Every domain's (the default).
    All,
    /// No domain's.
    None,
    /// Only these domains', by their names as shown ([`shown_name`]).
    Only(Vec<String>),
}

impl Follow {
    /// Whether the console shows the output of the domain shown as
    /// `shown_name`.
    pub fn follows(&self, shown_name: &str) -> bool {
        match self {
            Follow::All => true,
            Follow::None => false,
            Follow::Only(names) => names.iter().any(|name| name == shown_name),
        }
    }
}

impl core::fmt::Display for Follow {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Follow::All => write!(formatter, "every domain's output"),
            Follow::None => write!(formatter, "no domain's output"),
            Follow::Only(names) => write!(formatter, "the output of {}", names.join(", ")),
        }
    }
}

static FOLLOW: Mutex<Follow> = Mutex::new(Follow::All);

/// Chooses whose output the console shows from now on.
pub fn set_follow(follow: Follow) {
    *FOLLOW.lock() = follow;
}

/// A domain's name as the kernel prints it in its own lines about the
/// domain (`[NAME] exited(0)`): escaped as the vm escapes the domain's
/// output, since a name comes from an image, which anyone may write.
pub fn shown_name(name: &str) -> String {
    let mut shown = String::new();
    vm::escape_into(name.as_bytes(), &mut shown);
    shown
}

/// Sebastiano Vigna's SplitMix64: small, fast, and good enough to stretch a
/// hardware seed (not a cryptographic generator).
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut value = self.0;
        value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value ^ (value >> 31)
    }
}

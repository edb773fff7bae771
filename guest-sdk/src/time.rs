//! The domain's clock: `now`, `sleep` and `yield_now`.
//!
//! The clock starts at zero when the domain is created and keeps counting across
//! checkpoints, reboots and moves (README, `now`), so durations measured with it
//! stay meaningful after the domain resumes elsewhere.

use std::time::Duration;

use crate::sys;

/// Nanoseconds on the domain's clock.
pub fn now_ns() -> u64 {
    // The host never returns a negative time; clamp rather than trust it.
    u64::try_from(sys::now_ns()).unwrap_or(0)
}

/// Time on the domain's clock, since the domain was created.
pub fn now() -> Duration {
    Duration::from_nanos(now_ns())
}

/// Suspends the domain for at least `duration_ns` nanoseconds.
///
/// A safe point: the host may checkpoint the domain, stack and all, while it
/// sleeps, and after a reboot the call simply returns.
pub fn sleep_ns(duration_ns: u64) {
    sys::sleep_ns(i64::try_from(duration_ns).unwrap_or(i64::MAX));
}

/// Suspends the domain for at least `duration` (a safe point, see [`sleep_ns`]).
pub fn sleep(duration: Duration) {
    sys::sleep_ns(duration_to_ns(duration));
}

/// Lets other domains run, then returns (a safe point, see [`sleep_ns`]).
pub fn yield_now() {
    sys::yield_now();
}

/// `duration` in nanoseconds for the ABI, saturating at `i64::MAX` (292 years).
pub(crate) fn duration_to_ns(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

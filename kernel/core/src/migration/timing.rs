//! Where a transfer's time goes: pages, sending, receiving, disk and network.

use core::fmt;

/// The machine's clock and its cumulative counters at one moment. The
/// kernel reads its timer and the disk driver's counters; tests make them up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Time since boot.
    pub now_ns: u64,
    /// Time spent polling the network between transfer steps, since boot.
    pub network_poll_ns: u64,
    /// Time spent waiting for the disk, since boot.
    pub disk_wait_ns: u64,
    /// Disk requests made, since boot.
    pub disk_requests: u64,
    /// Time the secure links spent encrypting and decrypting, since boot.
    pub cipher_ns: u64,
}

/// The counters of a [`Stopwatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Source: reading and encoding pages. Target: decoding and writing them.
    Pages,
    /// Handing bytes to the link (copying into the socket's buffer).
    Send,
    /// Taking frames from the link and handling replies.
    Receive,
}

/// Where a transfer's time goes, for the log line at its end.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stopwatch {
    /// The counters when the transfer began.
    start: Counters,
    pages_ns: u64,
    send_ns: u64,
    receive_ns: u64,
}

impl Stopwatch {
    /// A stopwatch for a transfer beginning at `start`.
    pub fn new(start: Counters) -> Stopwatch {
        Stopwatch {
            start,
            ..Stopwatch::default()
        }
    }

    /// When the transfer began.
    pub fn started_ns(&self) -> u64 {
        self.start.now_ns
    }

    /// Adds the time from `started_ns` to `ended_ns` to `slot`.
    pub fn add(&mut self, slot: Slot, started_ns: u64, ended_ns: u64) {
        let counter = match slot {
            Slot::Pages => &mut self.pages_ns,
            Slot::Send => &mut self.send_ns,
            Slot::Receive => &mut self.receive_ns,
        };
        *counter += ended_ns.saturating_sub(started_ns);
    }

    /// Where the time from the start to `now` went.
    pub fn report(&self, now: Counters) -> TimeReport {
        let ms = |ns: u64| ns / 1_000_000;
        TimeReport {
            pages_ms: ms(self.pages_ns),
            disk_wait_ms: ms(now.disk_wait_ns.saturating_sub(self.start.disk_wait_ns)),
            disk_requests: now.disk_requests.saturating_sub(self.start.disk_requests),
            send_ms: ms(self.send_ns),
            receive_ms: ms(self.receive_ns),
            network_poll_ms: ms(now
                .network_poll_ns
                .saturating_sub(self.start.network_poll_ns)),
            total_ms: ms(now.now_ns.saturating_sub(self.start.now_ns)),
            cipher_ms: ms(now.cipher_ns.saturating_sub(self.start.cipher_ns)),
        }
    }
}

/// A transfer's time, split by where it went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TimeReport {
    /// Reading and encoding (or decoding and writing) pages.
    pub pages_ms: u64,
    /// Of which waiting for the disk.
    pub disk_wait_ms: u64,
    /// Disk requests in that time.
    pub disk_requests: u64,
    /// Handing bytes to the link.
    pub send_ms: u64,
    /// Taking frames from the link and handling them.
    pub receive_ms: u64,
    /// Polling the network between steps.
    pub network_poll_ms: u64,
    /// The whole transfer.
    pub total_ms: u64,
    /// Of all the above, encrypting and decrypting (within the time given
    /// to the link and to taking frames from it).
    pub cipher_ms: u64,
}

impl fmt::Display for TimeReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "pages {} ms (disk waits {} ms in {} requests), to TCP {} ms, \
             from TCP {} ms, network polls {} ms, of {} ms, cipher {} ms",
            self.pages_ms,
            self.disk_wait_ms,
            self.disk_requests,
            self.send_ms,
            self.receive_ms,
            self.network_poll_ms,
            self.total_ms,
            self.cipher_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn a_report_counts_from_the_start() {
        let start = Counters {
            now_ns: 1_000_000_000,
            network_poll_ns: 5_000_000,
            disk_wait_ns: 7_000_000,
            disk_requests: 10,
            cipher_ns: 1_000_000,
        };
        let mut watch = Stopwatch::new(start);
        watch.add(Slot::Pages, 0, 3_000_000);
        watch.add(Slot::Send, 10, 2_000_010);
        watch.add(Slot::Receive, 5, 4);
        let now = Counters {
            now_ns: 1_250_000_000,
            network_poll_ns: 9_000_000,
            disk_wait_ns: 8_000_000,
            disk_requests: 13,
            cipher_ns: 3_500_000,
        };
        assert_eq!(
            format!("{}", watch.report(now)),
            "pages 3 ms (disk waits 1 ms in 3 requests), to TCP 2 ms, from TCP 0 ms, \
             network polls 4 ms, of 250 ms, cipher 2 ms"
        );
    }
}

//! counter: prints `count N` every 100 ms forever.
//!
//! `count` is an ordinary local, not a static: after a reboot it continues only
//! because the vm resumes this very loop (asyncify), not because of a restart.

#![forbid(unsafe_code)]

use std::time::Duration;

fn main() {
    let mut count: u64 = 0;
    loop {
        count += 1;
        amber::info!("count {count}");
        amber::sleep(Duration::from_millis(100));
    }
}

//! counter: prints `count N` every 100 ms forever.
//!
//! `count` is an ordinary local, not a static: after a reboot it continues only
//! because the vm resumes this very loop (asyncify), not because of a restart.
//! A fork (console `fork counter NEW`) counts on from the same number and
//! says once that it is one.

#![forbid(unsafe_code)]

use std::time::Duration;

fn main() {
    let mut count: u64 = 0;
    let mut generation = amber::generation();
    loop {
        count += 1;
        let now = amber::generation();
        if now != generation {
            amber::info!(
                "forked at count {count}: generation {now}, id {}",
                amber::self_id()
            );
            generation = now;
        }
        amber::info!("count {count}");
        amber::sleep(Duration::from_millis(100));
    }
}

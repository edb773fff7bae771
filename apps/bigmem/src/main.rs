//! bigmem: writes a pattern over N MiB of memory (argument 1, default 512),
//! then reads every patterned word back and reports any that differ; with
//! a second argument S it reads them back again every S seconds.
//!
//! Meant for machines with less RAM than N MiB: the kernel must page the
//! domain's memory out to its image and back in for the check to pass. It
//! yields every 16 MiB, so checkpoints can happen meanwhile; then it idles.

#![forbid(unsafe_code)]

use std::time::Duration;

const MIB: usize = 1 << 20;
const PAGE_BYTES: usize = 4096;
const WORDS_PER_PAGE: usize = PAGE_BYTES / 8;
/// Patterned words per 4 KiB page, spread over it.
const SAMPLES_PER_PAGE: usize = 8;
const SAMPLE_STRIDE: usize = WORDS_PER_PAGE / SAMPLES_PER_PAGE;
const PAGES_PER_REPORT: usize = 16 * MIB / PAGE_BYTES;

/// The word at sample `sample` of page `page`: differs for every word.
fn pattern(page: usize, sample: usize) -> u64 {
    (page as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        ^ (sample as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ 0xA5A5
}

fn main() {
    let argument = std::env::args().nth(1);
    let mib = match argument.as_deref().map(str::parse::<usize>) {
        None => 512,
        Some(Ok(mib)) if mib > 0 => mib,
        Some(_) => {
            eprintln!("bigmem: {argument:?} is not a positive number of MiB");
            std::process::exit(2);
        }
    };
    let pages = mib * MIB / PAGE_BYTES;
    // Fresh memory from memory.grow is zero, so this writes nothing: every
    // page is first touched by the loop below.
    let mut words = vec![0u64; pages * WORDS_PER_PAGE];
    println!("writing {mib} MiB");
    for page in 0..pages {
        for sample in 0..SAMPLES_PER_PAGE {
            words[page * WORDS_PER_PAGE + sample * SAMPLE_STRIDE] = pattern(page, sample);
        }
        if (page + 1) % PAGES_PER_REPORT == 0 {
            println!("written {} MiB", (page + 1) * PAGE_BYTES / MIB);
            std::thread::yield_now();
        }
    }
    verify(&words, mib, "verified");
    let recheck_seconds = std::env::args()
        .nth(2)
        .and_then(|text| text.parse::<u64>().ok());
    let mut checks = 0u64;
    loop {
        match recheck_seconds {
            Some(seconds) => {
                std::thread::sleep(Duration::from_secs(seconds.max(1)));
                checks += 1;
                verify(&words, mib, &format!("check {checks}: verified"));
            }
            None => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// Reads every patterned word back and prints `LABEL N MiB` or a failure.
fn verify(words: &[u64], mib: usize, label: &str) {
    let pages = mib * MIB / PAGE_BYTES;
    let mut bad_words = 0usize;
    for page in 0..pages {
        for sample in 0..SAMPLES_PER_PAGE {
            if words[page * WORDS_PER_PAGE + sample * SAMPLE_STRIDE] != pattern(page, sample) {
                bad_words += 1;
            }
        }
        if (page + 1) % PAGES_PER_REPORT == 0 {
            std::thread::yield_now();
        }
    }
    if bad_words == 0 {
        println!("{label} {mib} MiB");
    } else {
        println!("FAILED: {bad_words} bad words in {mib} MiB");
    }
}

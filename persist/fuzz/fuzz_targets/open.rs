//! Fuzz target: arbitrary bytes as an image; open, read, verify, commit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use persist::{Image, MemoryDevice, PAGE_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(mut image) = Image::open(MemoryDevice::from_bytes(data.to_vec())) else {
        return;
    };
    let mut page = [0u8; PAGE_SIZE];
    for page_index in [0, 1, 255, 256, 65_535] {
        let _ = image.read_page(page_index, &mut page);
    }
    let _ = image.module();
    let _ = image.stored_pages();
    let _ = image.verify();
    let _ = image.stage_page(0, &[1; PAGE_SIZE]);
    let _ = image.commit();
});

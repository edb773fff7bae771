//! Helpers shared by the integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use persist::{BlockDevice, Image, MemoryDevice, NewDomain, PAGE_SIZE};

/// A tiny module-like byte string (persist does not parse it).
pub const MODULE: &[u8] = b"\0asm\x01\0\0\0 a pretend module for persist tests";

/// A new domain with `memory_max_pages` wasm pages of memory.
pub fn domain(memory_max_pages: u64) -> NewDomain<'static> {
    NewDomain {
        id: persist::DomainId(0x1234_5678_9abc_def0_0fed_cba9_8765_4321),
        name: "test",
        module: MODULE,
        memory_pages: 1,
        memory_max_pages,
        args: vec!["test".into(), "--verbose".into()],
        env: vec!["HOME=/".into()],
        network: Default::default(),
    }
}

/// A fresh image on a memory device of `block_count` blocks.
pub fn fresh(block_count: u64, memory_max_pages: u64) -> Image<MemoryDevice> {
    Image::create(MemoryDevice::new(block_count), domain(memory_max_pages)).unwrap()
}

/// A page whose bytes derive from `seed`, never all zero.
pub fn page(seed: u64) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in page.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    page
}

/// Reads a page, panicking with context on error.
pub fn read<D: BlockDevice>(image: &mut Image<D>, page_index: u64) -> [u8; PAGE_SIZE] {
    let mut buffer = [0u8; PAGE_SIZE];
    image
        .read_page(page_index, &mut buffer)
        .unwrap_or_else(|error| panic!("reading page {page_index}: {error}"));
    buffer
}

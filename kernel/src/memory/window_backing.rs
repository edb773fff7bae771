//! `vm::MemoryBacking` over a window: demand-zero pages, dirty bits from the CPU.

use alloc::vec::Vec;

use vm::{MemoryBacking, PAGE_BYTES};

use super::windows::Window;

/// A domain's memory backing in the kernel.
#[derive(Debug, Default)]
pub struct WindowBacking {
    window: Option<Window>,
    /// Pages reported by the last `dirty_pages`, cleaned on commit success.
    pending: Vec<u64>,
}

impl WindowBacking {
    pub fn new() -> WindowBacking {
        WindowBacking::default()
    }
}

impl MemoryBacking for WindowBacking {
    fn static_buffer(&mut self, maximum_bytes: u64) -> Option<&'static mut [u8]> {
        let window = match Window::reserve(maximum_bytes) {
            Ok(window) => window,
            Err(error) => {
                // wasmi then keeps the memory on the heap, which still works.
                log::warn!("no window for a domain ({error}); its memory goes on the heap");
                return None;
            }
        };
        let buffer = window.buffer();
        self.window = Some(window);
        Some(buffer)
    }

    fn dirty_pages(&mut self, memory: &[u8]) -> Vec<u64> {
        let page_count = memory.len().div_ceil(PAGE_BYTES) as u64;
        self.pending = match &self.window {
            Some(window) => window.dirty_pages(page_count),
            // Only when reserving a window failed: every page counts.
            None => (0..page_count).collect(),
        };
        self.pending.clone()
    }

    fn commit_succeeded(&mut self) {
        if let Some(window) = &self.window {
            window.clear_dirty(&self.pending);
        }
        self.pending.clear();
    }

    fn pages_written_since_creation(&mut self, memory: &[u8]) -> Option<Vec<u64>> {
        // Dirty bits are only cleared by commits and restores, so right after
        // creation they are exactly the pages instantiation wrote; the window
        // reads as zero elsewhere (wasmi's zero-filling is patched out).
        let page_count = memory.len().div_ceil(PAGE_BYTES) as u64;
        self.window
            .as_ref()
            .map(|window| window.dirty_pages(page_count))
    }

    fn resident_pages(&self, memory: &[u8]) -> u64 {
        match &self.window {
            Some(window) => window.resident_pages(),
            None => memory.len().div_ceil(PAGE_BYTES) as u64,
        }
    }

    fn reset_to(&mut self, memory: &[u8]) {
        let page_count = memory.len().div_ceil(PAGE_BYTES) as u64;
        if let Some(window) = &self.window {
            let dirty = window.dirty_pages(page_count);
            window.clear_dirty(&dirty);
        }
        self.pending.clear();
    }
}

//! `vm::MemoryBacking` over a window: demand paging, dirty bits from the CPU.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vm::{Error, MemoryBacking, PAGE_BYTES, PageLocation, Storage};

use super::pager::{self, PagerFailure};
use super::windows::Window;
use crate::drivers::virtio_blk::PagerDisk;

/// A domain's memory backing in the kernel.
#[derive(Debug, Default)]
pub struct WindowBacking {
    window: Option<Window>,
    /// The disk its pager reads and writes, if the domain lives on one.
    disk: Option<PagerDisk>,
    /// Pages reported by the last `dirty_pages`, cleaned on commit success.
    pending: Vec<u64>,
}

impl WindowBacking {
    /// A backing whose window pages in from and out to `disk` (the domain's
    /// image), or demand-zero only without one.
    pub fn new(disk: Option<PagerDisk>) -> WindowBacking {
        WindowBacking {
            window: None,
            disk,
            pending: Vec::new(),
        }
    }

    /// The window's index when it has a pager.
    fn pager_index(&self) -> Option<usize> {
        self.disk?;
        self.window.as_ref().map(Window::index)
    }

    fn with_pager<T>(&self, f: impl FnOnce(&mut pager::Pager) -> T) -> Option<T> {
        pager::with(self.pager_index()?, f)
    }
}

/// A dropped domain (rolled back to a snapshot and opened again, or gone)
/// gives its frames back; its window stays reserved, unmapped, for good.
impl Drop for WindowBacking {
    fn drop(&mut self) {
        if let Some(window) = &self.window {
            window.drop_resident_pages(window.page_count());
            pager::detach(window.index());
        }
    }
}

fn page_count(memory: &[u8]) -> u64 {
    memory.len().div_ceil(PAGE_BYTES) as u64
}

fn no_pager_storage() -> Error {
    Error::Storage("the storage offers no block access for paging".into())
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
        if let Some(disk) = self.disk {
            pager::attach(window.index(), window.start(), disk);
        }
        let buffer = window.buffer();
        self.window = Some(window);
        Some(buffer)
    }

    fn dirty_pages(&mut self, memory: &[u8]) -> Vec<u64> {
        let page_count = page_count(memory);
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
        let page_count = page_count(memory);
        self.window
            .as_ref()
            .map(|window| window.dirty_pages(page_count))
    }

    fn resident_pages(&self, memory: &[u8]) -> u64 {
        match &self.window {
            Some(window) => window.resident_pages(),
            None => page_count(memory),
        }
    }

    fn reset_to(&mut self, memory: &[u8]) {
        let page_count = page_count(memory);
        if let Some(window) = &self.window {
            let dirty = window.dirty_pages(page_count);
            window.clear_dirty(&dirty);
        }
        self.pending.clear();
    }

    fn restore_lazily(&mut self, memory: &[u8], storage: &mut dyn Storage) -> Result<bool, Error> {
        let (Some(window), Some(_)) = (&self.window, self.pager_index()) else {
            return Ok(false);
        };
        let Some(paging) = storage.pager() else {
            return Ok(false);
        };
        let stored = paging.page_locations()?;
        let page_count = page_count(memory);
        if let Some((page_index, _)) = stored.iter().find(|(index, _)| *index >= page_count) {
            return Err(Error::Storage(format!(
                "page {page_index} lies beyond memory of {} bytes",
                memory.len()
            )));
        }
        // What instantiation wrote (data segments) goes; every page now
        // reads as the image says, on first touch.
        window.drop_resident_pages(page_count);
        self.with_pager(|pager| pager.set_locations(page_count, &stored));
        self.pending.clear();
        Ok(true)
    }

    fn before_commit(&mut self, storage: &mut dyn Storage) -> Result<(), Error> {
        let Some(evicted) = self.with_pager(pager::Pager::take_evicted) else {
            return Ok(());
        };
        if evicted.is_empty() {
            return Ok(());
        }
        let paging = storage.pager().ok_or_else(no_pager_storage)?;
        for (page_index, location) in evicted {
            if let Err(error) = paging.adopt_page(page_index, location) {
                // The page's only copy is that block: memory is now lost.
                self.with_pager(|pager| {
                    pager.fail(PagerFailure::NotAdopted {
                        page_index,
                        block: location.block,
                    })
                });
                return Err(error);
            }
        }
        Ok(())
    }

    fn after_commit(&mut self, storage: &mut dyn Storage) -> Result<(), Error> {
        if self.pager_index().is_none() {
            return Ok(());
        }
        let paging = storage.pager().ok_or_else(no_pager_storage)?;
        let committed: Vec<(u64, Option<PageLocation>)> = paging.committed_locations();
        self.with_pager(|pager| {
            for (page_index, location) in committed {
                pager.set_location(page_index, location);
            }
            pager.refresh();
        });
        Ok(())
    }

    fn before_slice(&mut self, memory: &[u8], storage: &mut dyn Storage) -> Result<(), Error> {
        let page_count = page_count(memory);
        let Some(shortfall) = self.with_pager(|pager| {
            pager.cover(page_count);
            pager.pool_shortfall(page_count)
        }) else {
            return Ok(());
        };
        let Some(wanted) = shortfall else {
            return Ok(());
        };
        let paging = storage.pager().ok_or_else(no_pager_storage)?;
        // A nearly full disk lends what it can; with nothing lent the pager
        // can still evict clean pages.
        let mut count = wanted;
        let blocks = loop {
            match paging.reserve_blocks(count) {
                Ok(blocks) => break blocks,
                Err(_) if count > 1 => count /= 2,
                Err(_) => break Vec::new(),
            }
        };
        let unusable = self
            .with_pager(|pager| pager.add_to_pool(&blocks))
            .unwrap_or_default();
        paging.release_blocks(&unusable);
        Ok(())
    }

    fn release_reserve(&mut self, storage: &mut dyn Storage) -> usize {
        let Some(paging) = storage.pager() else {
            return 0;
        };
        let blocks = self.with_pager(pager::Pager::take_pool).unwrap_or_default();
        paging.release_blocks(&blocks);
        blocks.len()
    }

    fn failure(&self) -> Option<String> {
        self.with_pager(|pager| pager.failure())
            .flatten()
            .map(|failure| format!("{failure}"))
    }
}

//! The vm on a Linux host: domain memory whose dirty pages the MMU finds.
#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

#[expect(
    unsafe_code,
    reason = "mmap, mprotect and the SIGSEGV handler: the only unsafe code of this crate"
)]
pub mod protection;

use vm::{HashedHeapBacking, MemoryBacking, PAGE_BYTES};

use protection::{Window, WindowError, Written};

/// A domain's memory in a write-protected window (see the crate docs), or
/// on the heap with hashed pages where no window could be made.
#[derive(Debug, Default)]
pub struct ProtectedBacking {
    tracking: Tracking,
    /// What the last `dirty_pages` reported, made clean on commit success.
    reported: Reported,
}

#[derive(Debug)]
enum Tracking {
    /// No window yet (before `static_buffer`), or none could be made.
    Hashed {
        backing: HashedHeapBacking,
        why: Option<WindowError>,
    },
    Protected(Window),
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking::Hashed {
            backing: HashedHeapBacking::new(),
            why: None,
        }
    }
}

#[derive(Debug, Default)]
enum Reported {
    #[default]
    Nothing,
    Pages(Vec<u64>),
    All,
}

impl ProtectedBacking {
    /// A backing that reserves its window when the vm asks for the buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Why this backing hashes pages instead of tracking writes, if it
    /// asked for a window and got none.
    pub fn fallback_reason(&self) -> Option<&WindowError> {
        match &self.tracking {
            Tracking::Hashed { why, .. } => why.as_ref(),
            Tracking::Protected(_) => None,
        }
    }

    /// Whether writes are tracked by page protection.
    pub fn is_protected(&self) -> bool {
        matches!(self.tracking, Tracking::Protected(_))
    }
}

/// Whether this process can track writes by page protection: reserves and
/// drops a one-page window. The host runner says so once at start, and why
/// not, since every backing would then fall back to hashing.
pub fn check_protection() -> Result<(), WindowError> {
    Window::reserve(PAGE_BYTES as u64).map(drop)
}

fn page_count(memory: &[u8]) -> usize {
    memory.len().div_ceil(PAGE_BYTES)
}

impl MemoryBacking for ProtectedBacking {
    fn static_buffer(&mut self, maximum_bytes: u64) -> Option<&'static mut [u8]> {
        if self.is_protected() {
            return None;
        }
        match Window::reserve(maximum_bytes) {
            Ok(mut window) => {
                let buffer = window.take_buffer();
                self.tracking = Tracking::Protected(window);
                buffer
            }
            Err(error) => {
                self.tracking = Tracking::Hashed {
                    backing: HashedHeapBacking::new(),
                    why: Some(error),
                };
                None
            }
        }
    }

    fn dirty_pages(&mut self, memory: &[u8]) -> Vec<u64> {
        let window = match &mut self.tracking {
            Tracking::Hashed { backing, .. } => return backing.dirty_pages(memory),
            Tracking::Protected(window) => window,
        };
        let page_count = page_count(memory);
        match window.written(page_count) {
            Written::All => {
                self.reported = Reported::All;
                (0..page_count as u64).collect()
            }
            Written::Pages(pages) => {
                self.reported = Reported::Pages(pages.clone());
                pages
            }
        }
    }

    fn commit_succeeded(&mut self) {
        let window = match &mut self.tracking {
            Tracking::Hashed { backing, .. } => return backing.commit_succeeded(),
            Tracking::Protected(window) => window,
        };
        match core::mem::take(&mut self.reported) {
            Reported::Nothing => {}
            Reported::Pages(pages) => window.protect(&pages),
            Reported::All => window.protect_all(),
        }
    }

    fn reset_to(&mut self, memory: &[u8]) {
        self.reported = Reported::Nothing;
        match &mut self.tracking {
            Tracking::Hashed { backing, .. } => backing.reset_to(memory),
            Tracking::Protected(window) => window.protect_all(),
        }
    }

    fn pages_written_since_creation(&mut self, memory: &[u8]) -> Option<Vec<u64>> {
        // Nothing is protected or cleared before the first commit or
        // restore, so the bitmap holds exactly what instantiation wrote;
        // the rest of a fresh mapping reads as zero.
        match &self.tracking {
            Tracking::Protected(window) => match window.written(page_count(memory)) {
                Written::Pages(pages) => Some(pages),
                Written::All => None,
            },
            Tracking::Hashed { .. } => None,
        }
    }
}

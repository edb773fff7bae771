//! Write-protected windows, and the SIGSEGV handler that records writes.
//!
//! A [`Window`] is one anonymous mapping: the memory pages, then a bitmap
//! with a bit per page and a word of flags. Memory pages are read-only
//! until written; the handler finds the window a write fault hit in a fixed
//! table of slots, sets the page's bit and makes the page writable, and the
//! faulting instruction runs again. Everything the handler touches is an
//! atomic in memory that is never unmapped, so it needs no lock and no
//! allocation, and `mprotect` is a plain system call (async-signal-safe in
//! Linux, which GCs and JITs rely on the same way).
//!
//! A page made writable splits the mapping, so a window with many scattered
//! writable pages can reach `vm.max_map_count`. When `mprotect` fails the
//! handler makes the whole window writable and raises the window's
//! *untracked* flag: until the next [`Window::protect_all`] every page
//! counts as written, which is more than needed but never less.

use std::io;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The page size this module tracks, which must be the host's.
pub const PAGE_BYTES: usize = 4096;

/// How many windows may exist at once in a process.
pub const SLOT_COUNT: usize = 1024;

/// A slot packs a window's first page number (address / 4096, below 2^36
/// on x86_64's 47-bit user space) above its page count (28 bits).
const PAGE_COUNT_BITS: u32 = 28;
const PAGE_COUNT_MASK: u64 = (1 << PAGE_COUNT_BITS) - 1;

/// At most 2^28 - 1 pages (1 TiB) a window; wasm32 memories stop at 4 GiB.
pub const MAXIMUM_PAGES: usize = PAGE_COUNT_MASK as usize;

/// The bitmap's first word: flags. Bit 0: untracked (see the module docs).
const UNTRACKED: u64 = 1;

/// Linux's `si_code` for a fault on a mapped page whose protection forbids
/// the access (`include/uapi/asm-generic/siginfo.h`); libc does not export it.
const SEGV_ACCERR: libc::c_int = 2;

/// Windows in use, packed (see [`PAGE_COUNT_BITS`]); zero is a free slot.
static SLOTS: [AtomicU64; SLOT_COUNT] = [const { AtomicU64::new(0) }; SLOT_COUNT];

/// The SIGSEGV disposition before ours, called for faults that are not a
/// window's: Rust's stack-overflow report, or the default (a core dump).
static PREVIOUS_ACTION: OnceLock<libc::sigaction> = OnceLock::new();

/// Whether installing the handler worked (the OS error number if not).
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// Why a window could not be made.
#[derive(Debug)]
pub enum WindowError {
    /// The host's pages are not 4 KiB.
    PageSize { page_bytes: usize },
    /// A memory of no pages needs no window.
    Empty,
    /// More than [`MAXIMUM_PAGES`] pages.
    TooLarge { bytes: u64 },
    /// Every one of the [`SLOT_COUNT`] slots holds a window.
    NoSlot,
    /// The mapping lies past the addresses a slot can name.
    AddressTooHigh { address: usize },
    /// `mmap` or `mprotect` failed.
    Map(io::Error),
    /// `sigaction` failed.
    Handler(io::Error),
}

impl core::fmt::Display for WindowError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WindowError::PageSize { page_bytes } => write!(
                formatter,
                "the host's pages are {page_bytes} bytes, not {PAGE_BYTES}"
            ),
            WindowError::Empty => write!(formatter, "a memory of no pages needs no window"),
            WindowError::TooLarge { bytes } => write!(
                formatter,
                "a window of {bytes} bytes is over the {MAXIMUM_PAGES}-page limit"
            ),
            WindowError::NoSlot => write!(
                formatter,
                "all {SLOT_COUNT} window slots are in use in this process"
            ),
            WindowError::AddressTooHigh { address } => {
                write!(formatter, "the mapping at {address:#x} is past 2^48")
            }
            WindowError::Map(error) => write!(formatter, "mapping the window: {error}"),
            WindowError::Handler(error) => {
                write!(formatter, "installing the SIGSEGV handler: {error}")
            }
        }
    }
}

impl std::error::Error for WindowError {}

/// Which pages were written since they were last protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Tracking was given up (see the module docs): count every page.
    All,
    /// These pages, ascending.
    Pages(Vec<u64>),
}

/// One write-tracked memory window.
#[derive(Debug)]
pub struct Window {
    start: usize,
    page_count: usize,
    mapping_bytes: usize,
    slot: usize,
    is_buffer_taken: bool,
}

impl Window {
    /// Maps a window of `maximum_bytes` (rounded up to pages), every page
    /// reading as zero and none yet written.
    pub fn reserve(maximum_bytes: u64) -> Result<Window, WindowError> {
        let page_bytes = host_page_bytes();
        if page_bytes != PAGE_BYTES {
            return Err(WindowError::PageSize { page_bytes });
        }
        let page_count = maximum_bytes.div_ceil(PAGE_BYTES as u64);
        if page_count == 0 {
            return Err(WindowError::Empty);
        }
        if page_count > MAXIMUM_PAGES as u64 {
            return Err(WindowError::TooLarge {
                bytes: maximum_bytes,
            });
        }
        let page_count = page_count as usize;
        install_handler()?;
        let bitmap_words = 1 + page_count.div_ceil(64);
        let bitmap_bytes = (bitmap_words * 8).next_multiple_of(PAGE_BYTES);
        let memory_bytes = page_count * PAGE_BYTES;
        let mapping_bytes = memory_bytes + bitmap_bytes;
        // SAFETY: a new private anonymous mapping at an address the kernel
        // chooses; it overlaps nothing, so no existing memory changes.
        let start = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mapping_bytes,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            return Err(WindowError::Map(io::Error::last_os_error()));
        }
        let start = start as usize;
        let mut window = Window {
            start,
            page_count,
            mapping_bytes,
            slot: SLOT_COUNT,
            is_buffer_taken: false,
        };
        // The bitmap is written by this module and the handler, never by
        // the domain: writable from the start.
        if let Err(error) = protect(start + memory_bytes, bitmap_bytes, Access::ReadWrite) {
            window.unmap();
            return Err(WindowError::Map(error));
        }
        if (start >> 12) >> (64 - PAGE_COUNT_BITS) != 0 {
            window.unmap();
            return Err(WindowError::AddressTooHigh { address: start });
        }
        let packed = ((start as u64 >> 12) << PAGE_COUNT_BITS) | page_count as u64;
        let claimed = SLOTS.iter().position(|slot| {
            slot.compare_exchange(0, packed, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        match claimed {
            Some(slot) => window.slot = slot,
            None => {
                window.unmap();
                return Err(WindowError::NoSlot);
            }
        }
        Ok(window)
    }

    /// The window's memory, once: `None` on a second call, so that no two
    /// mutable slices of it exist.
    pub fn take_buffer(&mut self) -> Option<&'static mut [u8]> {
        if self.is_buffer_taken {
            return None;
        }
        self.is_buffer_taken = true;
        // SAFETY:
        // 1. The range is mapped readable and stays mapped for the life of
        //    the process: `Drop` replaces it with fresh zero pages instead
        //    of unmapping it, so the slice never dangles.
        // 2. Writes to a read-only page fault into `on_segv`, which makes
        //    the page writable and returns, so the slice is writable too.
        // 3. This is the only slice of the memory pages (the flag above),
        //    and the bitmap after them is outside it.
        let buffer = unsafe {
            std::slice::from_raw_parts_mut(self.start as *mut u8, self.page_count * PAGE_BYTES)
        };
        Some(buffer)
    }

    /// How many memory pages the window has.
    pub fn page_count(&self) -> usize {
        self.page_count
    }

    /// The pages below `page_limit` written since they were last protected.
    pub fn written(&self, page_limit: usize) -> Written {
        let (flags, bitmap) = words(self.start, self.page_count);
        if flags.load(Ordering::Acquire) & UNTRACKED != 0 {
            return Written::All;
        }
        let page_limit = page_limit.min(self.page_count);
        let mut pages = Vec::new();
        for (word_index, word) in bitmap[..page_limit.div_ceil(64)].iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let page_index = word_index * 64 + bits.trailing_zeros() as usize;
                if page_index < page_limit {
                    pages.push(page_index as u64);
                }
                bits &= bits - 1;
            }
        }
        Written::Pages(pages)
    }

    /// Makes `pages` (ascending) read-only again and forgets that they were
    /// written: their next write faults and records them.
    pub fn protect(&self, pages: &[u64]) {
        let (flags, bitmap) = words(self.start, self.page_count);
        let mut index = 0;
        while index < pages.len() {
            // One call per run of consecutive pages.
            let first = pages[index] as usize;
            let mut end = first + 1;
            index += 1;
            while index < pages.len() && pages[index] as usize == end {
                end += 1;
                index += 1;
            }
            if end > self.page_count {
                continue;
            }
            for page_index in first..end {
                bitmap[page_index / 64].fetch_and(!(1 << (page_index % 64)), Ordering::AcqRel);
            }
            let address = self.start + first * PAGE_BYTES;
            if protect(address, (end - first) * PAGE_BYTES, Access::ReadOnly).is_err() {
                // Those pages stay writable and unrecorded: stop trusting
                // the bitmap until `protect_all` succeeds.
                flags.fetch_or(UNTRACKED, Ordering::AcqRel);
            }
        }
    }

    /// Makes every memory page read-only and forgets every write, also
    /// ending an untracked period; if the OS refuses, tracking stays off.
    pub fn protect_all(&self) {
        let (flags, bitmap) = words(self.start, self.page_count);
        if protect(self.start, self.page_count * PAGE_BYTES, Access::ReadOnly).is_err() {
            flags.fetch_or(UNTRACKED, Ordering::AcqRel);
            return;
        }
        for word in bitmap {
            word.store(0, Ordering::Release);
        }
        flags.fetch_and(!UNTRACKED, Ordering::AcqRel);
    }

    fn unmap(&mut self) {
        // SAFETY: the mapping is this window's own and no slice of it was
        // handed out (only `reserve`'s failure paths call this).
        unsafe {
            libc::munmap(self.start as *mut libc::c_void, self.mapping_bytes);
        }
    }
}

/// Gives the slot back and the memory to the OS. The addresses stay
/// mapped, as fresh zero pages: a slice handed out by `take_buffer` may
/// outlive the window only in a caller that drops a wasmi store after its
/// backing, and even then it reads zeros instead of dangling. The kernel
/// keeps a dropped domain's window reserved for the same reason.
impl Drop for Window {
    fn drop(&mut self) {
        if self.slot < SLOT_COUNT {
            SLOTS[self.slot].store(0, Ordering::Release);
        }
        // SAFETY: MAP_FIXED replaces exactly this window's own mapping with
        // a new anonymous one of the same size, readable and writable, so
        // every address of it stays valid memory.
        unsafe {
            libc::mmap(
                self.start as *mut libc::c_void,
                self.mapping_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            );
        }
    }
}

fn host_page_bytes() -> usize {
    // SAFETY: sysconf reads a constant of the system and has no
    // preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page_bytes).unwrap_or(0)
}

/// A window's flags word and bitmap, which live right after its memory
/// pages for as long as the process does.
fn words(start: usize, page_count: usize) -> (&'static AtomicU64, &'static [AtomicU64]) {
    let base = (start + page_count * PAGE_BYTES) as *const AtomicU64;
    // SAFETY: `reserve` mapped `1 + page_count.div_ceil(64)` words at
    // `base`, readable and writable, 8-byte aligned (a page boundary); the
    // mapping is never unmapped (`Drop` remaps it), and atomics may be
    // shared between threads and the signal handler.
    unsafe {
        (
            &*base,
            std::slice::from_raw_parts(base.add(1), page_count.div_ceil(64)),
        )
    }
}

#[derive(Clone, Copy)]
enum Access {
    ReadOnly,
    ReadWrite,
}

fn protect(address: usize, length_bytes: usize, access: Access) -> io::Result<()> {
    let protection = match access {
        Access::ReadOnly => libc::PROT_READ,
        Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
    };
    // SAFETY: callers pass page-aligned ranges inside one of this module's
    // mappings, which hold no Rust object whose validity a protection
    // change could break: a read-only page still reads, and a write to it
    // faults into `on_segv`, which makes it writable.
    let result = unsafe { libc::mprotect(address as *mut libc::c_void, length_bytes, protection) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn install_handler() -> Result<(), WindowError> {
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no
        // flags, an empty mask), only read back by the kernel.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads the current disposition into a valid sigaction.
        if unsafe { libc::sigaction(libc::SIGSEGV, ptr::null(), &mut previous) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // Saved before ours is installed, so the handler always finds it.
        let _ = PREVIOUS_ACTION.set(previous);
        // SAFETY: as above.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_segv as *const () as libc::sighandler_t;
        // SA_ONSTACK: a stack overflow must still reach Rust's report on
        // the thread's alternate stack through our handler.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: installs a handler that is async-signal-safe (see
        // `on_segv`); `action` is fully initialised.
        if unsafe { libc::sigaction(libc::SIGSEGV, &action, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    result.map_err(|code| WindowError::Handler(io::Error::from_raw_os_error(code)))
}

/// The SIGSEGV handler: a write to a window's read-only page is recorded
/// and let through; any other fault goes to the handler before ours.
extern "C" fn on_segv(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler;
    // errno is the thread's own and is put back before returning.
    let (code, address, errno) = unsafe {
        (
            (*info).si_code,
            (*info).si_addr() as usize,
            *libc::__errno_location(),
        )
    };
    let is_recorded = code == SEGV_ACCERR && record_write(address);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    if !is_recorded {
        forward(signal, info, context);
    }
}

/// Records a write to `address` if a window holds it, and makes its page
/// writable. Lock-free and allocation-free: it runs in a signal handler.
fn record_write(address: usize) -> bool {
    for slot in &SLOTS {
        let packed = slot.load(Ordering::Acquire);
        if packed == 0 {
            continue;
        }
        let start = ((packed >> PAGE_COUNT_BITS) << 12) as usize;
        let page_count = (packed & PAGE_COUNT_MASK) as usize;
        if address < start || address >= start + page_count * PAGE_BYTES {
            continue;
        }
        let page_index = (address - start) / PAGE_BYTES;
        let (flags, bitmap) = words(start, page_count);
        // Recorded before the page becomes writable, so no write is ever
        // both possible and unrecorded.
        bitmap[page_index / 64].fetch_or(1 << (page_index % 64), Ordering::AcqRel);
        let page = start + page_index * PAGE_BYTES;
        if protect(page, PAGE_BYTES, Access::ReadWrite).is_ok() {
            return true;
        }
        // Out of mappings: the whole window becomes one writable mapping
        // again, and untracked until its next `protect_all`.
        flags.fetch_or(UNTRACKED, Ordering::AcqRel);
        return protect(start, page_count * PAGE_BYTES, Access::ReadWrite).is_ok();
    }
    false
}

/// Hands a fault that is not ours to the disposition before ours.
fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let previous = PREVIOUS_ACTION.get();
    let handler = previous.map_or(libc::SIG_DFL, |action| action.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Back to the default; the faulting instruction runs again and the
        // process dies of SIGSEGV as it would have without us.
        // SAFETY: an all-zero sigaction is SIG_DFL with no flags; sigaction
        // is async-signal-safe.
        unsafe {
            let default: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, &default, ptr::null_mut());
        }
        return;
    }
    let is_siginfo = previous.is_some_and(|action| action.sa_flags & libc::SA_SIGINFO != 0);
    if is_siginfo {
        type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
        // SAFETY: with SA_SIGINFO the saved value is such a function, as
        // installed by whoever was there before us (Rust's runtime).
        let function: SigInfoHandler = unsafe { std::mem::transmute(handler) };
        function(signal, info, context);
    } else {
        type PlainHandler = extern "C" fn(libc::c_int);
        // SAFETY: without SA_SIGINFO the saved value is a plain handler.
        let function: PlainHandler = unsafe { std::mem::transmute(handler) };
        function(signal);
    }
}

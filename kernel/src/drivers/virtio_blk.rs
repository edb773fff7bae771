//! virtio-blk disks (PCI transport) under persist's gathering layer.
//!
//! At most one request in flight, completion by polling (no interrupts yet). Each
//! disk lives behind its own lock for the kernel's whole life: the domain's
//! image reaches it through a [`VirtioDisk`] handle, and the page-fault path
//! through a [`PagerDisk`] one, which needs neither the heap nor formatting.
//!
//! The work is split in two. This file holds the device: the virtqueue
//! through virtio-drivers, the DMA frames and the request timeout, as
//! persist's [`BlockTransport`] ([`Disk`]). Above it, persist's
//! [`Gathering`] holds every decision about requests, tested on the host
//! (`persist/src/gather/`, and `persist/tests/power_cut.rs` under power
//! cuts): writes to consecutive blocks gather into runs of [`RUN_BLOCKS`]
//! until a read or a flush, a run goes without waiting (write-behind) while
//! the next fills the other area and anything else waits for it first, a
//! failed write-behind takes the disk out of service, a read that follows
//! the block read last reads ahead to the end of the area, and `flush`
//! sends the run, waits for it, then VIRTIO_BLK_T_FLUSH.
//!
//! Each disk owns DMA frames taken at probe time: two bounce areas of
//! [`RUN_BLOCKS`] blocks, the transport's areas, and one frame for the two
//! areas' request headers and status bytes, so a request allocates nothing and
//! works whatever memory the caller's buffer is in (a domain window's frames
//! need not be physically contiguous). The layer copies each block once
//! between the caller's buffer and an area (one 4 KiB memcpy, small next to
//! a virtio round trip). This file checks the transport's contract itself
//! before any DMA (one request at a time, runs that fit an area, no touching
//! an area the device may still use), so no caller can make it unsound.
//! Every request (read, write, flush) waits at most [`REQUEST_TIMEOUT_NS`].
//! A request that times out, a write the device fails and a flush the
//! device fails each take the disk out of service here, for good (until a
//! reboot), with the [`Failure`] that did: after a timeout the device may
//! still write the areas, so they are never touched again; after a failed
//! write or flush, blocks the layer above was told are written (or
//! durable) may be lost, so no later flush may say otherwise (the fsyncgate
//! lesson: retrying a flush after a failed one can report success over
//! lost writes). The domain on the disk is then paused by the kernel
//! (`domains`), its last commit intact on the disk.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use persist::gather::{Area, BlockTransport, GatherError, Gathering};
use persist::{BLOCK_SIZE, BlockDevice, DeviceError};
use spin::Mutex;
use virtio_drivers::device::blk::{BlkReq, BlkResp, RespStatus, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::bus::DeviceFunction;
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};
use virtio_drivers::transport::{DeviceType, Transport};

use super::pci::{self, PciSetupError};
use super::virtio_hal::{self, KernelHal};
use crate::arch::timer;

/// 512-byte sectors per 4 KiB block.
const SECTORS_PER_BLOCK: u64 = (BLOCK_SIZE / SECTOR_SIZE) as u64;

/// VIRTIO_BLK_F_FLUSH (virtio 1.2, 5.2.3).
const FEATURE_FLUSH: u64 = 1 << 9;

/// How long one request may take before the disk is declared dead. Requests
/// take microseconds to milliseconds; the margin is for loaded TCG hosts.
const REQUEST_TIMEOUT_NS: u64 = 10_000_000_000;

/// Blocks a bounce area holds: the longest run one request moves (256 KiB:
/// under TCG a request costs about as much for 16 blocks as for 64).
const RUN_BLOCKS: usize = 64;

/// What a request was, for the words of a [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
    Flush,
}

impl fmt::Display for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Flush => "flush",
        })
    }
}

/// Why a disk was taken out of service: the first failure that did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A request got no answer within [`REQUEST_TIMEOUT_NS`].
    TimedOut { operation: Operation },
    /// The device failed (or refused) a write of the run starting at
    /// block `index`.
    WriteFailed { index: u64 },
    /// The device failed (or refused) a FLUSH: completed writes may not
    /// be on stable storage.
    FlushFailed,
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::TimedOut { operation } => write!(
                formatter,
                "no answer to a {operation} in {} s",
                REQUEST_TIMEOUT_NS / 1_000_000_000
            ),
            Failure::WriteFailed { index } => {
                write!(formatter, "a write failed (I/O error at block {index})")
            }
            Failure::FlushFailed => write!(formatter, "a flush failed (I/O error)"),
        }
    }
}

/// Bounce areas, persist's `Area::First` and `Area::Second`: one fills while
/// the other's write is in flight.
const AREAS: usize = 2;

/// The DMA frames: the bounce areas from offset 0, then one frame with each
/// area's request header (at `HEADERS_OFFSET + 128 * area`) and status byte
/// (64 bytes further).
const DMA_PAGES: usize = AREAS * RUN_BLOCKS + 1;
const HEADERS_OFFSET: usize = AREAS * RUN_BLOCKS * BLOCK_SIZE;

/// Where a PCI function sits, printed `bb:dd.f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciLocation {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl fmt::Display for PciLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

impl From<DeviceFunction> for PciLocation {
    fn from(function: DeviceFunction) -> PciLocation {
        PciLocation {
            bus: function.bus,
            device: function.device,
            function: function.function,
        }
    }
}

/// What the console and logs say about a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInfo {
    /// Position in PCI order, from 0.
    pub index: usize,
    pub location: PciLocation,
    /// 4 KiB blocks (a partial block at the end is not used).
    pub block_count: u64,
    pub is_read_only: bool,
    /// Whether the device has a volatile write cache that FLUSH empties.
    pub has_flush: bool,
}

impl DiskInfo {
    pub fn size_mib(&self) -> u64 {
        self.block_count * BLOCK_SIZE as u64 / (1024 * 1024)
    }
}

impl fmt::Display for DiskInfo {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "disk {}: {} MiB at PCI {}",
            self.index,
            self.size_mib(),
            self.location
        )?;
        if self.is_read_only {
            write!(formatter, " (read-only)")?;
        }
        Ok(())
    }
}

/// Why a virtio-blk device could not be brought up.
#[derive(Debug)]
pub enum ProbeError {
    Pci(PciSetupError),
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    Device(virtio_drivers::Error),
    /// No RAM for the disk's DMA frames.
    OutOfMemory,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Pci(error) => write!(formatter, "PCI set-up: {error}"),
            ProbeError::Transport(error) => write!(formatter, "virtio PCI transport: {error}"),
            ProbeError::Device(error) => write!(formatter, "virtio-blk initialisation: {error}"),
            ProbeError::OutOfMemory => write!(formatter, "no memory for DMA buffers"),
        }
    }
}

/// Frames from `virtio_hal::allocate_dma_frames`, given back on drop.
struct DmaFrames {
    physical: u64,
    pointer: NonNull<u8>,
    pages: usize,
}

impl Drop for DmaFrames {
    fn drop(&mut self) {
        // SAFETY: the frames came from allocate_dma_frames with this count;
        // VirtioDisk drops its device (which resets it, ending all DMA) before
        // this, so neither the CPU nor the device uses them any more.
        unsafe { virtio_hal::free_dma_frames(self.physical, self.pages) };
    }
}

/// A write sent and not waited for yet (`start_write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    token: u16,
    area: Area,
    index: u64,
    count: usize,
}

/// One virtio-blk device: persist's [`BlockTransport`] whose areas are its
/// bounce areas. Disks are never dropped (a `'static` lock each, around the
/// gathering layer), so the device keeps its DMA frames for good.
pub struct Disk {
    device: VirtIOBlk<KernelHal, PciTransport>,
    buffers: DmaFrames,
    info: DiskInfo,
    /// Why the disk takes no more requests, if it does not. After a
    /// timeout the request may still be in flight: the device could write
    /// the buffers at any time, so they are never touched again.
    failure: Option<Failure>,
    /// The write `start_write` sent, until `finish_write`.
    in_flight: Option<InFlight>,
}

impl fmt::Debug for Disk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Disk")
            .field("info", &self.info)
            .field("failure", &self.failure)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

// SAFETY: a Disk owns its device, its MMIO mapping and its DMA frames
// outright; nothing in it is tied to one CPU, so moving it (behind a lock,
// since every method takes &mut self or only reads) is sound.
unsafe impl Send for Disk {}

/// A disk and its gathering layer, behind the disk's lock.
type LockedDisk = Mutex<Gathering<Disk>>;

/// Why a request failed, without the heap (the page-fault path reads and
/// writes pages too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferError {
    /// An earlier request timed out, or a write or a flush failed; the
    /// disk takes no more.
    OutOfService(Failure),
    OutOfRange {
        index: u64,
        block_count: u64,
    },
    /// No answer within the timeout; the disk is now out of service.
    TimedOut,
    /// The device reported an I/O error.
    Io {
        index: u64,
    },
    /// The device reported an I/O error for a FLUSH.
    FlushIo,
    /// The device does not support the operation.
    Unsupported,
    /// virtio-drivers refused or failed the request.
    Driver(virtio_drivers::Error),
    /// The disk's lock was held where the page-fault path needed it: a
    /// broken invariant (see memory::windows), reported rather than deadlocked.
    Busy,
    /// The gathering layer asked for a request the transport's contract
    /// rules out: a broken invariant, refused before any DMA.
    BadRequest {
        operation: &'static str,
    },
}

/// The error of a request through `layer`: the gathering layer's own
/// out-of-service refusal (after a failed write-behind) carries the
/// failure this file recorded when the write failed.
fn transfer_error(layer: &Gathering<Disk>, error: GatherError<TransferError>) -> TransferError {
    match error {
        GatherError::OutOfService => TransferError::OutOfService(
            layer
                .transport()
                .failure
                .unwrap_or(Failure::WriteFailed { index: 0 }),
        ),
        GatherError::OutOfRange { index, block_count } => {
            TransferError::OutOfRange { index, block_count }
        }
        GatherError::Transport(error) => error,
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::OutOfService(failure) => {
                write!(formatter, "the disk is out of service: {failure}")
            }
            TransferError::OutOfRange { index, block_count } => write!(
                formatter,
                "block {index} is past the end of {block_count} blocks"
            ),
            TransferError::TimedOut => write!(
                formatter,
                "no answer in {} s, disk taken out of service",
                REQUEST_TIMEOUT_NS / 1_000_000_000
            ),
            TransferError::Io { index } => write!(formatter, "I/O error at block {index}"),
            TransferError::FlushIo => write!(formatter, "I/O error on FLUSH"),
            TransferError::Unsupported => write!(formatter, "operation not supported"),
            TransferError::Driver(error) => write!(formatter, "{error}"),
            TransferError::Busy => write!(formatter, "disk lock held by the faulting code"),
            TransferError::BadRequest { operation } => {
                write!(
                    formatter,
                    "{operation} refused: it breaks the driver's contract"
                )
            }
        }
    }
}

/// A domain image's handle on its disk: persist's `BlockDevice`.
pub struct VirtioDisk {
    disk: &'static LockedDisk,
    info: DiskInfo,
}

impl fmt::Debug for VirtioDisk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("VirtioDisk")
            .field("info", &self.info)
            .finish()
    }
}

/// The page-fault path's handle on a disk: whole blocks in and out of the
/// caller's buffer, with no heap and no waiting for the lock.
#[derive(Clone, Copy)]
pub struct PagerDisk {
    disk: &'static LockedDisk,
}

impl fmt::Debug for PagerDisk {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PagerDisk")
    }
}

impl PagerDisk {
    /// Reads block `index` into `buffer`.
    pub fn read(&self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), TransferError> {
        let mut disk = self.disk.try_lock().ok_or(TransferError::Busy)?;
        let read = disk.read(index, buffer);
        read.map_err(|error| transfer_error(&disk, error))
    }

    /// Reads block `index` from the device in a request of its own: no read
    /// ahead, nothing from the bounce area (`diskbench`'s per-request figure).
    pub fn read_uncached(
        &self,
        index: u64,
        buffer: &mut [u8; BLOCK_SIZE],
    ) -> Result<(), TransferError> {
        let mut disk = self.disk.try_lock().ok_or(TransferError::Busy)?;
        let read = disk.read_uncached(index, buffer);
        read.map_err(|error| transfer_error(&disk, error))
    }

    /// Writes `buffer` to block `index` (durable at the next flush).
    pub fn write(&self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), TransferError> {
        let mut disk = self.disk.try_lock().ok_or(TransferError::Busy)?;
        let written = disk.write(index, buffer);
        written.map_err(|error| transfer_error(&disk, error))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

impl VirtioDisk {
    pub fn info(&self) -> DiskInfo {
        self.info
    }

    /// Why the disk is out of service, if it is (a request timed out, or
    /// a write or a flush failed): its domain must be paused.
    pub fn failure(&self) -> Option<Failure> {
        self.disk.lock().transport().failure
    }

    /// A handle for the page-fault path.
    pub fn pager_disk(&self) -> PagerDisk {
        PagerDisk { disk: self.disk }
    }

    fn error(&self, operation: &'static str, error: TransferError) -> DeviceError {
        match error {
            TransferError::OutOfRange { index, block_count } => {
                DeviceError::OutOfRange { index, block_count }
            }
            _ => DeviceError::Io {
                operation,
                message: format!(
                    "virtio-blk disk {} at PCI {}: {error}",
                    self.info.index, self.info.location
                ),
            },
        }
    }
}

impl Disk {
    fn check_usable(&self) -> Result<(), TransferError> {
        match self.failure {
            Some(failure) => Err(TransferError::OutOfService(failure)),
            None => Ok(()),
        }
    }

    /// Takes the disk out of service for `failure` (the first one stays).
    fn fail(&mut self, failure: Failure) {
        if self.failure.is_none() {
            log::warn!("disk {}: out of service: {failure}", self.info.index);
            self.failure = Some(failure);
        }
    }

    /// Waits for the request `token` (a `operation`) to complete, polling
    /// the used ring, for at most [`REQUEST_TIMEOUT_NS`].
    fn wait_for(&mut self, token: u16, operation: Operation) -> Result<(), TransferError> {
        let started = timer::uptime_ns();
        let deadline = started + REQUEST_TIMEOUT_NS;
        while self.device.peek_used() != Some(token) {
            if timer::uptime_ns() > deadline {
                self.fail(Failure::TimedOut { operation });
                return Err(TransferError::TimedOut);
            }
            core::hint::spin_loop();
        }
        let waited_ns = timer::uptime_ns().saturating_sub(started);
        DISK_WAIT_NS.fetch_add(waited_ns, Ordering::Relaxed);
        DISK_REQUESTS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a request for `count` blocks from `index` through bounce area
    /// `area`; returns its token. The caller waits for it (`finish`) before
    /// touching that area or sending another request, which `slot` and
    /// this function check.
    fn submit(
        &mut self,
        direction: Direction,
        area: Area,
        index: u64,
        count: usize,
    ) -> Result<u16, TransferError> {
        self.check_usable()?;
        let operation = match direction {
            Direction::Read => "read",
            Direction::Write => "start write",
        };
        if self.in_flight.is_some() || count == 0 || count > RUN_BLOCKS {
            return Err(TransferError::BadRequest { operation });
        }
        let last = index.saturating_add(count as u64 - 1);
        if last >= self.info.block_count {
            return Err(TransferError::OutOfRange {
                index: last,
                block_count: self.info.block_count,
            });
        }
        let sector = (index * SECTORS_PER_BLOCK) as usize;
        // SAFETY: the DMA frames are this disk's alone and no request is in
        // flight (checked above; a timed-out disk refuses new ones, also
        // checked), so these are the only references; area.index() < AREAS
        // and count <= RUN_BLOCKS (checked above).
        let (request, data, response) =
            unsafe { request_parts(self.buffers.pointer.as_ptr(), area.index(), count) };
        *request = BlkReq::default();
        *response = BlkResp::default();
        // SAFETY: the request, data and response live in this disk's DMA
        // frames and nothing touches them until the request completes
        // (`finish`): `slot` refuses the area while it is in flight, and on
        // a timeout the disk never touches them again.
        let submitted = unsafe {
            match direction {
                Direction::Read => self.device.read_blocks_nb(sector, request, data, response),
                Direction::Write => self.device.write_blocks_nb(sector, request, data, response),
            }
        };
        submitted.map_err(TransferError::Driver)
    }

    /// Waits for the request `submit` sent and completes it.
    fn finish(&mut self, direction: Direction, in_flight: InFlight) -> Result<(), TransferError> {
        let InFlight {
            token,
            area,
            index,
            count,
        } = in_flight;
        let operation = match direction {
            Direction::Read => Operation::Read,
            Direction::Write => Operation::Write,
        };
        self.wait_for(token, operation)?;
        // SAFETY: the same area and count as submitted (so the same
        // buffers), the device is done with them, and nothing else refers
        // to them.
        let (request, data, response) =
            unsafe { request_parts(self.buffers.pointer.as_ptr(), area.index(), count) };
        // SAFETY: the buffers `submit` passed with this token.
        let completed = unsafe {
            match direction {
                Direction::Read => self
                    .device
                    .complete_read_blocks(token, request, data, response),
                Direction::Write => self
                    .device
                    .complete_write_blocks(token, request, data, response),
            }
        };
        let status = response.status();
        completed.map_err(|error| {
            // A failed read loses nothing; a failed write may have lost
            // blocks the layer above was told are written.
            if direction == Direction::Write {
                self.fail(Failure::WriteFailed { index });
            }
            match status {
                RespStatus::IO_ERR => TransferError::Io { index },
                RespStatus::UNSUPPORTED => TransferError::Unsupported,
                _ => TransferError::Driver(error),
            }
        })
    }
}

/// The device under persist's gathering layer. Each method checks the
/// contract before it touches DMA memory, so the layer's logic, tested on
/// the host, is not what keeps the `unsafe` here sound.
impl BlockTransport for Disk {
    type Error = TransferError;

    const RUN_BLOCKS: usize = RUN_BLOCKS;

    fn block_count(&self) -> u64 {
        self.info.block_count
    }

    fn slot(&mut self, area: Area, slot: usize) -> Result<&mut [u8; BLOCK_SIZE], TransferError> {
        self.check_usable()?;
        let is_in_flight = self.in_flight.is_some_and(|write| write.area == area);
        if is_in_flight || slot >= RUN_BLOCKS {
            return Err(TransferError::BadRequest { operation: "slot" });
        }
        // SAFETY: the bounce area is this disk's and no request uses it
        // (the one in flight, if any, uses the other: checked above, as is
        // a timeout, after which the device might); the slot is inside the
        // area (checked above); &mut self makes the reference unique.
        Ok(unsafe {
            &mut *self
                .buffers
                .pointer
                .as_ptr()
                .add((area.index() * RUN_BLOCKS + slot) * BLOCK_SIZE)
                .cast::<[u8; BLOCK_SIZE]>()
        })
    }

    fn read(&mut self, area: Area, first: u64, count: usize) -> Result<(), TransferError> {
        let token = self.submit(Direction::Read, area, first, count)?;
        let request = InFlight {
            token,
            area,
            index: first,
            count,
        };
        self.finish(Direction::Read, request)
    }

    fn start_write(&mut self, area: Area, first: u64, count: usize) -> Result<(), TransferError> {
        let token = self
            .submit(Direction::Write, area, first, count)
            .inspect_err(|error| {
                // The layer goes out of service on it: so does the disk.
                if !matches!(error, TransferError::OutOfService(_)) {
                    self.fail(Failure::WriteFailed { index: first });
                }
            })?;
        self.in_flight = Some(InFlight {
            token,
            area,
            index: first,
            count,
        });
        Ok(())
    }

    fn finish_write(&mut self) -> Result<(), TransferError> {
        let Some(write) = self.in_flight.take() else {
            return Err(TransferError::BadRequest {
                operation: "finish write",
            });
        };
        self.finish(Direction::Write, write)
    }

    /// Sends VIRTIO_BLK_T_FLUSH, so every completed write is on stable
    /// storage when this returns (virtio 1.2, 5.2.6), and waits for it as
    /// for any request, at most [`REQUEST_TIMEOUT_NS`]. A device that does
    /// not offer VIRTIO_BLK_F_FLUSH has no volatile cache: its completed
    /// writes are already durable, and there is nothing to send. A flush
    /// that fails takes the disk out of service: the writes it was to make
    /// durable may be lost, and a later flush must not report them durable.
    fn flush(&mut self) -> Result<(), TransferError> {
        self.check_usable()?;
        if self.in_flight.is_some() {
            return Err(TransferError::BadRequest { operation: "flush" });
        }
        if IS_FLUSH_SKIPPED_FOR_TESTS.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The first area's header and status byte: no request is in flight
        // (checked above), so neither is in use.
        // SAFETY: the DMA frames are this disk's alone, no request is in
        // flight and the disk is not out of service (both checked above),
        // so these are the only references; area 0 < AREAS, no data.
        let (request, _, response) =
            unsafe { request_parts(self.buffers.pointer.as_ptr(), Area::First.index(), 0) };
        *request = BlkReq::default();
        *response = BlkResp::default();
        // SAFETY: the request and status byte live in this disk's DMA frames
        // and nothing touches them until the flush completes below; on a
        // timeout the disk never touches them again.
        let submitted = unsafe { self.device.flush_nb(request, response) };
        let token = match submitted {
            Ok(Some(token)) => token,
            Ok(None) => return Ok(()),
            Err(error) => {
                self.fail(Failure::FlushFailed);
                return Err(TransferError::Driver(error));
            }
        };
        self.wait_for(token, Operation::Flush)?;
        // SAFETY: the same parts as submitted with this token; the device
        // is done with them and nothing else refers to them.
        let (request, _, response) =
            unsafe { request_parts(self.buffers.pointer.as_ptr(), Area::First.index(), 0) };
        // SAFETY: the buffers `flush_nb` passed with this token.
        let completed = unsafe { self.device.complete_flush(token, request, response) };
        let status = response.status();
        completed.map_err(|error| {
            self.fail(Failure::FlushFailed);
            match status {
                RespStatus::IO_ERR => TransferError::FlushIo,
                RespStatus::UNSUPPORTED => TransferError::Unsupported,
                _ => TransferError::Driver(error),
            }
        })
    }
}

/// The request header, data and status byte of bounce area `area`'s
/// request of `count` blocks.
///
/// # Safety
///
/// `base` is a disk's DMA frames ([`DMA_PAGES`] of them), `area < AREAS`,
/// `count <= RUN_BLOCKS`, and no other reference to these parts lives as
/// long as the returned ones.
unsafe fn request_parts<'a>(
    base: *mut u8,
    area: usize,
    count: usize,
) -> (&'a mut BlkReq, &'a mut [u8], &'a mut BlkResp) {
    let header = HEADERS_OFFSET + 128 * area;
    // SAFETY: the offsets are inside the frames (area < AREAS, count <=
    // RUN_BLOCKS: the caller's promise) and suitably aligned (frame-aligned
    // base, 128-byte and 64-byte offsets); the caller promises the
    // references are the only ones.
    unsafe {
        (
            &mut *base.add(header).cast::<BlkReq>(),
            core::slice::from_raw_parts_mut(
                base.add(area * RUN_BLOCKS * BLOCK_SIZE),
                count * BLOCK_SIZE,
            ),
            &mut *base.add(header + 64).cast::<BlkResp>(),
        )
    }
}

// Invariant (memory::windows): no `buffer` here is ever a domain window, so
// nothing faults on a window while a disk lock is held.
impl BlockDevice for VirtioDisk {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let read = PagerDisk { disk: self.disk }.read(index, buffer);
        read.map_err(|error| self.error("read", error))
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        let written = PagerDisk { disk: self.disk }.write(index, buffer);
        written.map_err(|error| self.error("write", error))
    }

    /// Sends the run waiting in the bounce area, waits for every write, then
    /// VIRTIO_BLK_T_FLUSH (see [`Disk`]'s `flush`).
    fn flush(&mut self) -> Result<(), DeviceError> {
        let mut disk = self.disk.lock();
        let flushed = disk.flush().map_err(|error| transfer_error(&disk, error));
        drop(disk);
        flushed.map_err(|error| self.error("flush", error))
    }

    fn block_count(&self) -> u64 {
        self.info.block_count
    }
}

/// Set by [`skip_flushes_for_tests`]: flushes send nothing.
static IS_FLUSH_SKIPPED_FOR_TESTS: AtomicBool = AtomicBool::new(false);

/// Makes every flush return at once without sending VIRTIO_BLK_T_FLUSH,
/// so no commit is durable: `disk.test_skip_flush=1` on the command line,
/// for the crash tests' negative control (`tests/tests/crash_states.rs`
/// must then find lost commits). Says so loudly at boot.
pub fn skip_flushes_for_tests() {
    IS_FLUSH_SKIPPED_FOR_TESTS.store(true, Ordering::Relaxed);
    crate::println!(
        "WARNING: disk.test_skip_flush=1: virtio-blk flushes are skipped, commits are NOT \
         durable (a test knob; never use it for real data)"
    );
}

/// Time spent waiting for requests to complete, over all disks since boot
/// (a migration reports how much of its time went there).
pub static DISK_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// Requests completed, over all disks since boot.
pub static DISK_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// What the last probe found, for the console: each disk and its lock
/// (to say whether it is out of service).
static PROBED: Mutex<Option<Vec<(DiskInfo, &'static LockedDisk)>>> = Mutex::new(None);

/// Finds every virtio-blk device, in PCI order, and brings each up. A device
/// that fails is logged and skipped. Probing resets the devices and disks
/// live for good, so there is one probe per boot: a second returns nothing.
pub fn probe_disks() -> Vec<VirtioDisk> {
    if PROBED.lock().is_some() {
        log::warn!("disks were probed already");
        return Vec::new();
    }
    virtio_hal::bounce_frame();
    let mut root = pci::root();
    let mut disks = Vec::new();
    for (function, info) in pci::functions(&root) {
        if virtio_device_type(&info) != Some(DeviceType::Block) {
            continue;
        }
        let location = PciLocation::from(function);
        match bring_up(&mut root, function, disks.len()) {
            Ok(disk) => {
                let info = disk.info();
                log::info!("{info}");
                if !info.has_flush {
                    log::warn!(
                        "disk {}: no VIRTIO_BLK_F_FLUSH, relying on write-through",
                        info.index
                    );
                }
                disks.push(disk);
            }
            Err(error) => log::error!("virtio-blk at PCI {location}: {error}; skipped"),
        }
    }
    if disks.is_empty() {
        log::info!("no disks");
    }
    *PROBED.lock() = Some(disks.iter().map(|disk| (disk.info, disk.disk)).collect());
    disks
}

/// The disks the last probe found; probes (and releases the devices) if
/// nothing has probed yet.
pub fn known_disks() -> Vec<DiskInfo> {
    if let Some(known) = PROBED.lock().as_ref() {
        return known.iter().map(|(info, _)| *info).collect();
    }
    probe_disks().iter().map(VirtioDisk::info).collect()
}

/// Why disk `index` is out of service, if it is (none for a disk the probe
/// did not find, or one whose lock is held right now).
pub fn failure_of(index: usize) -> Option<Failure> {
    let probed = PROBED.lock();
    let (_, disk) = probed
        .as_ref()?
        .iter()
        .find(|(info, _)| info.index == index)?;
    disk.try_lock()?.transport().failure
}

fn bring_up(
    root: &mut virtio_drivers::transport::pci::bus::PciRoot<pci::PortConfigurationAccess>,
    function: DeviceFunction,
    index: usize,
) -> Result<VirtioDisk, ProbeError> {
    pci::prepare_device(root, function).map_err(ProbeError::Pci)?;
    let mut transport =
        PciTransport::new::<KernelHal, _>(root, function).map_err(ProbeError::Transport)?;
    let has_flush = transport.read_device_features() & FEATURE_FLUSH != 0;
    let (physical, pointer) =
        virtio_hal::allocate_dma_frames(DMA_PAGES).ok_or(ProbeError::OutOfMemory)?;
    let buffers = DmaFrames {
        physical,
        pointer,
        pages: DMA_PAGES,
    };
    let mut device = VirtIOBlk::<KernelHal, _>::new(transport).map_err(ProbeError::Device)?;
    // Completion is polled; the device need not interrupt.
    device.disable_interrupts();
    let info = DiskInfo {
        index,
        location: PciLocation::from(function),
        block_count: device.capacity() / SECTORS_PER_BLOCK,
        is_read_only: device.readonly(),
        has_flush,
    };
    // Disks live as long as the kernel: the page-fault path may use any.
    let disk = alloc::boxed::Box::leak(alloc::boxed::Box::new(Mutex::new(Gathering::new(Disk {
        device,
        buffers,
        info,
        failure: None,
        in_flight: None,
    }))));
    Ok(VirtioDisk { disk, info })
}

//! Write gathering, read-ahead and write-behind as a `BlockDevice` layer.
//!
//! A disk request's round trip costs about the same for one block as for
//! many, so [`Gathering`] turns persist's one-block calls into runs. It sits
//! on a [`BlockTransport`], a device that moves runs of up to
//! [`BlockTransport::RUN_BLOCKS`] blocks between the disk and one of two
//! buffers of its own (*areas*), and holds every decision about them; the
//! transport holds none. In the kernel the transport is virtio-blk and the
//! areas are its DMA bounce areas, so the layer copies each block once, the
//! copy the driver needs anyway (a caller's buffer may sit anywhere).
//!
//! - **Gathering.** Writes to consecutive blocks wait in the current area
//!   and go as one request when the run breaks (a write elsewhere), fills
//!   the area, or anything else comes (a read or a flush). A rewrite of a
//!   block in the run just replaces it there. This is a disk's volatile
//!   cache, which persist already assumes: nothing is durable before
//!   `flush`, and `flush` sends the run first.
//! - **Write-behind.** A run goes without waiting for it
//!   ([`BlockTransport::start_write`]) while the next run fills the other
//!   area. Anything else (a read from the disk, a flush, the next run)
//!   waits for it first, so requests never overlap: nothing read or flushed
//!   overtakes a write in flight.
//! - **Out of service.** A write-behind that fails means blocks the caller
//!   was told are written are not. From then on the layer refuses every
//!   request ([`GatherError::OutOfService`]), so no later flush can say the
//!   lost blocks are durable.
//! - **Read-ahead.** A read that follows the block read last reads ahead to
//!   the end of the area (or of the disk), and the next reads come from
//!   there; a migration's pre-copy and a domain touching its memory in
//!   order read that way. A read of a block waiting in a run of writes is
//!   served from the area too.
//!
//! No request allocates, and nothing here is `unsafe`: a transport keeping
//! its buffers in DMA memory checks the contract below itself.
//! [`DeviceTransport`] is a transport over any [`BlockDevice`], so the host
//! tests run the layer over [`crate::FaultyDevice`]'s power cuts.

mod device_transport;
#[cfg(test)]
mod tests;

use core::fmt;

pub use device_transport::DeviceTransport;

use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::DeviceError;

/// One of a transport's two buffers of [`BlockTransport::RUN_BLOCKS`] blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    First,
    Second,
}

impl Area {
    /// The area that is not this one.
    pub fn other(self) -> Area {
        match self {
            Area::First => Area::Second,
            Area::Second => Area::First,
        }
    }

    /// 0 for the first area, 1 for the second.
    pub fn index(self) -> usize {
        match self {
            Area::First => 0,
            Area::Second => 1,
        }
    }
}

/// A device that moves runs of blocks between the disk and two areas of its
/// own, at most one request at a time: what [`Gathering`] needs below it.
///
/// The contract, which [`Gathering`] keeps and a transport may enforce by
/// refusing: while a write started by [`start_write`](Self::start_write) is
/// in flight, the only request is [`finish_write`](Self::finish_write), and
/// the only slots touched are the other area's; a run is 1 to
/// [`RUN_BLOCKS`](Self::RUN_BLOCKS) blocks, inside the disk.
pub trait BlockTransport {
    /// Why a request failed.
    type Error;

    /// Blocks one area holds: the longest run one request moves.
    const RUN_BLOCKS: usize;

    /// How many blocks the disk holds.
    fn block_count(&self) -> u64;

    /// Slot `slot` of `area` (below `RUN_BLOCKS`), for the layer to fill
    /// before a write or read after one. Fails when the CPU may not touch
    /// the area (its write is in flight, or the device may still use it).
    fn slot(&mut self, area: Area, slot: usize) -> Result<&mut [u8; BLOCK_SIZE], Self::Error>;

    /// Reads blocks `first..first + count` into slots `0..count` of `area`
    /// and waits for them.
    fn read(&mut self, area: Area, first: u64, count: usize) -> Result<(), Self::Error>;

    /// Sends slots `0..count` of `area` to blocks `first..first + count`
    /// without waiting: the write may complete at any time until
    /// [`finish_write`](Self::finish_write).
    fn start_write(&mut self, area: Area, first: u64, count: usize) -> Result<(), Self::Error>;

    /// Waits for the write in flight and says how it went.
    fn finish_write(&mut self) -> Result<(), Self::Error>;

    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), Self::Error>;
}

/// Why [`Gathering`] could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatherError<E> {
    /// A write-behind failed earlier: the layer takes no more requests.
    OutOfService,
    /// A block index past the end of the disk.
    OutOfRange {
        /// The block asked for.
        index: u64,
        /// How many blocks the disk has.
        block_count: u64,
    },
    /// The transport failed the request.
    Transport(E),
}

impl<E: fmt::Display> fmt::Display for GatherError<E> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatherError::OutOfService => write!(
                formatter,
                "an earlier write failed after it was reported done; the disk is out of service"
            ),
            GatherError::OutOfRange { index, block_count } => write!(
                formatter,
                "block {index} is past the end of {block_count} blocks"
            ),
            GatherError::Transport(error) => write!(formatter, "{error}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for GatherError<E> {}

impl<E: Into<DeviceError>> From<GatherError<E>> for DeviceError {
    fn from(error: GatherError<E>) -> DeviceError {
        match error {
            GatherError::OutOfService => DeviceError::OutOfService,
            GatherError::OutOfRange { index, block_count } => {
                DeviceError::OutOfRange { index, block_count }
            }
            GatherError::Transport(error) => error.into(),
        }
    }
}

/// What the current area holds between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staged {
    Nothing,
    /// Blocks `first..first + count`, written by the caller, not yet sent.
    Writes {
        first: u64,
        count: usize,
    },
    /// Blocks `first..first + count` as the disk had them, read ahead.
    ReadAhead {
        first: u64,
        count: usize,
    },
}

impl Staged {
    /// The slot of block `index` in the area, if it holds it.
    fn slot_of(self, index: u64) -> Option<usize> {
        let (Staged::Writes { first, count } | Staged::ReadAhead { first, count }) = self else {
            return None;
        };
        let slot = index.checked_sub(first)?;
        (slot < count as u64).then_some(slot as usize)
    }
}

/// persist's [`BlockDevice`] over a [`BlockTransport`]: gathers writes into
/// runs, sends them behind the caller's back, and reads ahead (the module
/// docs say when).
#[derive(Debug)]
pub struct Gathering<T> {
    transport: T,
    /// What the current area holds.
    staged: Staged,
    /// The area that fills; the other one's write may be in flight.
    area: Area,
    /// Whether the other area's write was started and not finished.
    is_write_in_flight: bool,
    /// The block the last read asked for: a read of the next one reads
    /// ahead.
    last_read: Option<u64>,
    /// Whether a write-behind failed (the out-of-service rule).
    has_lost_writes: bool,
}

impl<T: BlockTransport> Gathering<T> {
    /// The layer over `transport`, with nothing staged.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            staged: Staged::Nothing,
            area: Area::First,
            is_write_in_flight: false,
            last_read: None,
            has_lost_writes: false,
        }
    }

    /// The transport below.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The transport below, dropping what has not reached it (writes not
    /// sent or not finished): what a power cut would do to them.
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Whether a write-behind failed, so that every request is refused.
    pub fn is_out_of_service(&self) -> bool {
        self.has_lost_writes
    }

    /// Reads block `index`: from the current area when it holds the block,
    /// else from the disk, reading ahead when the last read was the block
    /// before.
    pub fn read(
        &mut self,
        index: u64,
        buffer: &mut [u8; BLOCK_SIZE],
    ) -> Result<(), GatherError<T::Error>> {
        self.check_usable()?;
        self.check_range(index)?;
        let is_sequential = self.last_read == index.checked_sub(1);
        self.last_read = Some(index);
        if let Some(slot) = self.staged.slot_of(index) {
            buffer.copy_from_slice(self.slot(slot)?);
            return Ok(());
        }
        let count = if is_sequential {
            (self.transport.block_count() - index).min(T::RUN_BLOCKS as u64) as usize
        } else {
            1
        };
        self.read_run(index, count)?;
        self.staged = Staged::ReadAhead {
            first: index,
            count,
        };
        buffer.copy_from_slice(self.slot(0)?);
        Ok(())
    }

    /// Reads block `index` from the disk in a request of its own: no
    /// read-ahead, nothing from the area, and the next read does not count
    /// it as the last (the kernel's `diskbench` measures requests this way).
    pub fn read_uncached(
        &mut self,
        index: u64,
        buffer: &mut [u8; BLOCK_SIZE],
    ) -> Result<(), GatherError<T::Error>> {
        self.check_usable()?;
        self.check_range(index)?;
        self.read_run(index, 1)?;
        buffer.copy_from_slice(self.slot(0)?);
        Ok(())
    }

    /// Stages a write of block `index`: it joins the run of writes waiting
    /// in the current area when it extends (or rewrites) it; otherwise that
    /// run goes and a new one starts.
    pub fn write(
        &mut self,
        index: u64,
        buffer: &[u8; BLOCK_SIZE],
    ) -> Result<(), GatherError<T::Error>> {
        self.check_usable()?;
        self.check_range(index)?;
        let (slot, staged) = match self.staged {
            Staged::Writes { first, count } => match self.staged.slot_of(index) {
                Some(slot) => (slot, self.staged),
                None if index == first + count as u64 && count < T::RUN_BLOCKS => (
                    count,
                    Staged::Writes {
                        first,
                        count: count + 1,
                    },
                ),
                None => {
                    self.send_writes()?;
                    (
                        0,
                        Staged::Writes {
                            first: index,
                            count: 1,
                        },
                    )
                }
            },
            Staged::Nothing | Staged::ReadAhead { .. } => (
                0,
                Staged::Writes {
                    first: index,
                    count: 1,
                },
            ),
        };
        // A slot the transport refuses is left as it was, and so is what
        // the area is known to hold.
        self.slot(slot)?.copy_from_slice(buffer);
        self.staged = staged;
        Ok(())
    }

    /// Sends the run waiting in the area, waits for every write, then has
    /// the transport make them durable.
    pub fn flush(&mut self) -> Result<(), GatherError<T::Error>> {
        self.check_usable()?;
        self.send_writes()?;
        self.finish_in_flight()?;
        self.transport.flush().map_err(GatherError::Transport)
    }

    fn check_usable(&self) -> Result<(), GatherError<T::Error>> {
        if self.has_lost_writes {
            return Err(GatherError::OutOfService);
        }
        Ok(())
    }

    fn check_range(&self, index: u64) -> Result<(), GatherError<T::Error>> {
        let block_count = self.transport.block_count();
        if index >= block_count {
            return Err(GatherError::OutOfRange { index, block_count });
        }
        Ok(())
    }

    /// Slot `slot` of the current area.
    fn slot(&mut self, slot: usize) -> Result<&mut [u8; BLOCK_SIZE], GatherError<T::Error>> {
        self.transport
            .slot(self.area, slot)
            .map_err(GatherError::Transport)
    }

    /// Reads `count` blocks from `index` into the current area, after the
    /// run waiting there and the write in flight are on their way and done.
    fn read_run(&mut self, index: u64, count: usize) -> Result<(), GatherError<T::Error>> {
        self.send_writes()?;
        self.staged = Staged::Nothing;
        self.finish_in_flight()?;
        self.transport
            .read(self.area, index, count)
            .map_err(GatherError::Transport)
    }

    /// Sends the run of writes waiting in the current area, if any, without
    /// waiting for it (after the write in flight, if any, is done): the next
    /// run fills the other area meanwhile.
    fn send_writes(&mut self) -> Result<(), GatherError<T::Error>> {
        let Staged::Writes { first, count } = self.staged else {
            return Ok(());
        };
        self.staged = Staged::Nothing;
        self.finish_in_flight()?;
        if let Err(error) = self.transport.start_write(self.area, first, count) {
            self.has_lost_writes = true;
            return Err(GatherError::Transport(error));
        }
        self.is_write_in_flight = true;
        self.area = self.area.other();
        Ok(())
    }

    /// Waits for the write in flight, if any. If it failed, the layer goes
    /// out of service: its caller was told the blocks were written.
    fn finish_in_flight(&mut self) -> Result<(), GatherError<T::Error>> {
        if !self.is_write_in_flight {
            return Ok(());
        }
        self.is_write_in_flight = false;
        if let Err(error) = self.transport.finish_write() {
            self.has_lost_writes = true;
            return Err(GatherError::Transport(error));
        }
        Ok(())
    }
}

impl<T> BlockDevice for Gathering<T>
where
    T: BlockTransport,
    T::Error: Into<DeviceError>,
{
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.read(index, buffer).map_err(DeviceError::from)
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.write(index, buffer).map_err(DeviceError::from)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        Gathering::flush(self).map_err(DeviceError::from)
    }

    fn block_count(&self) -> u64 {
        self.transport.block_count()
    }
}

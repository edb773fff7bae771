//! A `BlockTransport` over any `BlockDevice`: the gathering layer on the host.

use alloc::vec;
use alloc::vec::Vec;

use super::{Area, BlockTransport};
use crate::device::{BLOCK_SIZE, BlockDevice};
use crate::error::DeviceError;

/// A run of blocks sent and not finished yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    area: Area,
    first: u64,
    count: usize,
}

/// A [`BlockTransport`] whose areas are two buffers on the heap and whose
/// disk is `D`, one block call per block of a run.
///
/// A started write reaches `D` only at [`BlockTransport::finish_write`],
/// the latest a real device may complete it; and the transport refuses
/// ([`DeviceError::BadRequest`]) everything the contract rules out, so a
/// layer that let a read or flush overtake a write in flight fails here
/// rather than passing by luck. With [`crate::FaultyDevice`] as `D`, the
/// power-cut tests run through [`super::Gathering`].
#[derive(Debug)]
pub struct DeviceTransport<D, const RUN_BLOCKS: usize = 64> {
    device: D,
    /// The two areas of `RUN_BLOCKS` blocks each, by [`Area::index`].
    areas: [Vec<[u8; BLOCK_SIZE]>; 2],
    in_flight: Option<Run>,
}

impl<D: BlockDevice, const RUN_BLOCKS: usize> DeviceTransport<D, RUN_BLOCKS> {
    /// A transport over `device` (allocates its two areas once).
    pub fn new(device: D) -> Self {
        Self {
            device,
            areas: [
                vec![[0; BLOCK_SIZE]; RUN_BLOCKS],
                vec![[0; BLOCK_SIZE]; RUN_BLOCKS],
            ],
            in_flight: None,
        }
    }

    /// The device below.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device below, dropping a write started and not finished: what a
    /// power cut does to a request still on its way.
    pub fn into_device(self) -> D {
        self.device
    }

    /// Refuses `operation` while a write is in flight.
    fn check_idle(&self, operation: &'static str) -> Result<(), DeviceError> {
        match self.in_flight {
            Some(_) => Err(DeviceError::BadRequest { operation }),
            None => Ok(()),
        }
    }

    /// Refuses a run an area cannot hold.
    fn check_count(count: usize, operation: &'static str) -> Result<(), DeviceError> {
        if count == 0 || count > RUN_BLOCKS {
            return Err(DeviceError::BadRequest { operation });
        }
        Ok(())
    }
}

impl<D: BlockDevice, const RUN_BLOCKS: usize> BlockTransport for DeviceTransport<D, RUN_BLOCKS> {
    type Error = DeviceError;

    const RUN_BLOCKS: usize = RUN_BLOCKS;

    fn block_count(&self) -> u64 {
        self.device.block_count()
    }

    fn slot(&mut self, area: Area, slot: usize) -> Result<&mut [u8; BLOCK_SIZE], DeviceError> {
        let is_in_flight = self.in_flight.is_some_and(|run| run.area == area);
        let refused = DeviceError::BadRequest { operation: "slot" };
        if is_in_flight {
            return Err(refused);
        }
        self.areas[area.index()].get_mut(slot).ok_or(refused)
    }

    fn read(&mut self, area: Area, first: u64, count: usize) -> Result<(), DeviceError> {
        self.check_idle("read")?;
        Self::check_count(count, "read")?;
        let blocks = self.areas[area.index()].iter_mut().take(count);
        for (index, buffer) in (first..).zip(blocks) {
            self.device.read_block(index, buffer)?;
        }
        Ok(())
    }

    fn start_write(&mut self, area: Area, first: u64, count: usize) -> Result<(), DeviceError> {
        self.check_idle("start write")?;
        Self::check_count(count, "start write")?;
        self.in_flight = Some(Run { area, first, count });
        Ok(())
    }

    fn finish_write(&mut self) -> Result<(), DeviceError> {
        let Some(Run { area, first, count }) = self.in_flight.take() else {
            return Err(DeviceError::BadRequest {
                operation: "finish write",
            });
        };
        let blocks = self.areas[area.index()].iter().take(count);
        for (index, buffer) in (first..).zip(blocks) {
            self.device.write_block(index, buffer)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.check_idle("flush")?;
        self.device.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    fn transport() -> DeviceTransport<MemoryDevice, 4> {
        DeviceTransport::new(MemoryDevice::new(8))
    }

    #[test]
    fn a_started_write_lands_at_finish_and_reads_back() {
        let mut transport = transport();
        for slot in 0..2 {
            *transport.slot(Area::First, slot).unwrap() = [slot as u8 + 1; BLOCK_SIZE];
        }
        transport.start_write(Area::First, 5, 2).unwrap();
        let mut block = [0; BLOCK_SIZE];
        transport.device.read_block(5, &mut block).unwrap();
        assert_eq!(block, [0; BLOCK_SIZE], "not before finish_write");
        transport.finish_write().unwrap();
        transport.read(Area::Second, 5, 2).unwrap();
        assert_eq!(*transport.slot(Area::Second, 1).unwrap(), [2; BLOCK_SIZE]);
    }

    #[test]
    fn requests_beside_a_write_in_flight_and_oversized_runs_are_refused() {
        let mut transport = transport();
        transport.start_write(Area::First, 0, 1).unwrap();
        let refused = |operation| Err(DeviceError::BadRequest { operation });
        assert_eq!(transport.read(Area::Second, 0, 1), refused("read"));
        assert_eq!(transport.flush(), refused("flush"));
        assert_eq!(
            transport.start_write(Area::Second, 1, 1),
            refused("start write")
        );
        assert!(transport.slot(Area::First, 0).is_err());
        assert!(transport.slot(Area::Second, 0).is_ok());
        transport.finish_write().unwrap();
        assert_eq!(transport.finish_write(), refused("finish write"));
        assert_eq!(transport.read(Area::First, 0, 5), refused("read"));
        assert_eq!(
            transport.start_write(Area::First, 0, 0),
            refused("start write")
        );
        assert!(transport.slot(Area::First, 4).is_err());
    }
}

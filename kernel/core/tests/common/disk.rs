//! Disks whose power the tests cut: fault-injecting memory devices, shared.

use std::cell::RefCell;
use std::rc::Rc;

use persist::{BLOCK_SIZE, BlockDevice, DeviceError, FaultPlan, FaultyDevice, Image, MemoryDevice};

use super::DISK_BLOCKS;

/// A disk the test keeps a handle on, to cut its power.
#[derive(Debug, Clone)]
pub struct Disk {
    device: Rc<RefCell<FaultyDevice<MemoryDevice>>>,
}

impl Disk {
    pub fn blank() -> Disk {
        Disk::from_memory(MemoryDevice::new(DISK_BLOCKS))
    }

    pub fn from_memory(memory: MemoryDevice) -> Disk {
        Disk {
            device: Rc::new(RefCell::new(FaultyDevice::new(
                memory,
                FaultPlan::default(),
            ))),
        }
    }

    /// Loses power after `writes` more writes.
    pub fn power_off_after(&self, writes: u64) {
        let mut device = self.device.borrow_mut();
        let plan = FaultPlan {
            power_off_after_writes: Some(device.write_count() + writes),
            ..FaultPlan::default()
        };
        device.set_plan(plan);
    }

    pub fn write_count(&self) -> u64 {
        self.device.borrow().write_count()
    }

    pub fn is_powered_off(&self) -> bool {
        self.device.borrow().is_powered_off()
    }

    /// The disk as a reboot finds it after a power cut (`seed` picks which
    /// unflushed writes landed): a new handle; the old one is dead.
    pub fn reboot(&self, seed: u64) -> Disk {
        let device = std::mem::replace(
            &mut *self.device.borrow_mut(),
            FaultyDevice::new(MemoryDevice::new(1), FaultPlan::default()),
        );
        let memory = device
            .power_cut(seed)
            .expect("a memory device survives a power cut");
        // The old handle now holds a one-block disk that is powered off.
        self.device.borrow_mut().set_plan(FaultPlan {
            power_off_after_writes: Some(0),
            ..FaultPlan::default()
        });
        Disk::from_memory(memory)
    }

    /// Whether the disk holds no image.
    pub fn is_blank(&self) -> bool {
        Image::open(self.clone()).is_err()
    }
}

impl BlockDevice for Disk {
    fn read_block(&mut self, index: u64, buffer: &mut [u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.device.borrow_mut().read_block(index, buffer)
    }

    fn write_block(&mut self, index: u64, buffer: &[u8; BLOCK_SIZE]) -> Result<(), DeviceError> {
        self.device.borrow_mut().write_block(index, buffer)
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.device.borrow_mut().flush()
    }

    fn block_count(&self) -> u64 {
        self.device.borrow().block_count()
    }
}

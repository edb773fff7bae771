//! PCI configuration space through ports 0xcf8/0xcfc, enumeration and BARs.
//!
//! Amber reads configuration space with the legacy configuration mechanism #1
//! (PCI Local Bus Specification 3.0, 3.2.2.3.2) rather than q35's ECAM
//! (MMCONFIG). Both work on q35 (its ICH9 host bridge decodes the ports), and
//! the port mechanism reaches the first 256 bytes of every function, which hold
//! the header, the BARs and every virtio capability (virtio 1.2, 4.1.4). It
//! needs no ACPI MCFG parsing and no 256 MiB uncached mapping, and it is the
//! same under the PVH and Limine boot paths. ECAM would only add the extended
//! space past 256 bytes, which no driver here uses. The address/data pair is
//! two port accesses, so one lock (with interrupts off) keeps them together.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType,
    MemoryBarType, PciRoot,
};
use x86_64::instructions::port::Port;

use crate::memory::{self, MemoryError};

const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
const CONFIG_DATA_PORT: u16 = 0xcfc;

/// Keeps each address write and its data access together.
static CONFIG_LOCK: Mutex<()> = Mutex::new(());

/// Configuration mechanism #1 as virtio-drivers' `ConfigurationAccess`.
#[derive(Debug)]
pub struct PortConfigurationAccess;

fn config_address(function: DeviceFunction, register_offset: u8) -> u32 {
    0x8000_0000
        | (u32::from(function.bus) << 16)
        | (u32::from(function.device & 0x1f) << 11)
        | (u32::from(function.function & 0x7) << 8)
        | u32::from(register_offset & 0xfc)
}

impl ConfigurationAccess for PortConfigurationAccess {
    fn read_word(&self, function: DeviceFunction, register_offset: u8) -> u32 {
        x86_64::instructions::interrupts::without_interrupts(|| {
            let _guard = CONFIG_LOCK.lock();
            // SAFETY: the configuration ports touch no memory; CONFIG_LOCK
            // keeps the address and data accesses of one read together.
            unsafe {
                Port::<u32>::new(CONFIG_ADDRESS_PORT)
                    .write(config_address(function, register_offset));
                Port::<u32>::new(CONFIG_DATA_PORT).read()
            }
        })
    }

    fn write_word(&mut self, function: DeviceFunction, register_offset: u8, data: u32) {
        x86_64::instructions::interrupts::without_interrupts(|| {
            let _guard = CONFIG_LOCK.lock();
            // SAFETY: as read_word; what a written register does to the device
            // is the caller's business (BAR sizing, the command register).
            unsafe {
                Port::<u32>::new(CONFIG_ADDRESS_PORT)
                    .write(config_address(function, register_offset));
                Port::<u32>::new(CONFIG_DATA_PORT).write(data);
            }
        })
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortConfigurationAccess
    }
}

/// The root complex, reached through the configuration ports.
pub fn root() -> PciRoot<PortConfigurationAccess> {
    PciRoot::new(PortConfigurationAccess)
}

/// Offset of a bridge's bus numbers (primary, secondary, subordinate).
const BRIDGE_BUS_NUMBERS_OFFSET: u8 = 0x18;

/// Every function on bus 0 and on the buses behind its PCI-to-PCI bridges
/// (q35's PCIe root ports), sorted by bus, device and function.
pub fn functions(
    root: &PciRoot<PortConfigurationAccess>,
) -> Vec<(DeviceFunction, DeviceFunctionInfo)> {
    let mut found = Vec::new();
    let mut is_visited = [false; 256];
    let mut pending = Vec::from([0u8]);
    while let Some(bus) = pending.pop() {
        if core::mem::replace(&mut is_visited[usize::from(bus)], true) {
            continue;
        }
        for (function, info) in root.enumerate_bus(bus) {
            if info.header_type == HeaderType::PciPciBridge {
                let numbers =
                    PortConfigurationAccess.read_word(function, BRIDGE_BUS_NUMBERS_OFFSET);
                let secondary = (numbers >> 8) as u8;
                // Secondary bus 0 means the firmware left the bridge unconfigured.
                if secondary != 0 {
                    pending.push(secondary);
                }
            }
            found.push((function, info));
        }
    }
    found.sort_unstable_by_key(|(function, _)| *function);
    found
}

/// Why a PCI device could not be made usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSetupError {
    /// The device reported a BAR that is neither valid I/O nor memory.
    InvalidBar,
    /// A memory BAR was unassigned and the 32-bit window has no room for it.
    NoRoomForBar { index: u8, size_bytes: u64 },
    /// A BAR could not be mapped.
    Map(MemoryError),
}

impl core::fmt::Display for PciSetupError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PciSetupError::InvalidBar => write!(formatter, "the device reports an invalid BAR"),
            PciSetupError::NoRoomForBar { index, size_bytes } => write!(
                formatter,
                "BAR {index} ({size_bytes} bytes) is unassigned and does not fit the PCI window"
            ),
            PciSetupError::Map(error) => write!(formatter, "mapping a BAR: {error}"),
        }
    }
}

/// Where BARs the firmware left unassigned go: q35's 32-bit PCI hole, above
/// the ECAM window (0xb000_0000, 256 MiB) and below the I/O APIC.
const BAR_WINDOW_START: u64 = 0xc000_0000;
const BAR_WINDOW_END: u64 = 0xfec0_0000;

/// The next free address in the BAR window; 0 until first used.
static NEXT_BAR_ADDRESS: AtomicU64 = AtomicU64::new(0);

/// Makes `function`'s memory BARs usable: assigns any the firmware left at 0
/// (SeaBIOS assigns them all on q35, PVH boot included; this is for firmware
/// that does not), maps every memory BAR uncached, and turns on memory
/// decoding and bus mastering (DMA), which firmware may leave off.
pub fn prepare_device(
    root: &mut PciRoot<PortConfigurationAccess>,
    function: DeviceFunction,
) -> Result<(), PciSetupError> {
    let bars = root.bars(function).map_err(|_| PciSetupError::InvalidBar)?;
    for (index, bar) in bars.iter().enumerate() {
        let Some(BarInfo::Memory {
            address_type,
            address,
            size,
            ..
        }) = bar
        else {
            continue;
        };
        let index = index as u8;
        let mut address = *address;
        if address == 0 && *size > 0 {
            address = allocate_bar(root, *size).ok_or(PciSetupError::NoRoomForBar {
                index,
                size_bytes: *size,
            })?;
            match address_type {
                MemoryBarType::Width64 => root.set_bar_64(function, index, address),
                _ => root.set_bar_32(function, index, address as u32),
            }
            log::info!("PCI {function}: BAR {index} assigned at {address:#x} ({size} bytes)");
        }
        memory::paging::map_mmio(address, *size).map_err(PciSetupError::Map)?;
    }
    let (_, command) = root.get_status_command(function);
    root.set_command(
        function,
        command | Command::MEMORY_SPACE | Command::BUS_MASTER,
    );
    Ok(())
}

/// Takes `size` bytes (a power of two) from the BAR window, above every
/// memory BAR already assigned below 4 GiB.
fn allocate_bar(root: &mut PciRoot<PortConfigurationAccess>, size: u64) -> Option<u64> {
    if NEXT_BAR_ADDRESS.load(Ordering::Relaxed) == 0 {
        let mut highest_end = BAR_WINDOW_START;
        for (function, _) in functions(root) {
            let Ok(bars) = root.bars(function) else {
                continue;
            };
            for (address, bar_size) in bars
                .iter()
                .flatten()
                .filter_map(BarInfo::memory_address_size)
            {
                let end = address.saturating_add(bar_size);
                if address >= BAR_WINDOW_START && end <= BAR_WINDOW_END {
                    highest_end = highest_end.max(end);
                }
            }
        }
        NEXT_BAR_ADDRESS.store(highest_end, Ordering::Relaxed);
    }
    let start = NEXT_BAR_ADDRESS
        .load(Ordering::Relaxed)
        .checked_next_multiple_of(size)?;
    let end = start.checked_add(size)?;
    if end > BAR_WINDOW_END {
        return None;
    }
    NEXT_BAR_ADDRESS.store(end, Ordering::Relaxed);
    Some(start)
}

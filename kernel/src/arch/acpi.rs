//! Clean power-off through ACPI: FADT's PM1 control blocks and \_S5's sleep type.
//!
//! The `acpi` crate finds and checks the tables. Amber reads \_S5 from the
//! DSDT's bytes instead of running the AML interpreter: on the firmware we
//! target (QEMU's SeaBIOS tables) \_S5 is a static `Name` whose first element
//! is SLP_TYPa (ACPI 6.5, 7.4.2 and 16.1.3).

use core::ptr::NonNull;

use acpi::address::AddressSpace;
use acpi::sdt::fadt::Fadt;
use acpi::{AcpiTables, Handler, PciAddress, PhysicalMapping};
use x86_64::instructions::port::Port;

use crate::memory;

/// Maps ACPI tables through the kernel's direct map of physical memory.
#[derive(Debug, Clone, Copy)]
struct DirectMapHandler;

impl DirectMapHandler {
    fn pointer<T>(physical_address: usize) -> *mut T {
        memory::physical_to_virtual(physical_address as u64).as_mut_ptr()
    }
}

impl Handler for DirectMapHandler {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let pointer = Self::pointer::<T>(physical_address);
        PhysicalMapping {
            physical_start: physical_address,
            // The direct map never maps anything at address 0; a null here
            // would mean the direct map is broken, and dangling() is never read
            // because every table the crate reads is checked first.
            virtual_start: NonNull::new(pointer).unwrap_or(NonNull::dangling()),
            region_length: size,
            mapped_length: size,
            handler: *self,
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}

    fn read_u8(&self, address: usize) -> u8 {
        // SAFETY: the crate asks only for addresses named by firmware tables;
        // the direct map covers all of physical memory.
        unsafe { Self::pointer::<u8>(address).read_volatile() }
    }
    fn read_u16(&self, address: usize) -> u16 {
        // SAFETY: as read_u8.
        unsafe { Self::pointer::<u16>(address).read_volatile() }
    }
    fn read_u32(&self, address: usize) -> u32 {
        // SAFETY: as read_u8.
        unsafe { Self::pointer::<u32>(address).read_volatile() }
    }
    fn read_u64(&self, address: usize) -> u64 {
        // SAFETY: as read_u8.
        unsafe { Self::pointer::<u64>(address).read_volatile() }
    }
    fn write_u8(&self, address: usize, value: u8) {
        // SAFETY: as read_u8; firmware tables name the registers to write.
        unsafe { Self::pointer::<u8>(address).write_volatile(value) }
    }
    fn write_u16(&self, address: usize, value: u16) {
        // SAFETY: as write_u8.
        unsafe { Self::pointer::<u16>(address).write_volatile(value) }
    }
    fn write_u32(&self, address: usize, value: u32) {
        // SAFETY: as write_u8.
        unsafe { Self::pointer::<u32>(address).write_volatile(value) }
    }
    fn write_u64(&self, address: usize, value: u64) {
        // SAFETY: as write_u8.
        unsafe { Self::pointer::<u64>(address).write_volatile(value) }
    }
    fn read_io_u8(&self, port: u16) -> u8 {
        // SAFETY: port I/O touches no memory; ports come from firmware tables.
        unsafe { Port::new(port).read() }
    }
    fn read_io_u16(&self, port: u16) -> u16 {
        // SAFETY: as read_io_u8.
        unsafe { Port::new(port).read() }
    }
    fn read_io_u32(&self, port: u16) -> u32 {
        // SAFETY: as read_io_u8.
        unsafe { Port::new(port).read() }
    }
    fn write_io_u8(&self, port: u16, value: u8) {
        // SAFETY: as read_io_u8.
        unsafe { Port::new(port).write(value) }
    }
    fn write_io_u16(&self, port: u16, value: u16) {
        // SAFETY: as read_io_u8.
        unsafe { Port::new(port).write(value) }
    }
    fn write_io_u32(&self, port: u16, value: u32) {
        // SAFETY: as read_io_u8.
        unsafe { Port::new(port).write(value) }
    }
    fn read_pci_u8(&self, address: PciAddress, offset: u16) -> u8 {
        let shift = (offset & 3) * 8;
        (pci_read(address, offset) >> shift) as u8
    }
    fn read_pci_u16(&self, address: PciAddress, offset: u16) -> u16 {
        let shift = (offset & 2) * 8;
        (pci_read(address, offset) >> shift) as u16
    }
    fn read_pci_u32(&self, address: PciAddress, offset: u16) -> u32 {
        pci_read(address, offset)
    }
    fn write_pci_u8(&self, address: PciAddress, offset: u16, value: u8) {
        let shift = (offset & 3) * 8;
        let old = pci_read(address, offset) & !(0xff << shift);
        pci_write(address, offset, old | (u32::from(value) << shift));
    }
    fn write_pci_u16(&self, address: PciAddress, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = pci_read(address, offset) & !(0xffff << shift);
        pci_write(address, offset, old | (u32::from(value) << shift));
    }
    fn write_pci_u32(&self, address: PciAddress, offset: u16, value: u32) {
        pci_write(address, offset, value);
    }
    fn nanos_since_boot(&self) -> u64 {
        super::timer::uptime_ns()
    }
    fn stall(&self, microseconds: u64) {
        let end = super::timer::uptime_ns() + microseconds * 1000;
        while super::timer::uptime_ns() < end {
            core::hint::spin_loop();
        }
    }
    fn sleep(&self, milliseconds: u64) {
        self.stall(milliseconds * 1000);
    }
}

/// PCI configuration mechanism #1 (ports 0xcf8/0xcfc), bus 0 segment 0 style.
fn pci_address_register(address: PciAddress, offset: u16) -> u32 {
    0x8000_0000
        | (u32::from(address.bus()) << 16)
        | (u32::from(address.device()) << 11)
        | (u32::from(address.function()) << 8)
        | u32::from(offset & 0xfc)
}

fn pci_read(address: PciAddress, offset: u16) -> u32 {
    // SAFETY: the configuration-space ports touch no memory; reading a
    // register has no side effects on the devices QEMU emulates.
    unsafe {
        Port::<u32>::new(0xcf8).write(pci_address_register(address, offset));
        Port::<u32>::new(0xcfc).read()
    }
}

fn pci_write(address: PciAddress, offset: u16, value: u32) {
    // SAFETY: as pci_read; only called by the acpi crate on firmware request.
    unsafe {
        Port::<u32>::new(0xcf8).write(pci_address_register(address, offset));
        Port::<u32>::new(0xcfc).write(value);
    }
}

/// Why a power-off could not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOffError {
    NoRsdp,
    BadTables,
    NoFadt,
    UnsupportedControlBlock,
    StillRunning,
}

impl core::fmt::Display for PowerOffError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter.write_str(match self {
            PowerOffError::NoRsdp => "no ACPI RSDP was found",
            PowerOffError::BadTables => "the ACPI tables are invalid",
            PowerOffError::NoFadt => "the ACPI tables have no FADT",
            PowerOffError::UnsupportedControlBlock => "the PM1 control block is not in I/O space",
            PowerOffError::StillRunning => "the machine is still running after entering S5",
        })
    }
}

/// Enters ACPI sleep state S5 (soft off). Returns only on failure.
pub fn power_off(rsdp_physical: Option<u64>) -> PowerOffError {
    let tables = match rsdp_physical {
        // SAFETY: the boot path says the RSDP is at this address; the crate
        // checks its signature and checksum before using it.
        Some(address) => unsafe { AcpiTables::from_rsdp(DirectMapHandler, address as usize) },
        None => {
            // SAFETY: the BIOS areas the search reads are mapped by the direct
            // map and hold no device registers.
            match unsafe { acpi::rsdp::Rsdp::search_for_on_bios(DirectMapHandler) } {
                // SAFETY: as above, the RSDP was found and checked.
                Ok(rsdp) => unsafe { AcpiTables::from_rsdp(DirectMapHandler, rsdp.physical_start) },
                Err(_) => return PowerOffError::NoRsdp,
            }
        }
    };
    let Ok(tables) = tables else {
        return PowerOffError::BadTables;
    };
    let Some(fadt) = tables.find_table::<Fadt>() else {
        return PowerOffError::NoFadt;
    };
    let sleep_type = tables
        .dsdt()
        .ok()
        .and_then(|dsdt| {
            let start = memory::physical_to_virtual(dsdt.phys_address as u64);
            // SAFETY: the DSDT's header was checked by the crate and its length
            // bounds the slice; the direct map covers it, and it is read only.
            let bytes =
                unsafe { core::slice::from_raw_parts(start.as_ptr::<u8>(), dsdt.length as usize) };
            s5_sleep_type(bytes)
        })
        .unwrap_or(0);
    let control_blocks = [
        fadt.pm1a_control_block().ok(),
        fadt.pm1b_control_block().ok().flatten(),
    ];
    drop(fadt);
    for block in control_blocks.into_iter().flatten() {
        if block.address_space != AddressSpace::SystemIo {
            return PowerOffError::UnsupportedControlBlock;
        }
        let value = (u16::from(sleep_type) << 10) | (1 << 13); // SLP_TYP, SLP_EN
        // SAFETY: the FADT names this port as the PM1 control register; writing
        // SLP_EN with the S5 type powers the machine off.
        unsafe { Port::<u16>::new(block.address as u16).write(value) };
    }
    // The machine goes off a moment after the write; only if it is still
    // here after a second did the write not work.
    let deadline = super::timer::uptime_ns() + 1_000_000_000;
    while super::timer::uptime_ns() < deadline {
        core::hint::spin_loop();
    }
    PowerOffError::StillRunning
}

/// SLP_TYPa of the \_S5 package in an AML byte stream, if it is a static
/// `Name(_S5_, Package(){...})`.
fn s5_sleep_type(aml: &[u8]) -> Option<u8> {
    let position = aml.windows(4).position(|window| window == b"_S5_")?;
    // NameOp, optionally followed by the root prefix '\', precedes the name.
    let before = aml.get(position.checked_sub(1)?)?;
    let is_name =
        *before == 0x08 || (*before == b'\\' && aml.get(position.checked_sub(2)?) == Some(&0x08));
    if !is_name {
        return None;
    }
    let mut cursor = position + 4;
    if *aml.get(cursor)? != 0x12 {
        return None; // not a PackageOp
    }
    cursor += 1;
    let length_bytes = usize::from(aml.get(cursor)? >> 6);
    cursor += 1 + length_bytes + 1; // PkgLength, NumElements
    match *aml.get(cursor)? {
        0x00 => Some(0),                                    // ZeroOp
        0x01 => Some(1),                                    // OneOp
        0x0a => aml.get(cursor + 1).map(|value| value & 7), // BytePrefix
        value => Some(value & 7),
    }
}

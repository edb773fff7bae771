//! What the boot path tells the kernel: memory map, command line, ACPI root.

/// How many memory map entries the kernel keeps (QEMU gives fewer than 10).
pub const MAX_MEMORY_REGIONS: usize = 128;

/// The longest kernel command line kept; longer ones are cut (and logged).
pub const MAX_COMMAND_LINE_BYTES: usize = 1024;

/// Which boot protocol started the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// Xen PVH direct boot (`qemu -kernel`), through the 32-bit trampoline.
    Pvh,
    /// The Limine boot protocol.
    Limine,
}

impl BootPath {
    pub fn name(self) -> &'static str {
        match self {
            BootPath::Pvh => "PVH",
            BootPath::Limine => "Limine",
        }
    }
}

/// What a range of physical memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM nothing else uses: the frame allocator may take it.
    Usable,
    /// Firmware, MMIO holes or anything the kernel must leave alone.
    Reserved,
    /// ACPI tables (reclaimable once parsed; Amber keeps them).
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// RAM reported broken.
    Bad,
    /// Memory the bootloader used (Limine); kept, since its page tables live there
    /// until the kernel switches to its own.
    BootloaderReclaimable,
    /// The kernel image and boot modules (Limine).
    KernelAndModules,
    /// A framebuffer.
    Framebuffer,
}

/// One entry of the physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub length_bytes: u64,
    pub kind: RegionKind,
}

impl MemoryRegion {
    pub const EMPTY: MemoryRegion = MemoryRegion {
        start: 0,
        length_bytes: 0,
        kind: RegionKind::Reserved,
    };

    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.length_bytes)
    }
}

/// Everything the kernel needs from the boot path, copied out of boot-time
/// memory before the frame allocator can hand that memory out.
#[derive(Debug, Clone)]
pub struct BootInfo {
    pub path: BootPath,
    regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    region_count: usize,
    command_line: [u8; MAX_COMMAND_LINE_BYTES],
    command_line_len_bytes: usize,
    /// Physical address of the ACPI RSDP, when the boot path gave one.
    pub rsdp_physical: Option<u64>,
    /// Physical address where the kernel image (`__kernel_start`) was loaded.
    pub kernel_physical_start: u64,
    /// Offset at which physical memory is mapped right now, under the boot
    /// path's page tables (PVH: 0, identity for the first GiB; Limine: HHDM).
    pub boot_physical_offset: u64,
    /// Time stamp counter at kernel entry.
    pub entry_tsc: u64,
}

impl BootInfo {
    pub fn new(path: BootPath, kernel_physical_start: u64, boot_physical_offset: u64) -> BootInfo {
        BootInfo {
            path,
            regions: [MemoryRegion::EMPTY; MAX_MEMORY_REGIONS],
            region_count: 0,
            command_line: [0; MAX_COMMAND_LINE_BYTES],
            command_line_len_bytes: 0,
            rsdp_physical: None,
            kernel_physical_start,
            boot_physical_offset,
            entry_tsc: 0,
        }
    }

    /// Adds a memory region; returns false when the table is full.
    pub fn push_region(&mut self, region: MemoryRegion) -> bool {
        match self.regions.get_mut(self.region_count) {
            Some(slot) => {
                *slot = region;
                self.region_count += 1;
                true
            }
            None => false,
        }
    }

    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Copies the command line, cutting it at MAX_COMMAND_LINE_BYTES (at a
    /// character boundary).
    pub fn set_command_line(&mut self, text: &str) {
        let mut len_bytes = text.len().min(MAX_COMMAND_LINE_BYTES);
        while !text.is_char_boundary(len_bytes) {
            len_bytes -= 1;
        }
        self.command_line[..len_bytes].copy_from_slice(&text.as_bytes()[..len_bytes]);
        self.command_line_len_bytes = len_bytes;
    }

    pub fn command_line(&self) -> &str {
        // set_command_line only stores whole characters of a &str.
        core::str::from_utf8(&self.command_line[..self.command_line_len_bytes]).unwrap_or("")
    }

    /// The value of `key=value` on the command line, if present.
    pub fn argument(&self, key: &str) -> Option<&str> {
        self.command_line().split_whitespace().find_map(|word| {
            let (name, value) = word.split_once('=')?;
            (name == key).then_some(value)
        })
    }

    /// Usable RAM in bytes, as the memory map reports it.
    pub fn usable_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|region| region.kind == RegionKind::Usable)
            .map(|region| region.length_bytes)
            .sum()
    }
}

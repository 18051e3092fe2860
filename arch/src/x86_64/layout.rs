//! The x86_64 guest physical memory layout and the e820 map derived from it.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_9000  PML4, PDPT, 4 PDs (4 GiB identity map)
//! 0x0000_6000  hvm_start_info (PVH)     0x0002_0000  kernel command line
//! 0x0000_7000  zero page (boot_params)  0x0009_fc00  EBDA: not RAM from here
//! 0x0000_8ff0  initial stack            0x000e_0000  ACPI tables (RSDP first)
//! 0x0010_0000  kernel (HIMEM_START)     0xc000_0000  MMIO gap up to 4 GiB
//! 0xd000_0000  virtio-mmio devices      0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC
//! ```

use std::fmt;

/// Guest address of the GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Guest address of the PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// Guest address of the PVH memory map (up to [`MAX_E820`] entries of 24 bytes).
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// Guest address of the PVH module list (one initrd entry).
pub const PVH_MODLIST_ADDR: u64 = 0x6e00;
/// Guest address of the zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Guest address of the PML4.
pub const PML4_ADDR: u64 = 0x9000;
/// Guest address of the PDPT.
pub const PDPT_ADDR: u64 = 0xa000;
/// Guest address of the first of the four page directories.
pub const PD_ADDR: u64 = 0xb000;
/// Guest address of the kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Most bytes (without the NUL) we place at [`CMDLINE_ADDR`].
pub const CMDLINE_MAX: usize = 0x1_0000 - 1;
/// Start of the Extended BIOS Data Area: conventional RAM ends here.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the ACPI tables start (the RSDP, found by the 0xe0000 scan too).
pub const ACPI_ADDR: u64 = 0xe_0000;
/// End of the ACPI table area.
pub const ACPI_END: u64 = 0x10_0000;
/// Start of high memory, where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap; RAM above it moves past 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Where virtio-mmio devices are placed (one page each).
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// First GSI handed to virtio-mmio devices (4 is the serial port).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last usable IOAPIC pin.
pub const IRQ_MAX: u32 = 23;
/// Most virtio-mmio devices: one GSI each, [`VIRTIO_IRQ_BASE`]..=[`IRQ_MAX`].
pub const MAX_VIRTIO_DEVICES: u32 = IRQ_MAX - VIRTIO_IRQ_BASE + 1;
/// Most vCPUs an x86_64 guest can be given: one xAPIC id (8 bits, 0xff is
/// the broadcast id) per vCPU in the MADT, vCPU `i` having id `i`.
pub const MAX_VCPUS: u32 = 254;
/// The KVM TSS area (three pages just below the IOAPIC/BIOS area).
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// IOAPIC MMIO base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Smallest guest RAM we accept.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Most e820 entries the zero page holds.
pub const MAX_E820: usize = 128;

/// The serial port's I/O base and GSI.
pub const COM1_PORT: u16 = 0x3f8;
/// The serial port's GSI.
pub const COM1_IRQ: u32 = 4;
/// pvpanic I/O port.
pub const PVPANIC_PORT: u16 = 0x505;
/// ACPI hardware-reduced sleep control register (I/O port).
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// ACPI hardware-reduced sleep status register (I/O port).
pub const SLEEP_STATUS_PORT: u16 = 0x3c1;
/// ACPI reset register (I/O port) and the value that resets.
pub const RESET_PORT: u16 = 0x3c2;
/// The value written to [`RESET_PORT`] to reset.
pub const RESET_VALUE: u8 = 1;

/// e820 entry types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    /// Usable RAM.
    Ram = 1,
    /// Reserved.
    Reserved = 2,
}

/// One e820 map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Type,
}

/// Why a memory size cannot be laid out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Less than [`MIN_MEMORY`].
    #[error("guest memory {0} bytes is too small (at least {MIN_MEMORY} bytes are needed)")]
    TooSmall(u64),
    /// Not a multiple of the page size.
    #[error("guest memory {0} bytes is not a multiple of 4 KiB")]
    Unaligned(u64),
    /// Larger than the host address space can map.
    #[error("guest memory {0} bytes is too large")]
    TooLarge(u64),
}

/// Guest RAM of a given size: where it sits in guest-physical space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    /// `(guest address, size)` of each RAM region: below the MMIO gap, and above 4 GiB.
    pub regions: Vec<(u64, u64)>,
}

impl MemoryLayout {
    /// Lays out `size` bytes of RAM.
    pub fn new(size: u64) -> Result<Self, LayoutError> {
        if size < MIN_MEMORY {
            return Err(LayoutError::TooSmall(size));
        }
        if !size.is_multiple_of(4096) {
            return Err(LayoutError::Unaligned(size));
        }
        // 1 TiB keeps us well inside a 4-level guest address space and the host's.
        if size > 1 << 40 {
            return Err(LayoutError::TooLarge(size));
        }
        let low = size.min(MMIO_GAP_START);
        let mut regions = vec![(0, low)];
        if size > low {
            regions.push((MMIO_GAP_END, size - low));
        }
        Ok(MemoryLayout { regions })
    }

    /// End of RAM below the MMIO gap.
    pub fn low_end(&self) -> u64 {
        self.regions[0].1
    }

    /// Total RAM.
    pub fn total(&self) -> u64 {
        self.regions.iter().map(|r| r.1).sum()
    }

    /// The e820 map the guest sees.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut v = vec![
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820Type::Ram,
            },
            E820Entry {
                addr: EBDA_START,
                size: HIMEM_START - EBDA_START,
                kind: E820Type::Reserved,
            },
            E820Entry {
                addr: HIMEM_START,
                size: self.low_end() - HIMEM_START,
                kind: E820Type::Ram,
            },
        ];
        if let Some(&(addr, size)) = self.regions.get(1) {
            v.push(E820Entry {
                addr,
                size,
                kind: E820Type::Ram,
            });
        }
        v
    }
}

impl fmt::Display for E820Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{:#x} {:?}", self.addr, self.size, self.kind)
    }
}

/// The virtio-mmio window and GSI of device slot `i`, or `None` past the last IRQ.
pub fn virtio_mmio_slot(i: u32) -> Option<(u64, u64, u32)> {
    (i < MAX_VIRTIO_DEVICES).then(|| {
        (
            VIRTIO_MMIO_BASE + u64::from(i) * VIRTIO_MMIO_SIZE,
            VIRTIO_MMIO_SIZE,
            VIRTIO_IRQ_BASE + i,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_region() {
        let l = MemoryLayout::new(128 << 20).unwrap();
        assert_eq!(l.regions, vec![(0, 128 << 20)]);
        let ram: u64 = l
            .e820()
            .iter()
            .filter(|e| e.kind == E820Type::Ram)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (128 << 20) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn large_memory_skips_the_gap() {
        let l = MemoryLayout::new(4 << 30).unwrap();
        assert_eq!(
            l.regions,
            vec![(0, MMIO_GAP_START), (1 << 32, (4 << 30) - MMIO_GAP_START)]
        );
        assert_eq!(l.total(), 4 << 30);
        let e = l.e820();
        assert_eq!(e.len(), 4);
        assert_eq!(e[3].addr, 1 << 32);
        // No RAM in the gap.
        assert!(e
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(
            MemoryLayout::new(1 << 20),
            Err(LayoutError::TooSmall(1 << 20))
        );
        assert_eq!(
            MemoryLayout::new((4 << 20) + 1),
            Err(LayoutError::Unaligned((4 << 20) + 1))
        );
        assert!(MemoryLayout::new(2 << 40).is_err());
    }

    #[test]
    fn virtio_slots() {
        assert_eq!(virtio_mmio_slot(0), Some((VIRTIO_MMIO_BASE, 0x1000, 5)));
        assert_eq!(
            virtio_mmio_slot(18),
            Some((VIRTIO_MMIO_BASE + 18 * 0x1000, 0x1000, 23))
        );
        assert_eq!(virtio_mmio_slot(19), None);
        assert_eq!(virtio_mmio_slot(u32::MAX), None);
        assert_eq!(MAX_VIRTIO_DEVICES, 19);
        // Every slot has its own window and line, all inside the MMIO gap.
        let (base, size, irq) = virtio_mmio_slot(MAX_VIRTIO_DEVICES - 1).unwrap();
        assert_eq!(irq, IRQ_MAX);
        assert!(base + size <= u64::from(IOAPIC_ADDR));
    }
}

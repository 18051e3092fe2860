//! The aarch64 guest physical memory map.
//!
//! It is the map of QEMU's `virt` board (hw/arm/virt.c) for the devices
//! zvisor has, so the same kernel command lines and device trees work on
//! both, and so a tree built here can be checked against a real kernel on
//! QEMU today (see `docs/aarch64.md`):
//!
//! ```text
//! 0x0800_0000  GIC distributor                 64 KiB
//! 0x0801_0000  GICv2 CPU interface             64 KiB   (GICv2 only)
//! 0x080a_0000  GICv3 redistributors  128 KiB per vCPU, up to 123 vCPUs
//! 0x0900_0000  PL011 UART                       4 KiB   SPI 1
//! 0x0901_0000  PL031 RTC                        4 KiB   SPI 2
//! 0x0a00_0000  virtio-mmio, 32 slots of 0x200           SPI 16 + slot
//! 0x4000_0000  RAM (up to 255 GiB, ends below 256 GiB)
//! ```
//!
//! Firecracker and Cloud Hypervisor put RAM at 2 GiB and their devices in
//! the first 1 GiB with their own addresses; QEMU `virt` puts RAM at 1 GiB.
//! Choosing QEMU's map costs nothing (all three leave the first GiB to
//! MMIO) and makes QEMU a reference board for our FDT.
//!
//! Boot placement inside RAM follows the arm64 boot protocol
//! (Documentation/arch/arm64/booting.rst): the kernel Image at a 2 MiB
//! aligned base plus its `text_offset`, here 2 MiB into RAM: the first
//! 2 MiB stay free for firmware data, where QEMU `virt` puts its own DTB
//! when it boots without `-kernel` (and Cloud Hypervisor its FDT); the DTB 8-byte aligned, at most
//! 2 MiB, in its own 2 MiB block: zvisor puts it in the last 2 MiB of RAM
//! (as Firecracker does) and the initrd page-aligned just below it, so the
//! kernel's own memory (which grows from its load address) never meets them.

/// Start of guest RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Largest RAM size: RAM must end by 256 GiB, where QEMU `virt` puts its
/// high MMIO (and zvisor keeps the space free for it).
pub const RAM_MAX_SIZE: u64 = 0x40_0000_0000 - RAM_BASE;
/// RAM sizes are multiples of this (the FDT sits in the last 2 MiB block).
pub const RAM_ALIGN: u64 = 2 << 20;
/// Smallest RAM accepted: kernel, initrd and FDT need room.
pub const RAM_MIN_SIZE: u64 = 32 << 20;

/// GIC distributor (GICv2 and GICv3).
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// GIC distributor size.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// GICv2 CPU interface.
pub const GICV2_CPU_BASE: u64 = 0x0801_0000;
/// GICv2 CPU interface size.
pub const GICV2_CPU_SIZE: u64 = 0x1_0000;
/// GICv3 redistributor region (one contiguous region).
pub const GICV3_REDIST_BASE: u64 = 0x080a_0000;
/// The region's size: room for [`GICV3_MAX_CPUS`] redistributors.
pub const GICV3_REDIST_SIZE: u64 = 0x00f6_0000;
/// One vCPU's redistributor (RD_base + SGI_base frames).
pub const GICV3_REDIST_STRIDE: u64 = 0x2_0000;
/// vCPUs whose redistributors fit in the region.
pub const GICV3_MAX_CPUS: u32 = (GICV3_REDIST_SIZE / GICV3_REDIST_STRIDE) as u32;
/// GICv2 supports 8 CPUs.
pub const GICV2_MAX_CPUS: u32 = 8;

/// PL011 UART.
pub const UART_BASE: u64 = 0x0900_0000;
/// PL011 window.
pub const UART_SIZE: u64 = 0x1000;
/// PL011 SPI (GIC INTID 33).
pub const UART_SPI: u32 = 1;
/// PL031 RTC.
pub const RTC_BASE: u64 = 0x0901_0000;
/// PL031 window.
pub const RTC_SIZE: u64 = 0x1000;
/// PL031 SPI (GIC INTID 34).
pub const RTC_SPI: u32 = 2;

/// First virtio-mmio slot.
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
/// Slot stride and window size (the virtio-mmio registers plus config
/// space fit in 0x200).
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x200;
/// Number of virtio-mmio slots.
pub const VIRTIO_MMIO_SLOTS: u32 = 32;
/// SPI of slot 0; slot `n` uses `VIRTIO_SPI_BASE + n`.
pub const VIRTIO_SPI_BASE: u32 = 16;

/// The arch timer's PPIs (GIC PPI numbers; INTID = 16 + PPI): secure EL1
/// physical, non-secure EL1 physical, virtual, EL2 physical.
pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];

/// Largest DTB the boot protocol allows.
pub const FDT_MAX_SIZE: u64 = 2 << 20;
/// The kernel Image's base alignment.
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// Where the kernel's 2 MiB aligned base is, from [`RAM_BASE`].
pub const KERNEL_OFFSET: u64 = 2 << 20;
/// Initrd alignment.
pub const INITRD_ALIGN: u64 = 4096;

// RAM ends at 256 GiB, so 38-bit IPAs cover the whole map.
const _: () = assert!(RAM_BASE + RAM_MAX_SIZE <= 1 << 38);

/// A fixed MMIO region of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// What it is.
    pub name: &'static str,
    /// Guest physical base.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// One past the end.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// True when the two regions share a byte.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// The fixed device regions (both GIC variants' frames included).
pub fn device_regions() -> [Region; 7] {
    [
        Region {
            name: "gic-dist",
            base: GIC_DIST_BASE,
            size: GIC_DIST_SIZE,
        },
        Region {
            name: "gicv2-cpu",
            base: GICV2_CPU_BASE,
            size: GICV2_CPU_SIZE,
        },
        Region {
            name: "gicv3-redist",
            base: GICV3_REDIST_BASE,
            size: GICV3_REDIST_SIZE,
        },
        Region {
            name: "pl011",
            base: UART_BASE,
            size: UART_SIZE,
        },
        Region {
            name: "pl031",
            base: RTC_BASE,
            size: RTC_SIZE,
        },
        Region {
            name: "virtio-mmio",
            base: VIRTIO_MMIO_BASE,
            size: VIRTIO_MMIO_SLOT_SIZE * VIRTIO_MMIO_SLOTS as u64,
        },
        Region {
            name: "ram",
            base: RAM_BASE,
            size: RAM_MAX_SIZE,
        },
    ]
}

/// One virtio-mmio slot: its window and SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioSlot {
    /// Slot index, 0-based.
    pub index: u32,
    /// Window base.
    pub base: u64,
    /// Window size.
    pub size: u64,
    /// GIC SPI number (INTID = 32 + spi).
    pub spi: u32,
}

/// Slot `index`, or `None` past the last one.
pub fn virtio_slot(index: u32) -> Option<VirtioSlot> {
    (index < VIRTIO_MMIO_SLOTS).then(|| VirtioSlot {
        index,
        base: VIRTIO_MMIO_BASE + u64::from(index) * VIRTIO_MMIO_SLOT_SIZE,
        size: VIRTIO_MMIO_SLOT_SIZE,
        spi: VIRTIO_SPI_BASE + index,
    })
}

/// Errors placing a boot payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// RAM size out of range or misaligned.
    #[error(
        "guest RAM of {size:#x} bytes: must be a multiple of 2 MiB between {min:#x} and {max:#x}"
    )]
    BadRamSize {
        /// Requested size.
        size: u64,
        /// Minimum.
        min: u64,
        /// Maximum.
        max: u64,
    },
    /// A kernel `text_offset` that is not below 2 MiB or not 4 KiB aligned.
    #[error("kernel text_offset {0:#x} is not a 4 KiB multiple below 2 MiB")]
    BadTextOffset(u64),
    /// Kernel, initrd and FDT do not fit in RAM together.
    #[error("kernel ({kernel:#x} bytes) + initrd ({initrd:#x} bytes) + 2 MiB FDT do not fit in {ram:#x} bytes of RAM")]
    DoesNotFit {
        /// Kernel image size (effective, with BSS).
        kernel: u64,
        /// Initrd size.
        initrd: u64,
        /// RAM size.
        ram: u64,
    },
}

/// Where the boot payloads go in RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootLayout {
    /// RAM size.
    pub ram_size: u64,
    /// The kernel Image's load address (entry point).
    pub kernel_addr: u64,
    /// End of the kernel's effective image (with BSS).
    pub kernel_end: u64,
    /// Initrd address and size (size 0: no initrd).
    pub initrd_addr: u64,
    /// Initrd size.
    pub initrd_size: u64,
    /// The DTB's address (the last 2 MiB block of RAM).
    pub fdt_addr: u64,
}

impl BootLayout {
    /// Places a kernel whose header gives `text_offset` and `image_size`
    /// (the effective size, BSS included), an initrd of `initrd_size`
    /// bytes and the FDT in `ram_size` bytes of RAM.
    pub fn plan(
        ram_size: u64,
        text_offset: u64,
        image_size: u64,
        initrd_size: u64,
    ) -> Result<Self, LayoutError> {
        if !(RAM_MIN_SIZE..=RAM_MAX_SIZE).contains(&ram_size) || !ram_size.is_multiple_of(RAM_ALIGN)
        {
            return Err(LayoutError::BadRamSize {
                size: ram_size,
                min: RAM_MIN_SIZE,
                max: RAM_MAX_SIZE,
            });
        }
        if text_offset >= KERNEL_ALIGN || !text_offset.is_multiple_of(4096) {
            return Err(LayoutError::BadTextOffset(text_offset));
        }
        let too_big = LayoutError::DoesNotFit {
            kernel: image_size,
            initrd: initrd_size,
            ram: ram_size,
        };
        let ram_end = RAM_BASE + ram_size;
        let fdt_addr = ram_end - FDT_MAX_SIZE;
        let kernel_addr = RAM_BASE + KERNEL_OFFSET + text_offset;
        let kernel_end = kernel_addr.checked_add(image_size).ok_or(too_big.clone())?;
        let initrd_addr = if initrd_size == 0 {
            fdt_addr
        } else {
            fdt_addr
                .checked_sub(initrd_size)
                .map(|a| a & !(INITRD_ALIGN - 1))
                .ok_or(too_big.clone())?
        };
        if kernel_end > initrd_addr {
            return Err(too_big);
        }
        Ok(Self {
            ram_size,
            kernel_addr,
            kernel_end,
            initrd_addr,
            initrd_size,
            fdt_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_regions_do_not_overlap_and_mmio_is_below_ram() {
        let r = device_regions();
        for (i, a) in r.iter().enumerate() {
            for b in &r[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
            if a.name != "ram" {
                assert!(a.end() <= RAM_BASE, "{a:?}");
            }
        }
        assert_eq!(GICV3_MAX_CPUS, 123);
        assert!(r[0].overlaps(&Region {
            name: "x",
            base: GIC_DIST_BASE + GIC_DIST_SIZE - 1,
            size: 1
        }));
    }

    #[test]
    fn virtio_slots_match_qemu_virt() {
        let s0 = virtio_slot(0).unwrap();
        assert_eq!((s0.base, s0.size, s0.spi), (0x0a00_0000, 0x200, 16));
        let last = virtio_slot(31).unwrap();
        assert_eq!((last.base, last.spi), (0x0a00_3e00, 47));
        assert_eq!(virtio_slot(32), None);
        assert_eq!(virtio_slot(u32::MAX), None);
    }

    #[test]
    fn boot_layout_places_fdt_last_and_initrd_below_it() {
        let l = BootLayout::plan(512 << 20, 0, 30 << 20, 5_000_000).unwrap();
        assert_eq!(l.kernel_addr, RAM_BASE + (2 << 20));
        assert_eq!(l.fdt_addr, RAM_BASE + (510 << 20));
        assert_eq!(l.fdt_addr % (2 << 20), 0);
        assert_eq!(l.initrd_addr % INITRD_ALIGN, 0);
        assert!(l.initrd_addr + l.initrd_size <= l.fdt_addr);
        assert!(l.fdt_addr - l.initrd_addr < l.initrd_size + INITRD_ALIGN);
        assert!(l.kernel_end <= l.initrd_addr);
        let l = BootLayout::plan(64 << 20, 0x8_0000, 1 << 20, 0).unwrap();
        assert_eq!(l.kernel_addr, RAM_BASE + (2 << 20) + 0x8_0000);
        assert_eq!(l.initrd_size, 0);
    }

    #[test]
    fn boot_layout_rejects_what_does_not_fit() {
        for ram in [
            0,
            1 << 20,
            (64 << 20) + 4096,
            RAM_MAX_SIZE + RAM_ALIGN,
            u64::MAX,
        ] {
            assert!(matches!(
                BootLayout::plan(ram, 0, 1 << 20, 0),
                Err(LayoutError::BadRamSize { .. })
            ));
        }
        assert_eq!(
            BootLayout::plan(64 << 20, 2 << 20, 1, 0),
            Err(LayoutError::BadTextOffset(2 << 20))
        );
        assert!(BootLayout::plan(64 << 20, 123, 1, 0).is_err());
        for (k, i) in [
            (60 << 20, 4 << 20),
            (1, u64::MAX),
            (u64::MAX, 0),
            (62 << 20, 1),
        ] {
            assert!(
                matches!(
                    BootLayout::plan(64 << 20, 0, k, i),
                    Err(LayoutError::DoesNotFit { .. })
                ),
                "kernel {k:#x} initrd {i:#x}"
            );
        }
        // Exactly full: kernel up to the initrd, initrd up to the FDT.
        assert!(BootLayout::plan(64 << 20, 0, 58 << 20, 2 << 20).is_ok());
    }
}

//! The device tree an arm64 Linux guest boots with: CPUs started through
//! PSCI, memory, `chosen` (command line, console, initrd, seeds), the GIC
//! (v3 or v2), the arch timer, a PL011 UART, an optional PL031 RTC and one
//! `virtio_mmio@<addr>` node per virtio device. Addresses and interrupts
//! come from [`super::layout`].
//!
//! The blob is written by the small writer in [`writer`] and can be read
//! back with [`reader::parse`].

pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;

use super::layout::{
    self, Region, VirtioSlot, GICV2_MAX_CPUS, GICV3_MAX_CPUS, GICV3_REDIST_STRIDE, RAM_BASE,
};
pub use writer::{FdtWriteError, FdtWriter};

/// Phandle of the interrupt controller.
pub const GIC_PHANDLE: u32 = 1;
/// Phandle of the 24 MHz APB clock.
pub const CLOCK_PHANDLE: u32 = 2;
/// arm64's COMMAND_LINE_SIZE, the terminating NUL included.
pub const CMDLINE_MAX: usize = 2048;
/// Largest `rng-seed` accepted (Linux mixes in whatever it gets; 32 bytes
/// is what QEMU passes).
pub const RNG_SEED_MAX: usize = 512;
/// The highest SPI a GIC has (INTID 1019).
pub const MAX_SPI: u32 = 987;
/// `model` of the root node (Linux prints it as "Machine model").
pub const MODEL: &str = "zvisor";

const GIC_FDT_IRQ_TYPE_SPI: u32 = 0;
const GIC_FDT_IRQ_TYPE_PPI: u32 = 1;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// The GIC maintenance interrupt's PPI.
const GIC_MAINT_PPI: u32 = 9;
const UART_NODE: &str = "pl011@9000000";

/// Which GIC the guest gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2: distributor and CPU interface, at most 8 CPUs.
    V2,
    /// GICv3: distributor and one redistributor per CPU.
    V3,
}

/// How the guest calls PSCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    /// `hvc`: the hypervisor implements PSCI (KVM does).
    Hvc,
    /// `smc`: firmware at EL3 implements it (or a guest running at EL2).
    Smc,
}

/// Everything the tree describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdtConfig {
    /// Each vCPU's MPIDR (affinity fields only), boot CPU first.
    pub cpu_mpidrs: Vec<u64>,
    /// RAM size, from [`layout::RAM_BASE`].
    pub ram_size: u64,
    /// Kernel command line (`chosen/bootargs`).
    pub cmdline: String,
    /// Initrd (address, size), inside RAM.
    pub initrd: Option<(u64, u64)>,
    /// `chosen/rng-seed` bytes.
    pub rng_seed: Option<Vec<u8>>,
    /// `chosen/kaslr-seed`.
    pub kaslr_seed: Option<u64>,
    /// GIC variant.
    pub gic: GicVersion,
    /// PSCI conduit.
    pub psci_method: PsciMethod,
    /// Describe the PL031 RTC.
    pub rtc: bool,
    /// The virtio-mmio devices' slots, in the order given.
    pub virtio: Vec<VirtioSlot>,
}

/// Errors building the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdtError {
    /// The writer refused something (a bug, or the size limit).
    #[error(transparent)]
    Write(#[from] FdtWriteError),
    /// No CPUs.
    #[error("a guest needs at least one vCPU")]
    NoCpus,
    /// More CPUs than the GIC supports.
    #[error("{cpus} vCPUs: {gic:?} supports at most {max}")]
    TooManyCpus {
        /// Requested.
        cpus: usize,
        /// Limit.
        max: u32,
        /// GIC variant.
        gic: GicVersion,
    },
    /// An MPIDR with bits outside Aff0-Aff3, or used twice.
    #[error("bad or duplicate MPIDR {0:#x}")]
    BadMpidr(u64),
    /// RAM size out of range or misaligned.
    #[error("guest RAM of {0:#x} bytes: must be a multiple of 2 MiB between 32 MiB and 255 GiB")]
    BadRamSize(u64),
    /// Command line too long or with a NUL.
    #[error("kernel command line of {0} bytes: must be under {CMDLINE_MAX} bytes without NUL")]
    BadCmdline(usize),
    /// Initrd not inside RAM.
    #[error("initrd at {addr:#x}+{size:#x} is not inside guest RAM")]
    InitrdOutsideRam {
        /// Address.
        addr: u64,
        /// Size.
        size: u64,
    },
    /// rng-seed too long.
    #[error("rng-seed of {0} bytes is over {RNG_SEED_MAX}")]
    RngSeedTooLong(usize),
    /// More virtio devices than slots.
    #[error("{count} virtio-mmio devices: at most {max} fit")]
    TooManyDevices {
        /// Requested.
        count: usize,
        /// Slots.
        max: u32,
    },
    /// Two regions share an address.
    #[error("{a} ({a_base:#x}+{a_size:#x}) overlaps {b} ({b_base:#x}+{b_size:#x})")]
    Overlap {
        /// First region.
        a: String,
        /// Its base.
        a_base: u64,
        /// Its size.
        a_size: u64,
        /// Second region.
        b: String,
        /// Its base.
        b_base: u64,
        /// Its size.
        b_size: u64,
    },
    /// A device window of size 0.
    #[error("{0} has an empty window")]
    EmptyRegion(String),
    /// An SPI used twice or out of range.
    #[error("SPI {0} is out of range or used by two devices")]
    BadSpi(u32),
}

/// The MPIDR KVM gives vCPU `index` by default (Aff0 = 4 bits, then Aff1
/// and Aff2), which is also QEMU `virt`'s for GICv3 (16 CPUs a cluster).
pub fn kvm_default_mpidr(index: u32) -> u64 {
    let i = u64::from(index);
    (i & 0xf) | (((i >> 4) & 0xff) << 8) | (((i >> 12) & 0xff) << 16)
}

/// The first `count` virtio-mmio slots.
pub fn virtio_slots(count: usize) -> Result<Vec<VirtioSlot>, FdtError> {
    let too_many = FdtError::TooManyDevices {
        count,
        max: layout::VIRTIO_MMIO_SLOTS,
    };
    let n = u32::try_from(count).map_err(|_| too_many.clone())?;
    (0..n)
        .map(|i| layout::virtio_slot(i).ok_or(too_many.clone()))
        .collect()
}

impl FdtConfig {
    /// `cpus` vCPUs with KVM's default MPIDRs, GICv3, PSCI over HVC, the
    /// RTC, no initrd, no seeds, no virtio devices.
    pub fn new(cpus: u32, ram_size: u64, cmdline: &str) -> Self {
        Self {
            cpu_mpidrs: (0..cpus).map(kvm_default_mpidr).collect(),
            ram_size,
            cmdline: cmdline.to_string(),
            initrd: None,
            rng_seed: None,
            kaslr_seed: None,
            gic: GicVersion::V3,
            psci_method: PsciMethod::Hvc,
            rtc: true,
            virtio: Vec::new(),
        }
    }

    fn gic_regions(&self) -> Vec<Region> {
        let dist = Region {
            name: "gic-dist",
            base: layout::GIC_DIST_BASE,
            size: layout::GIC_DIST_SIZE,
        };
        match self.gic {
            GicVersion::V2 => vec![
                dist,
                Region {
                    name: "gicv2-cpu",
                    base: layout::GICV2_CPU_BASE,
                    size: layout::GICV2_CPU_SIZE,
                },
            ],
            GicVersion::V3 => vec![
                dist,
                Region {
                    name: "gicv3-redist",
                    base: layout::GICV3_REDIST_BASE,
                    size: self.cpu_mpidrs.len() as u64 * GICV3_REDIST_STRIDE,
                },
            ],
        }
    }

    fn validate(&self) -> Result<(), FdtError> {
        let cpus = self.cpu_mpidrs.len();
        if cpus == 0 {
            return Err(FdtError::NoCpus);
        }
        let max = match self.gic {
            GicVersion::V2 => GICV2_MAX_CPUS,
            GicVersion::V3 => GICV3_MAX_CPUS,
        };
        if cpus > max as usize {
            return Err(FdtError::TooManyCpus {
                cpus,
                max,
                gic: self.gic,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for &m in &self.cpu_mpidrs {
            if m & !0xff_00ff_ffff != 0 || !seen.insert(m) {
                return Err(FdtError::BadMpidr(m));
            }
        }
        let r = self.ram_size;
        if !(layout::RAM_MIN_SIZE..=layout::RAM_MAX_SIZE).contains(&r)
            || !r.is_multiple_of(layout::RAM_ALIGN)
        {
            return Err(FdtError::BadRamSize(r));
        }
        if self.cmdline.len() >= CMDLINE_MAX || self.cmdline.contains('\0') {
            return Err(FdtError::BadCmdline(self.cmdline.len()));
        }
        if let Some((addr, size)) = self.initrd {
            let inside = addr >= RAM_BASE
                && addr
                    .checked_add(size)
                    .is_some_and(|end| end <= RAM_BASE + r);
            if !inside {
                return Err(FdtError::InitrdOutsideRam { addr, size });
            }
        }
        if let Some(seed) = &self.rng_seed {
            if seed.len() > RNG_SEED_MAX {
                return Err(FdtError::RngSeedTooLong(seed.len()));
            }
        }
        if self.virtio.len() > layout::VIRTIO_MMIO_SLOTS as usize {
            return Err(FdtError::TooManyDevices {
                count: self.virtio.len(),
                max: layout::VIRTIO_MMIO_SLOTS,
            });
        }
        let mut regions: Vec<(String, u64, u64)> = self
            .gic_regions()
            .iter()
            .map(|g| (g.name.to_string(), g.base, g.size))
            .collect();
        regions.push(("pl011".into(), layout::UART_BASE, layout::UART_SIZE));
        let mut spis = vec![layout::UART_SPI];
        if self.rtc {
            regions.push(("pl031".into(), layout::RTC_BASE, layout::RTC_SIZE));
            spis.push(layout::RTC_SPI);
        }
        for v in &self.virtio {
            regions.push((format!("virtio-mmio slot {}", v.index), v.base, v.size));
            spis.push(v.spi);
        }
        regions.push(("ram".into(), RAM_BASE, r));
        if let Some((name, _, _)) = regions.iter().find(|(_, _, size)| *size == 0) {
            return Err(FdtError::EmptyRegion(name.clone()));
        }
        for (i, (a, ab, asz)) in regions.iter().enumerate() {
            for (b, bb, bsz) in &regions[i + 1..] {
                let a_end = ab.saturating_add(*asz);
                let b_end = bb.saturating_add(*bsz);
                if ab < &b_end && bb < &a_end {
                    return Err(FdtError::Overlap {
                        a: a.clone(),
                        a_base: *ab,
                        a_size: *asz,
                        b: b.clone(),
                        b_base: *bb,
                        b_size: *bsz,
                    });
                }
            }
        }
        let mut used = std::collections::HashSet::new();
        for s in spis {
            if s > MAX_SPI || !used.insert(s) {
                return Err(FdtError::BadSpi(s));
            }
        }
        Ok(())
    }
}

fn spi(n: u32, flags: u32) -> [u32; 3] {
    [GIC_FDT_IRQ_TYPE_SPI, n, flags]
}

fn reg(w: &mut FdtWriter, base: u64, size: u64) -> Result<(), FdtWriteError> {
    w.property_u64s("reg", &[base, size])
}

/// Builds the DTB for `cfg`.
pub fn build(cfg: &FdtConfig) -> Result<Vec<u8>, FdtError> {
    cfg.validate()?;
    let mut w = FdtWriter::new();
    w.set_size_limit(layout::FDT_MAX_SIZE as usize);
    w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string("model", MODEL)?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    chosen(&mut w, cfg)?;
    w.begin_node(&format!("memory@{RAM_BASE:x}"))?;
    w.property_string("device_type", "memory")?;
    reg(&mut w, RAM_BASE, cfg.ram_size)?;
    w.end_node()?;
    cpus(&mut w, cfg)?;
    w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.property_string(
        "method",
        match cfg.psci_method {
            PsciMethod::Hvc => "hvc",
            PsciMethod::Smc => "smc",
        },
    )?;
    w.end_node()?;
    gic(&mut w, cfg)?;
    timer(&mut w, cfg)?;
    devices(&mut w, cfg)?;
    w.end_node()?;
    Ok(w.finish()?)
}

fn chosen(w: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtError> {
    w.begin_node("chosen")?;
    w.property_string("bootargs", &cfg.cmdline)?;
    w.property_string("stdout-path", &format!("/{UART_NODE}"))?;
    if let Some((addr, size)) = cfg.initrd {
        w.property_u64("linux,initrd-start", addr)?;
        w.property_u64("linux,initrd-end", addr + size)?;
    }
    if let Some(seed) = &cfg.rng_seed {
        w.property("rng-seed", seed)?;
    }
    if let Some(seed) = cfg.kaslr_seed {
        w.property_u64("kaslr-seed", seed)?;
    }
    w.end_node()?;
    Ok(())
}

fn cpus(w: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtError> {
    // One cell holds Aff0-Aff2; Aff3 (bits 32-39) needs two.
    let two_cells = cfg.cpu_mpidrs.iter().any(|m| m >> 32 != 0);
    w.begin_node("cpus")?;
    w.property_u32("#address-cells", if two_cells { 2 } else { 1 })?;
    w.property_u32("#size-cells", 0)?;
    for &m in &cfg.cpu_mpidrs {
        w.begin_node(&format!("cpu@{m:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,arm-v8")?;
        w.property_string("enable-method", "psci")?;
        if two_cells {
            w.property_u64("reg", m)?;
        } else {
            w.property_u32("reg", m as u32)?;
        }
        w.end_node()?;
    }
    w.end_node()?;
    Ok(())
}

fn gic(w: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtError> {
    let regions = cfg.gic_regions();
    w.begin_node(&format!("intc@{:x}", layout::GIC_DIST_BASE))?;
    match cfg.gic {
        GicVersion::V3 => {
            w.property_string("compatible", "arm,gic-v3")?;
            w.property_u32("#redistributor-regions", 1)?;
        }
        GicVersion::V2 => w.property_string("compatible", "arm,cortex-a15-gic")?,
    }
    w.property_null("interrupt-controller")?;
    w.property_u32("#interrupt-cells", 3)?;
    // dtc wants it on an interrupt provider (interrupt-map users read it).
    w.property_u32("#address-cells", 2)?;
    let r: Vec<u64> = regions.iter().flat_map(|g| [g.base, g.size]).collect();
    w.property_u64s("reg", &r)?;
    w.property_cells(
        "interrupts",
        &[GIC_FDT_IRQ_TYPE_PPI, GIC_MAINT_PPI, IRQ_TYPE_LEVEL_HIGH],
    )?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    w.end_node()?;
    Ok(())
}

fn timer(w: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtError> {
    // GICv2 PPIs name their target CPUs in bits 8-15 of the flags.
    let mut flags = IRQ_TYPE_LEVEL_HIGH;
    if cfg.gic == GicVersion::V2 {
        flags |= ((1u32 << cfg.cpu_mpidrs.len()) - 1) << 8;
    }
    let cells: Vec<u32> = layout::TIMER_PPIS
        .iter()
        .flat_map(|&p| [GIC_FDT_IRQ_TYPE_PPI, p, flags])
        .collect();
    w.begin_node("timer")?;
    w.property_strings("compatible", &["arm,armv8-timer", "arm,armv7-timer"])?;
    w.property_cells("interrupts", &cells)?;
    w.property_null("always-on")?;
    w.end_node()?;
    Ok(())
}

fn devices(w: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtError> {
    w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", 24_000_000)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", CLOCK_PHANDLE)?;
    w.end_node()?;

    w.begin_node(UART_NODE)?;
    w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
    reg(w, layout::UART_BASE, layout::UART_SIZE)?;
    w.property_cells("interrupts", &spi(layout::UART_SPI, IRQ_TYPE_LEVEL_HIGH))?;
    w.property_cells("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    w.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
    w.end_node()?;

    if cfg.rtc {
        w.begin_node(&format!("pl031@{:x}", layout::RTC_BASE))?;
        w.property_strings("compatible", &["arm,pl031", "arm,primecell"])?;
        reg(w, layout::RTC_BASE, layout::RTC_SIZE)?;
        w.property_cells("interrupts", &spi(layout::RTC_SPI, IRQ_TYPE_LEVEL_HIGH))?;
        w.property_cells("clocks", &[CLOCK_PHANDLE])?;
        w.property_string("clock-names", "apb_pclk")?;
        w.end_node()?;
    }

    for v in &cfg.virtio {
        w.begin_node(&format!("virtio_mmio@{:x}", v.base))?;
        w.property_string("compatible", "virtio,mmio")?;
        reg(w, v.base, v.size)?;
        w.property_cells("interrupts", &spi(v.spi, IRQ_TYPE_EDGE_RISING))?;
        w.property_null("dma-coherent")?;
        w.end_node()?;
    }
    Ok(())
}

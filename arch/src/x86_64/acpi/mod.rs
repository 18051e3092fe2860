//! ACPI tables for a hardware-reduced x86_64 microVM: RSDP, XSDT, FADT,
//! MADT and a DSDT describing the serial port, pvpanic, the \_S5 sleep
//! state and any virtio-mmio devices (`LNRO0005`, as Firecracker does).

pub mod aml;

use super::layout;

/// A virtio-mmio device to describe in the DSDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// MMIO window base.
    pub base: u64,
    /// MMIO window size.
    pub size: u64,
    /// GSI (edge-triggered IOAPIC pin).
    pub irq: u32,
}

/// What the tables describe.
#[derive(Debug, Clone, Default)]
pub struct AcpiConfig {
    /// Number of vCPUs (LAPIC ids 0..cpus).
    pub cpus: u32,
    /// virtio-mmio devices.
    pub virtio: Vec<VirtioMmioDevice>,
}

/// Errors building the tables.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    /// They do not fit between [`layout::ACPI_ADDR`] and [`layout::ACPI_END`].
    #[error("ACPI tables need {0} bytes, more than the {1} bytes reserved for them")]
    TooBig(usize, usize),
    /// More CPUs than xAPIC ids.
    #[error("at most {max} vCPUs can be described in the MADT, not {0}", max = layout::MAX_VCPUS)]
    TooManyCpus(u32),
    /// A virtio device outside the 32-bit MMIO gap.
    #[error("virtio-mmio device at {0:#x} is outside the 32-bit MMIO gap")]
    BadDevice(u64),
    /// A virtio device window overlapping another one.
    #[error("virtio-mmio device at {0:#x} overlaps another device")]
    Overlap(u64),
    /// A virtio device on an IRQ that is not free for it.
    #[error("virtio-mmio device at {0:#x} uses IRQ {1}; free IRQs are {first}..={last}", first = layout::VIRTIO_IRQ_BASE, last = layout::IRQ_MAX)]
    BadIrq(u64, u32),
}

const OEM_ID: &[u8; 6] = b"ZVISOR";
const OEM_TABLE_ID: &[u8; 8] = b"ZVISORVM";
const CREATOR_ID: &[u8; 4] = b"ZVSR";

/// Byte sum must be zero: returns the byte that makes it so.
pub fn checksum(b: &[u8]) -> u8 {
    0u8.wrapping_sub(b.iter().fold(0u8, |a, &x| a.wrapping_add(x)))
}

fn header(sig: &[u8; 4], revision: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(36);
    h.extend(sig);
    h.extend(0u32.to_le_bytes()); // length, set by finish()
    h.push(revision);
    h.push(0); // checksum, set by finish()
    h.extend(OEM_ID);
    h.extend(OEM_TABLE_ID);
    h.extend(1u32.to_le_bytes()); // OEM revision
    h.extend(CREATOR_ID);
    h.extend(1u32.to_le_bytes()); // creator revision
    h
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = 0;
    t[9] = checksum(&t);
    t
}

/// A Generic Address Structure for an I/O port register.
fn gas_io(port: u16, bits: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1; // system I/O
    g[1] = bits;
    g[3] = 1; // byte access
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// The DSDT.
pub fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    use aml::*;
    let mut sb = vec![
        device(
            "COM1",
            &[
                name("_HID", eisa_id("PNP0501")),
                name("_UID", integer(0)),
                name(
                    "_CRS",
                    resource_template(&[
                        res::io(layout::COM1_PORT, 8),
                        res::irq(layout::COM1_IRQ as u8),
                    ]),
                ),
            ],
        ),
        device(
            "PEVT",
            &[
                name("_HID", string("QEMU0001")),
                name(
                    "_CRS",
                    resource_template(&[res::io(layout::PVPANIC_PORT, 1)]),
                ),
            ],
        ),
    ];
    for (i, d) in cfg.virtio.iter().enumerate() {
        sb.push(device(
            &format!("V{i:03X}"),
            &[
                name("_HID", string("LNRO0005")),
                name("_UID", integer(i as u64)),
                name("_CCA", integer(1)),
                name(
                    "_CRS",
                    resource_template(&[
                        res::memory32_fixed(d.base as u32, d.size as u32),
                        res::interrupt(d.irq),
                    ]),
                ),
            ],
        ));
    }
    let mut t = header(b"DSDT", 2);
    t.extend(scope("\\_SB", &sb));
    // \_S5: SLP_TYP 5 for soft-off, written to the sleep control register.
    t.extend(name(
        "_S5",
        package(&[integer(5), integer(0), integer(0), integer(0)]),
    ));
    finish(t)
}

/// The FADT (revision 6, hardware-reduced) pointing at the DSDT.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut t = header(b"FACP", 6);
    t.resize(276, 0);
    t[40..44].copy_from_slice(&(dsdt_addr as u32).to_le_bytes());
    // IAPC_BOOT_ARCH: VGA not present (bit 2), MSI not supported (bit 3),
    // CMOS RTC not present (bit 5).
    t[109..111].copy_from_slice(&((1u16 << 2) | (1 << 3) | (1 << 5)).to_le_bytes());
    // Flags: WBINVD (0), RESET_REG_SUP (10), HW_REDUCED_ACPI (20).
    let flags: u32 = 1 | (1 << 10) | (1 << 20);
    t[112..116].copy_from_slice(&flags.to_le_bytes());
    t[116..128].copy_from_slice(&gas_io(layout::RESET_PORT, 8));
    t[128] = layout::RESET_VALUE;
    t[131] = 3; // FADT minor version: 6.3
    t[140..148].copy_from_slice(&dsdt_addr.to_le_bytes()); // X_DSDT
    t[244..256].copy_from_slice(&gas_io(layout::SLEEP_CONTROL_PORT, 8));
    t[256..268].copy_from_slice(&gas_io(layout::SLEEP_STATUS_PORT, 8));
    t[268..276].copy_from_slice(b"ZVISORVM"); // hypervisor vendor identity
    finish(t)
}

/// The MADT: one enabled LAPIC per vCPU, the IOAPIC, and ISA IRQ0 on GSI 2
/// (KVM routes the PIT to IOAPIC pin 2).
pub fn madt(cpus: u32) -> Vec<u8> {
    let mut t = header(b"APIC", 5);
    t.extend(layout::LAPIC_ADDR.to_le_bytes());
    t.extend(1u32.to_le_bytes()); // PCAT_COMPAT: KVM also emulates the 8259s
    for i in 0..cpus {
        t.extend([0, 8, i as u8, i as u8]);
        t.extend(1u32.to_le_bytes()); // enabled
    }
    t.extend([1, 12, 0, 0]);
    t.extend(layout::IOAPIC_ADDR.to_le_bytes());
    t.extend(0u32.to_le_bytes()); // GSI base
    t.extend([2, 10, 0, 0]);
    t.extend(2u32.to_le_bytes());
    t.extend(0u16.to_le_bytes());
    finish(t)
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut t = header(b"XSDT", 1);
    for e in entries {
        t.extend(e.to_le_bytes());
    }
    finish(t)
}

fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(36);
    r.extend(b"RSD PTR ");
    r.push(0);
    r.extend(OEM_ID);
    r.push(2);
    r.extend(0u32.to_le_bytes()); // no RSDT
    r.extend(36u32.to_le_bytes());
    r.extend(xsdt_addr.to_le_bytes());
    r.extend([0, 0, 0, 0]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

fn align16(x: u64) -> u64 {
    (x + 15) & !15
}

/// Builds all tables, laid out from [`layout::ACPI_ADDR`]. Returns the
/// `(guest address, bytes)` blocks to write; the RSDP is at `ACPI_ADDR`.
pub fn build(cfg: &AcpiConfig) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    if cfg.cpus == 0 || cfg.cpus > layout::MAX_VCPUS {
        return Err(AcpiError::TooManyCpus(cfg.cpus));
    }
    for (i, d) in cfg.virtio.iter().enumerate() {
        if d.base < layout::MMIO_GAP_START
            || d.size == 0
            || d.size > u64::from(u32::MAX)
            || d.base.saturating_add(d.size) > u64::from(layout::IOAPIC_ADDR)
        {
            return Err(AcpiError::BadDevice(d.base));
        }
        if !(layout::VIRTIO_IRQ_BASE..=layout::IRQ_MAX).contains(&d.irq)
            || cfg.virtio[..i].iter().any(|o| o.irq == d.irq)
        {
            return Err(AcpiError::BadIrq(d.base, d.irq));
        }
        if cfg.virtio[..i]
            .iter()
            .any(|o| d.base < o.base + o.size && o.base < d.base + d.size)
        {
            return Err(AcpiError::Overlap(d.base));
        }
    }
    let dsdt_addr = layout::ACPI_ADDR + 0x40;
    let dsdt = dsdt(cfg);
    let fadt_addr = align16(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr);
    let madt_addr = align16(fadt_addr + fadt.len() as u64);
    let madt = madt(cfg.cpus);
    let xsdt_addr = align16(madt_addr + madt.len() as u64);
    let xsdt = xsdt(&[fadt_addr, madt_addr]);
    let end = xsdt_addr + xsdt.len() as u64;
    let room = (layout::ACPI_END - layout::ACPI_ADDR) as usize;
    if end > layout::ACPI_END {
        return Err(AcpiError::TooBig((end - layout::ACPI_ADDR) as usize, room));
    }
    Ok(vec![
        (layout::ACPI_ADDR, rsdp(xsdt_addr)),
        (dsdt_addr, dsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
        (xsdt_addr, xsdt),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(blocks: &[(u64, Vec<u8>)], addr: u64) -> &[u8] {
        &blocks.iter().find(|b| b.0 == addr).expect("table").1
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn tables_link_and_checksum() {
        let cfg = AcpiConfig {
            cpus: 3,
            virtio: vec![VirtioMmioDevice {
                base: layout::VIRTIO_MMIO_BASE,
                size: 0x1000,
                irq: 5,
            }],
        };
        let b = build(&cfg).unwrap();
        let r = at(&b, layout::ACPI_ADDR);
        assert_eq!(&r[..8], b"RSD PTR ");
        assert_eq!(checksum(&r[..20]), 0);
        assert_eq!(checksum(r), 0);
        let x = at(&b, u64_at(r, 24));
        assert_eq!(&x[..4], b"XSDT");
        assert_eq!(checksum(x), 0);
        let entries: Vec<u64> = x[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(entries.len(), 2);
        let f = at(&b, entries[0]);
        assert_eq!(&f[..4], b"FACP");
        assert_eq!(f.len(), 276);
        assert_eq!(checksum(f), 0);
        let d = at(&b, u64_at(f, 140));
        assert_eq!(&d[..4], b"DSDT");
        assert_eq!(checksum(d), 0);
        assert!(d.windows(8).any(|w| w == b"QEMU0001"));
        assert!(d.windows(8).any(|w| w == b"LNRO0005"));
        assert!(d.windows(4).any(|w| w == b"_S5_"));
        let m = at(&b, entries[1]);
        assert_eq!(&m[..4], b"APIC");
        assert_eq!(checksum(m), 0);
        // Walk the MADT's entries.
        let (mut o, mut n) = (44usize, 0);
        while o < m.len() {
            if m[o] == 0 {
                n += 1;
                assert_eq!(m[o + 3], (n - 1) as u8);
            }
            o += m[o + 1] as usize;
        }
        assert_eq!(o, m.len());
        assert_eq!(n, 3);
        // Blocks do not overlap.
        let mut spans: Vec<(u64, u64)> = b.iter().map(|(a, v)| (*a, a + v.len() as u64)).collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    }

    #[test]
    fn refuses_bad_configs() {
        let cfg = AcpiConfig {
            cpus: 255,
            virtio: vec![],
        };
        assert_eq!(build(&cfg).unwrap_err(), AcpiError::TooManyCpus(255));
        let msg = AcpiError::TooManyCpus(255).to_string();
        assert!(msg.contains("at most 254 vCPUs"), "{msg}");
        let cfg = AcpiConfig {
            cpus: 1,
            virtio: vec![VirtioMmioDevice {
                base: 0x1000,
                size: 0x1000,
                irq: 5,
            }],
        };
        assert_eq!(build(&cfg).unwrap_err(), AcpiError::BadDevice(0x1000));
        let dev = |base, irq| VirtioMmioDevice {
            base,
            size: 0x1000,
            irq,
        };
        let base = layout::VIRTIO_MMIO_BASE;
        let cfg = AcpiConfig {
            cpus: 1,
            virtio: vec![dev(base, 5), dev(base + 0x800, 6)],
        };
        assert_eq!(build(&cfg).unwrap_err(), AcpiError::Overlap(base + 0x800));
        let cfg = AcpiConfig {
            cpus: 1,
            virtio: vec![dev(base, 5), dev(base + 0x1000, 5)],
        };
        assert_eq!(
            build(&cfg).unwrap_err(),
            AcpiError::BadIrq(base + 0x1000, 5)
        );
        let cfg = AcpiConfig {
            cpus: 1,
            virtio: vec![dev(base, 4)],
        };
        assert_eq!(build(&cfg).unwrap_err(), AcpiError::BadIrq(base, 4));
        let cfg = AcpiConfig {
            cpus: 1,
            virtio: (0..layout::MAX_VIRTIO_DEVICES)
                .filter_map(layout::virtio_mmio_slot)
                .map(|(b, _, i)| dev(b, i))
                .collect(),
        };
        let t = build(&cfg).unwrap();
        let dsdt = &t[1].1;
        assert_eq!(dsdt.windows(8).filter(|w| w == b"LNRO0005").count(), 19);
    }

    #[test]
    fn largest_config_fits() {
        let cfg = AcpiConfig {
            cpus: layout::MAX_VCPUS,
            virtio: (0..layout::MAX_VIRTIO_DEVICES)
                .filter_map(layout::virtio_mmio_slot)
                .map(|(base, size, irq)| VirtioMmioDevice { base, size, irq })
                .collect(),
        };
        let t = build(&cfg).unwrap();
        let end = t.iter().map(|(a, v)| a + v.len() as u64).max().unwrap();
        assert!(end <= layout::ACPI_END);
        let madt = &t.iter().find(|(_, v)| &v[..4] == b"APIC").unwrap().1;
        // 44-byte header, 8 bytes per LAPIC, then the IOAPIC and one override.
        assert_eq!(madt.len(), 44 + 8 * 254 + 12 + 10);
    }
}

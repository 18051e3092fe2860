//! Tests of the writer, the reader and the guest tree. Every check reads
//! the blob back with [`reader::parse`], so byte order and alignment are
//! checked on big-endian s390x as well (the blob is big-endian everywhere).

use super::reader::{parse, FdtParseError};
use super::writer::FDT_MAGIC;
use super::*;

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

#[test]
fn header_blocks_and_alignment() {
    let mut w = FdtWriter::new();
    w.set_boot_cpuid(3);
    w.add_reservation(0x4000_0000, 0x1000).unwrap();
    w.begin_node("").unwrap();
    w.property_string("a", "xyz").unwrap(); // 4 bytes with NUL
    w.property("b", &[1, 2, 3, 4, 5]).unwrap(); // padded to 8
    w.begin_node("n@1").unwrap();
    w.property_u32("a", 7).unwrap();
    w.end_node().unwrap();
    w.end_node().unwrap();
    let b = w.finish().unwrap();
    assert_eq!(be32(&b, 0), FDT_MAGIC);
    assert_eq!(&b[0..4], &[0xd0, 0x0d, 0xfe, 0xed], "big-endian magic");
    assert_eq!(be32(&b, 4) as usize, b.len());
    assert_eq!(be32(&b, 20), 17);
    assert_eq!(be32(&b, 24), 16);
    assert_eq!(be32(&b, 28), 3);
    let (st, strs, rsv) = (be32(&b, 8), be32(&b, 12), be32(&b, 16));
    assert_eq!(rsv % 8, 0);
    assert_eq!(st % 4, 0);
    assert_eq!(be32(&b, 36) % 4, 0, "structure size is a multiple of 4");
    assert_eq!(st, rsv + 32, "one reservation plus the terminator");
    assert_eq!(strs, st + be32(&b, 36));
    assert_eq!(strs + be32(&b, 32), b.len() as u32);
    // Strings: "a" stored once although used twice.
    assert_eq!(&b[strs as usize..], b"a\0b\0");
    // Structure: BEGIN_NODE, "" padded, PROP len=4 nameoff=0 "xyz\0".
    let s = st as usize;
    assert_eq!(
        &b[s..s + 24],
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, b'x', b'y', b'z', 0]
    );
    let fdt = parse(&b).unwrap();
    assert_eq!(fdt.boot_cpuid, 3);
    assert_eq!(fdt.reservations, [(0x4000_0000, 0x1000)]);
    assert_eq!(fdt.root.string("a"), Some("xyz"));
    assert_eq!(fdt.root.prop("b"), Some(&[1u8, 2, 3, 4, 5][..]));
    assert_eq!(fdt.node("/n@1").unwrap().u32("a"), Some(7));
}

#[test]
fn writer_rejects_malformed_trees() {
    let mut w = FdtWriter::new();
    assert_eq!(
        w.property_u32("x", 1),
        Err(FdtWriteError::OutsideRoot("a property"))
    );
    assert_eq!(w.end_node(), Err(FdtWriteError::UnbalancedEnd));
    assert!(matches!(
        w.begin_node("notroot"),
        Err(FdtWriteError::InvalidNodeName(_))
    ));
    w.begin_node("").unwrap();
    for bad in ["", "a b", "x@", "@1", "a/b", &"n".repeat(64), "é"] {
        assert!(
            matches!(w.begin_node(bad), Err(FdtWriteError::InvalidNodeName(_))),
            "{bad:?}"
        );
    }
    for bad in ["", "a b", "a@b", &"p".repeat(32)] {
        assert!(
            matches!(
                w.property_null(bad),
                Err(FdtWriteError::InvalidPropertyName(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        w.property_string("s", "a\0b"),
        Err(FdtWriteError::NulInString("s".into()))
    );
    w.property_null("#address-cells").unwrap();
    assert_eq!(
        w.property_null("#address-cells"),
        Err(FdtWriteError::DuplicateProperty("#address-cells".into()))
    );
    w.begin_node("c@0").unwrap();
    w.end_node().unwrap();
    assert_eq!(
        w.begin_node("c@0"),
        Err(FdtWriteError::DuplicateNode("c@0".into()))
    );
    assert_eq!(
        w.property_null("late"),
        Err(FdtWriteError::PropertyAfterSubnode("late".into()))
    );
    w.begin_node("open").unwrap();
    let mut w2 = FdtWriter::new();
    w2.begin_node("").unwrap();
    w2.end_node().unwrap();
    assert!(w2.begin_node("").is_err(), "a second root");
    assert_eq!(w.finish(), Err(FdtWriteError::UnclosedNodes(2)));
    assert!(FdtWriter::new().finish().is_err());
    let mut w = FdtWriter::new();
    assert!(w.add_reservation(u64::MAX, 2).is_err());
    w.set_size_limit(100);
    w.begin_node("").unwrap();
    w.property("big", &[0; 64]).unwrap();
    w.end_node().unwrap();
    assert!(matches!(
        w.finish(),
        Err(FdtWriteError::TooLarge { limit: 100, .. })
    ));
}

#[test]
fn reader_rejects_corrupt_blobs() {
    let good = build(&FdtConfig::new(1, 64 << 20, "x")).unwrap();
    assert!(parse(&good).is_ok());
    assert_eq!(parse(&good[..20]), Err(FdtParseError::Truncated("header")));
    assert!(parse(&good[..good.len() - 1]).is_err());
    let mut bad = good.clone();
    bad[0] = 0;
    assert!(matches!(parse(&bad), Err(FdtParseError::BadMagic(_))));
    let mut bad = good.clone();
    bad[20..24].copy_from_slice(&16u32.to_be_bytes());
    assert!(matches!(parse(&bad), Err(FdtParseError::BadVersion { .. })));
    // Every single-byte corruption of the header and structure block must
    // be either rejected or still parse; none may panic.
    let st = be32(&good, 8) as usize;
    for i in (0..st + 256).step_by(3) {
        let mut b = good.clone();
        b[i] ^= 0xa5;
        let _ = parse(&b);
    }
}

fn cfg(cpus: u32) -> FdtConfig {
    let mut c = FdtConfig::new(cpus, 384 << 20, "console=ttyAMA0 panic=-1 zvisor.tag=t");
    c.initrd = Some((0x5700_0000, 0x12_3456));
    c.rng_seed = Some((0..32).collect());
    c.kaslr_seed = Some(0x0123_4567_89ab_cdef);
    c.virtio = virtio_slots(2).unwrap();
    c
}

#[test]
fn guest_tree_gicv3_has_what_linux_needs() {
    let b = build(&cfg(2)).unwrap();
    let t = parse(&b).unwrap();
    let root = &t.root;
    assert_eq!(root.string("compatible"), Some("linux,dummy-virt"));
    assert_eq!(root.string("model"), Some(MODEL));
    assert_eq!(root.u32("#address-cells"), Some(2));
    assert_eq!(root.u32("#size-cells"), Some(2));
    assert_eq!(root.u32("interrupt-parent"), Some(GIC_PHANDLE));

    let mem = t.node("/memory@40000000").unwrap();
    assert_eq!(mem.string("device_type"), Some("memory"));
    assert_eq!(mem.cells("reg").unwrap(), [0, 0x4000_0000, 0, 0x1800_0000]);

    let chosen = t.node("/chosen").unwrap();
    assert_eq!(
        chosen.string("bootargs"),
        Some("console=ttyAMA0 panic=-1 zvisor.tag=t")
    );
    assert_eq!(chosen.string("stdout-path"), Some("/pl011@9000000"));
    assert!(t.node("/pl011@9000000").is_some(), "stdout-path resolves");
    assert_eq!(chosen.u64("linux,initrd-start"), Some(0x5700_0000));
    assert_eq!(chosen.u64("linux,initrd-end"), Some(0x5712_3456));
    assert_eq!(chosen.prop("rng-seed").unwrap().len(), 32);
    assert_eq!(chosen.u64("kaslr-seed"), Some(0x0123_4567_89ab_cdef));

    let cpus = t.node("/cpus").unwrap();
    assert_eq!(cpus.u32("#address-cells"), Some(1));
    assert_eq!(cpus.u32("#size-cells"), Some(0));
    assert_eq!(cpus.children.len(), 2);
    for (i, c) in cpus.children.iter().enumerate() {
        assert_eq!(c.name, format!("cpu@{i}"));
        assert_eq!(c.u32("reg"), Some(i as u32));
        assert_eq!(c.string("device_type"), Some("cpu"));
        assert_eq!(c.string("compatible"), Some("arm,arm-v8"));
        assert_eq!(c.string("enable-method"), Some("psci"));
    }
    let psci = t.node("/psci").unwrap();
    assert_eq!(
        psci.strings("compatible").unwrap(),
        ["arm,psci-1.0", "arm,psci-0.2"]
    );
    assert_eq!(psci.string("method"), Some("hvc"));

    let gic = t.node("/intc@8000000").unwrap();
    assert_eq!(gic.string("compatible"), Some("arm,gic-v3"));
    assert!(gic.prop("interrupt-controller").unwrap().is_empty());
    assert_eq!(gic.u32("#interrupt-cells"), Some(3));
    assert_eq!(gic.u32("phandle"), Some(GIC_PHANDLE));
    assert_eq!(gic.u32("#redistributor-regions"), Some(1));
    assert_eq!(
        gic.cells("reg").unwrap(),
        [0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x4_0000]
    );

    let timer = t.node("/timer").unwrap();
    assert_eq!(
        timer.cells("interrupts").unwrap(),
        [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
    );
    let clk = t.node("/apb-pclk").unwrap();
    assert_eq!(clk.u32("phandle"), Some(CLOCK_PHANDLE));
    assert_eq!(clk.u32("clock-frequency"), Some(24_000_000));
    let uart = t.node("/pl011@9000000").unwrap();
    assert_eq!(
        uart.strings("compatible").unwrap(),
        ["arm,pl011", "arm,primecell"]
    );
    assert_eq!(uart.cells("interrupts").unwrap(), [0, 1, 4]);
    assert_eq!(
        uart.cells("clocks").unwrap(),
        [CLOCK_PHANDLE, CLOCK_PHANDLE]
    );
    assert_eq!(uart.cells("reg").unwrap(), [0, 0x0900_0000, 0, 0x1000]);
    let rtc = t.node("/pl031@9010000").unwrap();
    assert_eq!(rtc.cells("interrupts").unwrap(), [0, 2, 4]);

    for (i, addr) in [(0u32, 0x0a00_0000u32), (1, 0x0a00_0200)] {
        let v = t.node(&format!("/virtio_mmio@{addr:x}")).unwrap();
        assert_eq!(v.string("compatible"), Some("virtio,mmio"));
        assert_eq!(v.cells("reg").unwrap(), [0, addr, 0, 0x200]);
        assert_eq!(v.cells("interrupts").unwrap(), [0, 16 + i, 1], "SPI, edge");
        assert!(v.prop("dma-coherent").unwrap().is_empty());
    }
    let virtio_nodes = root
        .children
        .iter()
        .filter(|n| n.name.starts_with("virtio_mmio@"))
        .count();
    assert_eq!(virtio_nodes, 2);

    // Every phandle reference resolves, and phandles are unique.
    let mut handles = Vec::new();
    fn walk<'a>(n: &'a reader::Node, out: &mut Vec<&'a reader::Node>) {
        out.push(n);
        for c in &n.children {
            walk(c, out);
        }
    }
    let mut all = Vec::new();
    walk(root, &mut all);
    for n in &all {
        if let Some(p) = n.u32("phandle") {
            handles.push(p);
        }
    }
    handles.sort_unstable();
    assert_eq!(handles, [GIC_PHANDLE, CLOCK_PHANDLE]);
    for n in &all {
        for r in n.cells("clocks").unwrap_or_default() {
            assert!(handles.contains(&r), "{}: clock {r}", n.name);
        }
    }

    // Property names are stored once each in the strings block.
    let names: Vec<&[u8]> = t
        .strings
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .collect();
    let mut dedup = names.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(names.len(), dedup.len(), "strings are deduplicated");
    assert!(names.contains(&&b"compatible"[..]));
}

#[test]
fn gicv2_smc_and_options() {
    let mut c = cfg(3);
    c.gic = GicVersion::V2;
    c.psci_method = PsciMethod::Smc;
    c.rtc = false;
    c.initrd = None;
    c.rng_seed = None;
    c.kaslr_seed = None;
    let t = parse(&build(&c).unwrap()).unwrap();
    let gic = t.node("/intc@8000000").unwrap();
    assert_eq!(gic.string("compatible"), Some("arm,cortex-a15-gic"));
    assert_eq!(gic.prop("#redistributor-regions"), None);
    assert_eq!(
        gic.cells("reg").unwrap(),
        [0, 0x0800_0000, 0, 0x1_0000, 0, 0x0801_0000, 0, 0x1_0000]
    );
    // Three CPUs: mask 0b111 in bits 8-15 of the PPI flags.
    assert_eq!(
        t.node("/timer").unwrap().cells("interrupts").unwrap()[..3],
        [1, 13, 0x704]
    );
    assert_eq!(t.node("/psci").unwrap().string("method"), Some("smc"));
    assert!(t.node("/pl031@9010000").is_none());
    let chosen = t.node("/chosen").unwrap();
    for p in ["linux,initrd-start", "rng-seed", "kaslr-seed"] {
        assert!(chosen.prop(p).is_none(), "{p}");
    }
}

#[test]
fn mpidrs_with_aff3_use_two_cells() {
    let mut c = FdtConfig::new(1, 64 << 20, "");
    c.cpu_mpidrs = vec![0, 0x1_0000_0102];
    let t = parse(&build(&c).unwrap()).unwrap();
    let cpus = t.node("/cpus").unwrap();
    assert_eq!(cpus.u32("#address-cells"), Some(2));
    assert_eq!(
        cpus.child("cpu@100000102").unwrap().u64("reg"),
        Some(0x1_0000_0102)
    );
    assert_eq!(kvm_default_mpidr(0), 0);
    assert_eq!(kvm_default_mpidr(17), 0x101);
    assert_eq!(kvm_default_mpidr(0x1234), 0x01_2304);
}

#[test]
fn limits_and_conflicts_are_errors() {
    let err = |c: &FdtConfig| build(c).unwrap_err();
    let mut c = cfg(1);
    c.cpu_mpidrs.clear();
    assert_eq!(err(&c), FdtError::NoCpus);
    assert!(matches!(
        err(&cfg(124)),
        FdtError::TooManyCpus { max: 123, .. }
    ));
    assert!(build(&cfg(123)).is_ok());
    let mut c = cfg(9);
    c.gic = GicVersion::V2;
    assert!(matches!(err(&c), FdtError::TooManyCpus { max: 8, .. }));
    c.cpu_mpidrs.truncate(8);
    assert!(build(&c).is_ok());
    let mut c = cfg(2);
    c.cpu_mpidrs[1] = 0;
    assert_eq!(err(&c), FdtError::BadMpidr(0));
    c.cpu_mpidrs[1] = 1 << 24;
    assert_eq!(err(&c), FdtError::BadMpidr(1 << 24));
    for ram in [0, 16 << 20, (64 << 20) + 1, 256 << 30] {
        let mut c = cfg(1);
        c.ram_size = ram;
        c.initrd = None;
        assert_eq!(err(&c), FdtError::BadRamSize(ram));
    }
    let mut c = cfg(1);
    c.cmdline = "x".repeat(CMDLINE_MAX);
    assert_eq!(err(&c), FdtError::BadCmdline(CMDLINE_MAX));
    c.cmdline = "x".repeat(CMDLINE_MAX - 1);
    assert!(build(&c).is_ok());
    c.cmdline = "a\0b".into();
    assert!(matches!(err(&c), FdtError::BadCmdline(_)));
    for (addr, size) in [
        (0, 1),
        (0x3fff_f000, 0x2000),
        (0x5800_0000, 1),
        (u64::MAX, 2),
    ] {
        let mut c = cfg(1);
        c.initrd = Some((addr, size));
        assert_eq!(err(&c), FdtError::InitrdOutsideRam { addr, size });
    }
    let mut c = cfg(1);
    c.rng_seed = Some(vec![0; RNG_SEED_MAX + 1]);
    assert_eq!(err(&c), FdtError::RngSeedTooLong(RNG_SEED_MAX + 1));

    assert!(matches!(
        virtio_slots(33),
        Err(FdtError::TooManyDevices { count: 33, max: 32 })
    ));
    let mut c = cfg(1);
    c.virtio = virtio_slots(32).unwrap();
    let t = parse(&build(&c).unwrap()).unwrap();
    assert_eq!(
        t.root
            .children
            .iter()
            .filter(|n| n.name.starts_with("virtio_mmio@"))
            .count(),
        32
    );
    c.virtio.push(c.virtio[0]);
    assert!(matches!(err(&c), FdtError::TooManyDevices { .. }));
    let mut c = cfg(1);
    c.virtio[1].base = c.virtio[0].base + 0x100;
    assert!(matches!(err(&c), FdtError::Overlap { .. }));
    let mut c = cfg(1);
    c.virtio[1].base = layout::UART_BASE;
    assert!(matches!(err(&c), FdtError::Overlap { ref b, .. } if b.contains("virtio")));
    let mut c = cfg(1);
    c.virtio[0].base = RAM_BASE + (1 << 20);
    assert!(matches!(err(&c), FdtError::Overlap { ref b, .. } if b == "ram"));
    let mut c = cfg(1);
    c.virtio[0].size = 0;
    assert!(matches!(err(&c), FdtError::EmptyRegion(_)));
    let mut c = cfg(1);
    c.virtio[1].spi = c.virtio[0].spi;
    assert_eq!(err(&c), FdtError::BadSpi(16));
    c.virtio[1].spi = layout::UART_SPI;
    assert_eq!(err(&c), FdtError::BadSpi(layout::UART_SPI));
    c.virtio[1].spi = MAX_SPI + 1;
    assert_eq!(err(&c), FdtError::BadSpi(MAX_SPI + 1));
    // The RTC's SPI is free when there is no RTC.
    let mut c = cfg(1);
    c.virtio[1].spi = layout::RTC_SPI;
    assert_eq!(err(&c), FdtError::BadSpi(layout::RTC_SPI));
    c.rtc = false;
    assert!(build(&c).is_ok());
}

#[test]
fn largest_tree_fits_in_the_fdt_limit() {
    let mut c = cfg(GICV3_MAX_CPUS);
    c.cmdline = "y".repeat(CMDLINE_MAX - 1);
    c.rng_seed = Some(vec![7; RNG_SEED_MAX]);
    c.virtio = virtio_slots(32).unwrap();
    let b = build(&c).unwrap();
    assert!(b.len() < 64 << 10, "{} bytes", b.len());
    let t = parse(&b).unwrap();
    assert_eq!(t.node("/cpus").unwrap().children.len(), 123);
    assert_eq!(
        t.node("/intc@8000000").unwrap().cells("reg").unwrap()[6..],
        [0, 123 * 0x2_0000]
    );
}

#[test]
fn every_config_in_a_sweep_builds_and_round_trips() {
    // A deterministic sweep over CPU counts, device counts, GIC variants
    // and RAM sizes: each tree parses and describes exactly what was asked.
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for _ in 0..200 {
        let v2 = next() % 2 == 0;
        let cpus = 1 + next() % if v2 { 8 } else { 123 };
        let devs = (next() % 33) as usize;
        let ram = (16 + u64::from(next() % 4096)) * (2 << 20);
        let mut c = FdtConfig::new(cpus, ram, &"a".repeat((next() % 300) as usize));
        c.gic = if v2 { GicVersion::V2 } else { GicVersion::V3 };
        c.virtio = virtio_slots(devs).unwrap();
        c.initrd = Some((RAM_BASE + ram / 2, ram / 4));
        let t = parse(&build(&c).unwrap()).unwrap();
        assert_eq!(t.node("/cpus").unwrap().children.len(), cpus as usize);
        assert_eq!(
            t.node("/memory@40000000").unwrap().cells("reg").unwrap()[2..],
            [(ram >> 32) as u32, ram as u32]
        );
        let n = t
            .root
            .children
            .iter()
            .filter(|n| n.name.starts_with("virtio_mmio@"))
            .count();
        assert_eq!(n, devs);
    }
}

//! The guest device tree checked by the reference tool: `dtc` (Debian's
//! `device-tree-compiler`) must decompile zvisor's DTB without errors or
//! warnings, its source must show the nodes Linux needs, and recompiling
//! that source must give a tree equal to ours (read back with zvisor's
//! reader), which also cross-checks the reader against dtc's writer.
//! Pure logic: runs on every host that has `dtc` (skips, saying why, when
//! it is missing).

use std::path::PathBuf;
use std::process::Command;

use zvisor_arch::aarch64::fdt::{self, reader, FdtConfig, GicVersion};
use zvisor_arch::aarch64::layout::RAM_BASE;

fn dtc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join("dtc"))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: dtc is not installed (apt-get install device-tree-compiler)");
    }
    found
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zvisor-fdt-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sample(gic: GicVersion) -> FdtConfig {
    let mut c = FdtConfig::new(4, 1 << 30, "console=ttyAMA0 root=/dev/vda ro");
    c.gic = gic;
    c.initrd = Some((RAM_BASE + (800 << 20), 3 << 20));
    c.rng_seed = Some(vec![0x5a; 32]);
    c.kaslr_seed = Some(42);
    c.virtio = fdt::virtio_slots(3).unwrap();
    c
}

/// Sorts properties and children so trees compare regardless of order.
fn canonical(n: &reader::Node) -> reader::Node {
    let mut props = n.props.clone();
    props.sort();
    let mut children: Vec<_> = n.children.iter().map(canonical).collect();
    children.sort_by(|a, b| a.name.cmp(&b.name));
    reader::Node {
        name: n.name.clone(),
        props,
        children,
    }
}

#[test]
fn dtc_accepts_and_round_trips_the_guest_tree() {
    let Some(dtc) = dtc() else {
        return;
    };
    let dir = scratch("dtc");
    for gic in [GicVersion::V3, GicVersion::V2] {
        let blob = fdt::build(&sample(gic)).unwrap();
        let dtb = dir.join("z.dtb");
        std::fs::write(&dtb, &blob).unwrap();
        let out = Command::new(&dtc)
            .args(["-I", "dtb", "-O", "dts", "-o", "-"])
            .arg(&dtb)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dtc failed: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "dtc warnings ({gic:?}):\n{stderr}"
        );
        let dts = String::from_utf8(out.stdout).unwrap();
        for want in [
            "compatible = \"linux,dummy-virt\";",
            "memory@40000000 {",
            "reg = <0x00 0x40000000 0x00 0x40000000>;",
            "stdout-path = \"/pl011@9000000\";",
            "bootargs = \"console=ttyAMA0 root=/dev/vda ro\";",
            "linux,initrd-start = <0x00 0x72000000>;",
            "linux,initrd-end = <0x00 0x72300000>;",
            "cpu@3 {",
            "enable-method = \"psci\";",
            "method = \"hvc\";",
            "compatible = \"arm,psci-1.0\\0arm,psci-0.2\";",
            "virtio_mmio@a000000 {",
            "virtio_mmio@a000400 {",
            "interrupts = <0x00 0x12 0x01>;",
            "dma-coherent;",
            "compatible = \"arm,pl011\\0arm,primecell\";",
        ] {
            assert!(dts.contains(want), "{gic:?}: {want:?} missing from\n{dts}");
        }
        assert!(!dts.contains("virtio_mmio@a000600"), "{dts}");
        match gic {
            GicVersion::V3 => assert!(
                dts.contains("reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x80000>;"),
                "{dts}"
            ),
            GicVersion::V2 => assert!(
                dts.contains("reg = <0x00 0x8000000 0x00 0x10000 0x00 0x8010000 0x00 0x10000>;"),
                "{dts}"
            ),
        }

        // Recompile dtc's source and compare trees.
        let dts_path = dir.join("z.dts");
        std::fs::write(&dts_path, &dts).unwrap();
        let again = dir.join("again.dtb");
        let out = Command::new(&dtc)
            .args(["-I", "dts", "-O", "dtb", "-o"])
            .arg(&again)
            .arg(&dts_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = reader::parse(&std::fs::read(&again).unwrap()).unwrap();
        let ours = reader::parse(&blob).unwrap();
        assert_eq!(canonical(&theirs.root), canonical(&ours.root), "{gic:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reader_parses_a_tree_dtc_wrote_from_source() {
    let Some(dtc) = dtc() else {
        return;
    };
    let dir = scratch("src");
    let src = dir.join("t.dts");
    std::fs::write(
        &src,
        "/dts-v1/;\n/memreserve/ 0x48000000 0x1000;\n/ {\n  #address-cells = <2>;\n  \
         #size-cells = <2>;\n  l: leaf@10 { reg = <0 0x10 0 0x20>; s = \"a\", \"bc\"; b; };\n  \
         r { p = <&l>; };\n};\n",
    )
    .unwrap();
    let dtb = dir.join("t.dtb");
    let out = Command::new(&dtc)
        .args(["-q", "-I", "dts", "-O", "dtb", "-o"])
        .arg(&dtb)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = reader::parse(&std::fs::read(&dtb).unwrap()).unwrap();
    assert_eq!(t.reservations, [(0x4800_0000, 0x1000)]);
    let leaf = t.node("/leaf@10").unwrap();
    assert_eq!(leaf.cells("reg").unwrap(), [0, 0x10, 0, 0x20]);
    assert_eq!(leaf.strings("s").unwrap(), ["a", "bc"]);
    assert_eq!(leaf.prop("b"), Some(&[][..]));
    let ph = leaf.u32("phandle").unwrap();
    assert_eq!(t.node("/r").unwrap().u32("p"), Some(ph));
    std::fs::remove_dir_all(&dir).unwrap();
}

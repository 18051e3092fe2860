//! zvisor's aarch64 device tree, validated by a real Linux: Debian's arm64
//! kernel boots under `qemu-system-aarch64 -M virt` (TCG) from the DTB that
//! `zvisor_arch::aarch64::fdt` builds, and finds its memory, CPUs, console,
//! command line, initrd and virtio devices through that tree alone.
//!
//! QEMU must not edit the tree: with `-kernel`, QEMU rewrites `/memory`
//! and `/chosen` of a `-dtb`. So nothing is booted the QEMU way: the
//! kernel Image, initrd, DTB and a 6-instruction boot stub (x0 = DTB,
//! x1-x3 = 0, branch to the kernel) go into RAM with `-device loader`, at
//! the addresses `layout::BootLayout` picks, and CPU 0 starts at the stub.
//! QEMU's secondary CPUs start powered off and come up through the PSCI
//! node of our tree. Our tree gives the guest less RAM than QEMU has (the
//! kernel must see our size) and no `console=` (the console must come from
//! `stdout-path`).
//!
//! `-device virtio-*-device,bus=virtio-mmio-bus.N` puts QEMU's virtio
//! devices on the transports at 0x0a000000 + N * 0x200 (SPI 16 + N), which
//! is where our `virtio_mmio@` nodes say they are. QEMU has 32 transports;
//! Linux only probes those in the tree, so a disk that reads back the
//! expected sector and an hwrng that gives bytes were found through our
//! nodes, with our interrupt numbers (a wrong SPI would hang the disk).
//!
//! The guest runs `qemu-tests/guest/fdt-check.c` (static, cross-compiled)
//! under zvisor-init and reports with `ZVISOR-RESULT` lines.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zvisor_arch::aarch64::fdt::{self, FdtConfig, GicVersion, PsciMethod};
use zvisor_arch::aarch64::image::ImageHeader;
use zvisor_arch::aarch64::layout::{self, BootLayout};
use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};
use zvisor_qemu_tests::assets::on_path;
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::serial::{Kind, Transcript};
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

/// TCG guests are CPU-bound: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CC: &str = "aarch64-linux-gnu-gcc";
const DISK_MARKER: &str = "ZVISOR-FDT-DISK-SECTOR-1";
/// RAM QEMU has; our tree describes less.
const QEMU_RAM_MIB: u64 = 512;
const TIMEOUT: Duration = Duration::from_secs(90);

/// `ldr x0, dtb; mov x1..x3, xzr; ldr x4, kernel; br x4; dtb; kernel`.
fn boot_stub(dtb: u64, kernel: u64) -> Vec<u8> {
    let code: [u32; 6] = [
        0x5800_00c0, // ldr x0, #24
        0xaa1f_03e1, // mov x1, xzr
        0xaa1f_03e2, // mov x2, xzr
        0xaa1f_03e3, // mov x3, xzr
        0x5800_0084, // ldr x4, #16
        0xd61f_0080, // br x4
    ];
    let mut b: Vec<u8> = code.iter().flat_map(|c| c.to_le_bytes()).collect();
    b.extend_from_slice(&dtb.to_le_bytes());
    b.extend_from_slice(&kernel.to_le_bytes());
    b
}

fn run_qemu(args: &[String], log: &Path) -> (String, Option<i32>, Duration) {
    let start = Instant::now();
    let out = std::fs::File::create(log).unwrap();
    let mut child = Command::new("qemu-system-aarch64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start qemu-system-aarch64");
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    let _ = std::fs::File::open(log).unwrap().read_to_string(&mut text);
    (text, code, start.elapsed())
}

fn boot_with_our_fdt(gic: GicVersion, cpus: u32, fdt_ram_mib: u64) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let arch = GuestArch::Aarch64;
    let Some(k) = prerequisites(arch) else {
        return;
    };
    if !on_path(CC) {
        skip(&format!("{CC} is not installed (gcc-aarch64-linux-gnu)"));
        return;
    }
    let name = format!(
        "aarch64-fdt-{}",
        if gic == GicVersion::V3 { "v3" } else { "v2" }
    );
    let dir = workdir(&name);
    let tag = name.clone();

    // The guest's programs: zvisor-init and the checker.
    let init = build_static(arch, &["zvisor-init"], false)
        .expect("static zvisor-init")
        .join("zvisor-init");
    check_static(&init).expect("zvisor-init must be static");
    let check = dir.join("fdt-check");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/fdt-check.c");
    let st = Command::new(CC)
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&check)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "{CC} failed on {}", src.display());
    check_static(&check).expect("fdt-check must be static");

    // Kernel Image (decompressed if the package shipped it gzipped).
    let mut image = std::fs::read(&k.vmlinuz).unwrap();
    if image.starts_with(&[0x1f, 0x8b]) {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(&k.vmlinuz)
            .output()
            .unwrap();
        assert!(out.status.success(), "gzip -dc {}", k.vmlinuz.display());
        image = out.stdout;
    }
    let hdr = ImageHeader::parse(&image).expect("arm64 Image header");
    let kernel = dir.join("Image");
    std::fs::write(&kernel, &image).unwrap();

    let idx = ModuleIndex::scan(&k.modules).expect("modules");
    let modules = idx
        .resolve(&[
            "virtio_mmio".into(),
            "virtio_blk".into(),
            "virtio-rng".into(),
        ])
        .expect("virtio modules");
    let conf = format!("report\nexec fdt-check 60 0 /bin/fdt-check {tag} {DISK_MARKER}\n");
    let initrd = dir.join("initrd.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init),
            files: vec![FileSpec {
                src: check,
                dst: "/bin/fdt-check".into(),
            }],
            texts: vec![("/etc/zvisor/init.conf".into(), conf.into_bytes())],
            modules,
        },
        &initrd,
    )
    .expect("initramfs");
    let initrd_size = std::fs::metadata(&initrd).unwrap().len();

    // A 1 MiB disk whose sector 1 holds the marker.
    let disk = dir.join("disk.img");
    let mut d = vec![0u8; 1 << 20];
    d[512..512 + DISK_MARKER.len() + 1].copy_from_slice(format!("{DISK_MARKER}\n").as_bytes());
    std::fs::write(&disk, &d).unwrap();

    // Our layout and tree. The command line has no console=: the console
    // must come from stdout-path.
    let ram = fdt_ram_mib << 20;
    let image_size = if hdr.image_size == 0 {
        image.len() as u64 * 2
    } else {
        hdr.image_size
    };
    let boot = BootLayout::plan(ram, hdr.text_offset, image_size, initrd_size).expect("layout");
    let nonce = format!("{:x}", std::process::id() ^ 0x5eed);
    let mut cfg = FdtConfig::new(
        cpus,
        ram,
        &format!("panic=-1 quiet zvisor.tag={tag} fdtcheck={nonce}"),
    );
    cfg.gic = gic;
    cfg.psci_method = PsciMethod::Hvc;
    cfg.initrd = Some((boot.initrd_addr, initrd_size));
    cfg.rng_seed = Some(nonce.bytes().cycle().take(32).collect());
    cfg.kaslr_seed = Some(0x1234_5678);
    cfg.virtio = fdt::virtio_slots(2).unwrap(); // slot 0: blk, slot 1: rng
    let dtb = fdt::build(&cfg).expect("fdt");
    let dtb_path = dir.join("zvisor.dtb");
    std::fs::write(&dtb_path, &dtb).unwrap();
    // The stub sits in the last page of our RAM (the DTB's 2 MiB block).
    let stub_addr = boot.fdt_addr + layout::FDT_MAX_SIZE - 4096;
    let stub = dir.join("stub.bin");
    std::fs::write(&stub, boot_stub(boot.fdt_addr, boot.kernel_addr)).unwrap();

    let loader = |f: &Path, addr: u64, cpu: bool| {
        format!(
            "loader,file={},addr={addr:#x},force-raw=on{}",
            f.display(),
            if cpu { ",cpu-num=0" } else { "" }
        )
    };
    let gic_arg = if gic == GicVersion::V3 { 3 } else { 2 };
    let args: Vec<String> = [
        "-accel",
        "tcg,thread=multi",
        "-M",
        &format!("virt,gic-version={gic_arg}"),
        "-cpu",
        "cortex-a57",
        "-m",
        &format!("{QEMU_RAM_MIB}M"),
        "-smp",
        &cpus.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-device",
        &loader(&kernel, boot.kernel_addr, false),
        "-device",
        &loader(&initrd, boot.initrd_addr, false),
        "-device",
        &loader(&dtb_path, boot.fdt_addr, false),
        "-device",
        &loader(&stub, stub_addr, true),
        "-drive",
        &format!(
            "if=none,id=d0,format=raw,readonly=on,file={}",
            disk.display()
        ),
        "-device",
        "virtio-blk-device,drive=d0,bus=virtio-mmio-bus.0",
        "-device",
        "virtio-rng-device,bus=virtio-mmio-bus.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    std::fs::write(dir.join("qemu.args"), args.join("\n")).unwrap();
    let (out, code, elapsed) = run_qemu(&args, &dir.join("console.log"));
    let ctx = format!(
        "{name} in {elapsed:?}; console in {}\n{out}",
        dir.join("console.log").display()
    );
    assert!(code.is_some(), "timed out: {ctx}");
    let t = Transcript::parse(&out);
    let get = |key: &str| -> Vec<String> {
        t.with(Kind::Result, &tag)
            .filter_map(|r| r.get(key).map(str::to_string))
            .collect()
    };
    let one = |key: &str| get(key).pop().unwrap_or_else(|| panic!("no {key}: {ctx}"));

    // zvisor-init saw our bootargs (its tag comes from them) and our RAM
    // and CPUs.
    let r = t.report(&tag).unwrap_or_else(|| panic!("no report: {ctx}"));
    assert_eq!(
        r.num("nproc"),
        Some(u64::from(cpus)),
        "CPUs via PSCI: {ctx}"
    );
    let mem = r.num("memtotal_kib").unwrap_or(0);
    assert!(
        mem <= fdt_ram_mib << 10 && mem > (fdt_ram_mib << 10) * 3 / 4,
        "MemTotal {mem} KiB must reflect our {fdt_ram_mib} MiB, not QEMU's {QEMU_RAM_MIB}: {ctx}"
    );
    assert!(
        one("cmdline").contains(&format!("fdtcheck={nonce}")),
        "{ctx}"
    );
    assert!(!one("cmdline").contains("console="), "{ctx}");
    assert_eq!(one("dt_model"), fdt::MODEL, "{ctx}");
    assert_eq!(one("dt_psci_method"), "hvc", "{ctx}");
    assert_eq!(
        one("cpus_online"),
        if cpus == 1 {
            "0".into()
        } else {
            format!("0-{}", cpus - 1)
        },
        "{ctx}"
    );
    assert!(
        one("console").starts_with("ttyAMA0"),
        "stdout-path console: {ctx}"
    );
    assert!(one("rtc").contains("9010000.pl031"), "{ctx}");

    // Virtio: exactly our two nodes; each device on the transport we
    // described, with our SPI (hwirq = 32 + SPI), edge-triggered, and
    // interrupts actually delivered.
    assert_eq!(one("dt_virtio"), "a000000,a000200", "{ctx}");
    assert_eq!(one("disk_sector1"), DISK_MARKER, "{ctx}");
    assert_eq!(one("disk_sectors"), "2048", "{ctx}");
    assert_eq!(one("rng_current"), "virtio_rng.0", "{ctx}");
    assert_eq!(one("rng_bytes"), "64", "{ctx}");
    assert_eq!(one("rng_differs"), "yes", "{ctx}");
    let devs = get("virtio_dev");
    let find_dev = |id: &str, transport: &str| {
        devs.iter()
            .find(|d| d.ends_with(&format!(":{id}:{transport}")))
            .and_then(|d| d.split(':').next())
            .unwrap_or_else(|| panic!("no virtio device {id} on {transport} in {devs:?}: {ctx}"))
            .to_string()
    };
    let blk = find_dev("0x0002", "a000000.virtio_mmio");
    let rng = find_dev("0x0004", "a000200.virtio_mmio");
    assert_eq!(devs.len(), 2, "{devs:?}");
    let irqs = get("virtio_irq");
    let controller = if gic == GicVersion::V3 {
        "GICv3"
    } else {
        "GIC-0"
    };
    for (dev, spi) in [(&blk, 16u32), (&rng, 17)] {
        let line = irqs
            .iter()
            .find(|l| l.starts_with(&format!("{dev}:")))
            .unwrap_or_else(|| panic!("no interrupt line for {dev} in {irqs:?}: {ctx}"));
        let f: Vec<&str> = line.split(':').collect();
        assert_eq!(f[1], controller, "{line}");
        assert_eq!(
            f[2],
            (32 + spi).to_string(),
            "{dev}: hwirq of SPI {spi}: {line}"
        );
        assert_eq!(f[3], "Edge", "{line}");
        assert!(
            f[4].parse::<u64>().unwrap_or(0) > 0,
            "{dev} got no interrupts: {line}"
        );
    }
    assert_eq!(one("fdt_check"), "ok", "{ctx}");
    assert!(t.find(Kind::Done, &tag, "status", "ok").is_some(), "{ctx}");
    assert_eq!(code, Some(0), "QEMU exit (power-off expected): {ctx}");
    eprintln!(
        "{name}: Linux {} booted from zvisor's FDT ({} bytes) in {:.1} s: {cpus} CPUs, MemTotal {mem} KiB of our {fdt_ram_mib} MiB (QEMU has {QEMU_RAM_MIB}), virtio-blk {blk} and virtio-rng {rng} on our nodes",
        k.kver,
        dtb.len(),
        elapsed.as_secs_f64()
    );
}

#[test]
fn linux_boots_from_our_fdt_with_gicv3_and_finds_virtio() {
    boot_with_our_fdt(GicVersion::V3, 2, 384);
}

#[test]
fn linux_boots_from_our_fdt_with_gicv2_and_finds_virtio() {
    boot_with_our_fdt(GicVersion::V2, 2, 320);
}

/// Our tree describes QEMU `virt`'s devices where QEMU's own tree does:
/// every node we emit is compared, reg and interrupts, against the tree
/// QEMU dumps (`-M virt,dumpdtb=`), read with zvisor's FDT reader.
#[test]
fn our_nodes_match_qemu_virt_dumped_tree() {
    use zvisor_arch::aarch64::fdt::reader;
    if !on_path(GuestArch::Aarch64.qemu_binary()) {
        skip("qemu-system-aarch64 is not installed");
        return;
    }
    let dir = workdir("aarch64-fdt-qemu-dump");
    for gic in [GicVersion::V3, GicVersion::V2] {
        let v = if gic == GicVersion::V3 { 3 } else { 2 };
        let dump = dir.join(format!("virt-gic{v}.dtb"));
        let out = Command::new("qemu-system-aarch64")
            .args([
                "-M",
                &format!("virt,gic-version={v},dumpdtb={}", dump.display()),
            ])
            .args([
                "-cpu",
                "cortex-a57",
                "-m",
                "512M",
                "-smp",
                "2",
                "-display",
                "none",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dumpdtb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let qemu = reader::parse(&std::fs::read(&dump).unwrap()).expect("QEMU's dtb parses");
        let mut cfg = FdtConfig::new(2, 512 << 20, "");
        cfg.gic = gic;
        cfg.virtio = fdt::virtio_slots(32).unwrap();
        let ours = reader::parse(&fdt::build(&cfg).unwrap()).unwrap();

        let mut compared = 0;
        for n in &ours.root.children {
            let path = format!("/{}", n.name);
            let q = qemu
                .node(&path)
                .unwrap_or_else(|| panic!("QEMU's tree has no {path}"));
            for prop in ["reg", "interrupts", "compatible", "clock-frequency"] {
                let (a, b) = (n.prop(prop), q.prop(prop));
                let (a, b) = match (path.as_str(), prop, a, b) {
                    (_, _, None, _) => continue,
                    // QEMU's GICv3 node spans the whole redistributor
                    // region; ours only the vCPUs' frames. Compare the
                    // distributor and the region's base.
                    ("/intc@8000000", "reg", Some(a), Some(b)) if gic == GicVersion::V3 => {
                        (&a[..24], &b[..24])
                    }
                    // The GIC maintenance PPI: QEMU lists it only for a
                    // guest with EL2; we always do, as Firecracker does.
                    ("/intc@8000000", "interrupts", ..) => continue,
                    // QEMU also lists PSCI 0.1 ("arm,psci"), checked below.
                    ("/psci", "compatible", ..) => continue,
                    (_, _, Some(a), Some(b)) => (a, b),
                    (_, _, Some(_), None) => panic!("QEMU's {path} has no {prop}"),
                };
                assert_eq!(a, b, "{path} {prop} differs from QEMU virt ({gic:?})");
                compared += 1;
            }
        }
        // 32 virtio slots + uart + rtc + gic + timer + memory + psci + clock.
        assert!(
            compared >= 32 * 3 + 10,
            "only {compared} properties compared"
        );
        let q_psci = qemu.node("/psci").unwrap();
        assert_eq!(q_psci.string("method"), Some("hvc"));
        let q_compat = q_psci.strings("compatible").unwrap();
        assert!(q_compat.contains(&"arm,psci-1.0") && q_compat.contains(&"arm,psci-0.2"));
        assert_eq!(
            qemu.node("/chosen").unwrap().string("stdout-path"),
            ours.node("/chosen").unwrap().string("stdout-path")
        );
        eprintln!("{gic:?}: {compared} properties equal to QEMU virt's own tree");
    }
}

//! Rung 2 soak (ignored by default; run by hand when hunting a flake): one
//! L1 boots a Debian L2 many times in a row through `zvisor run`, each boot
//! with a short timeout, and reports how many came up. Each L2 loads the
//! virtio modules and prints one line; half of the boots use the serial
//! console, half `--console virtio` with an rng.
//!
//! `ZVISOR_SOAK_BOOTS` (default 24) sets the number of boots,
//! `ZVISOR_SOAK_L1_APPEND` adds L1 kernel parameters. On a timeout
//! L1's init sends SIGUSR1 to zvisor first, so the log shows where L2's
//! vCPUs were.
//! Run: `cargo test -p zvisor-qemu-tests --test x86_64_l2_soak -- --ignored --nocapture`

use std::path::Path;
use std::time::Duration;

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::nested::l1_files;
use zvisor_qemu_tests::qemu::QemuSpec;
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

const BUSYBOX: &str = "/bin/busybox";
const L2_TIMEOUT: u64 = 40;

#[test]
#[ignore = "soak run for hunting rung-2 flakes; minutes long"]
fn x86_64_l2_boot_soak() {
    if !cfg!(target_arch = "x86_64") {
        skip("rung 2 on x86_64 needs an x86_64 host");
        return;
    }
    let arch = GuestArch::X86_64;
    let Some(k) = prerequisites(arch) else {
        return;
    };
    let boots: u32 = std::env::var("ZVISOR_SOAK_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let init_dir = build_static(arch, &["zvisor-init"], false).expect("static zvisor-init");
    let vmm_dir = build_static(arch, &["zvisor"], true).expect("static zvisor");
    let init = init_dir.join("zvisor-init");
    let zvisor = vmm_dir.join("zvisor");
    check_static(&init).expect("static");
    check_static(&zvisor).expect("static");
    let dir = workdir("x86_64-l2-soak");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let idx = ModuleIndex::scan(&k.modules).expect("modules");
    let want = |names: &[&str]| {
        idx.resolve(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("modules")
    };
    let l2_initrd = dir.join("l2.cpio");
    let mut texts = Vec::new();
    for (conf, script) in [("hvc.conf", "hvc.sh"), ("serial.conf", "soak-l2.sh")] {
        texts.push((
            format!("/etc/zvisor/{conf}"),
            format!("exec run 30 0 /bin/busybox sh /etc/zvisor/{script}\n").into_bytes(),
        ));
        texts.push((
            format!("/etc/zvisor/{script}"),
            std::fs::read(guest.join(script)).unwrap(),
        ));
    }
    write_image_file(
        &ImageSpec {
            init: Some(init.clone()),
            files: vec![FileSpec {
                src: BUSYBOX.into(),
                dst: "/bin/busybox".into(),
            }],
            texts,
            modules: want(&["virtio_mmio", "virtio_blk", "virtio-rng", "virtio_console"]),
        },
        &l2_initrd,
    )
    .expect("L2 initramfs");
    // L1's CPU flags (which SVM features QEMU's TCG offers kvm_amd) and
    // the kvm_amd parameters in effect.
    let mut conf = String::from(
        "tag L1\nexec flags 20 0 /bin/busybox sh -c \"/bin/busybox grep -m1 '^flags' /proc/cpuinfo; \
         /bin/busybox grep -H . /sys/module/kvm_amd/parameters/*\"\n",
    );
    for i in 0..boots {
        let (extra, cfile, console) = if i % 2 == 0 {
            ("--rng", "serial.conf", "ttyS0")
        } else {
            ("--console virtio --rng", "hvc.conf", "hvc0")
        };
        conf.push_str(&format!(
            "exec boot{i} {L2_TIMEOUT} 0 /bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-initrd \
             --memory 256M {extra} --cmdline \"console={console} reboot=k panic=-1 quiet \
             zvisor.tag=b{i} zvisor.report=0 zvisor.conf=/etc/zvisor/{cfile}\"\n"
        ));
    }
    let l1_initrd = dir.join("l1.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init),
            files: l1_files(
                &zvisor,
                k.vmlinux
                    .as_deref()
                    .expect("ELF vmlinux (rerun ci/assets.sh)"),
                &l2_initrd,
                Path::new(BUSYBOX),
            ),
            texts: vec![("/etc/zvisor/init.conf".to_string(), conf.into_bytes())],
            modules: want(&["kvm-amd"]),
        },
        &l1_initrd,
    )
    .expect("L1 initramfs");
    let log = dir.join("l1-console.log");
    let spec = QemuSpec {
        arch,
        nested: true,
        kernel: k.fast_kernel().to_path_buf(),
        initrd: l1_initrd,
        // `ZVISOR_SOAK_L1_APPEND`: more L1 kernel parameters, e.g. module
        // parameters for kvm_amd (zvisor-init passes them on, as modprobe).
        append: format!(
            "panic=-1 quiet {}",
            std::env::var("ZVISOR_SOAK_L1_APPEND").unwrap_or_default()
        ),
        cpus: 2,
        memory_mib: 2048,
        timeout: Duration::from_secs(120 + u64::from(boots) * (L2_TIMEOUT + 10)),
        silence_timeout: Some(Duration::from_secs(L2_TIMEOUT + 60)),
        log: Some(log.clone()),
        echo: std::env::var_os("ZVISOR_RUNG2_ECHO").is_some(),
        // `ZVISOR_QEMU_MONITOR=PATH`: QEMU's monitor on a Unix socket, to
        // look at L1 (`info registers`, `info cpus`) while it seems hung.
        extra: std::env::var("ZVISOR_QEMU_MONITOR")
            .map(|p| vec!["-monitor".into(), format!("unix:{p},server,nowait")])
            .unwrap_or_default(),
    };
    let run = spec.run().expect("qemu");
    let out = &run.output;
    let ok = (0..boots)
        .filter(|i| {
            out.lines()
                .any(|l| l.contains(&format!("tag=L1 exec=boot{i} final=ok")))
        })
        .count();
    for l in out
        .lines()
        .filter(|l| l.contains("final=") || l.contains("status=timeout"))
    {
        eprintln!("  {}", l.trim_end());
    }
    if run.hung() {
        eprintln!("soak: L1 hung; its CPUs: {}", run.hang_summary());
    }
    eprintln!(
        "soak: {ok}/{boots} L2 boots ok in {:.0} s; console {}",
        run.elapsed.as_secs_f64(),
        log.display()
    );
    assert_eq!(
        ok as u32,
        boots,
        "some L2 boots failed; see {}",
        log.display()
    );
}

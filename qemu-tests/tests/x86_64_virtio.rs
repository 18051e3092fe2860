//! Rung 2, virtio: Debian's own drivers (virtio_mmio, virtio_blk, virtio-rng,
//! virtio_console) in real L2 Linux guests against zvisor's devices, under
//! nested KVM inside one L1 that QEMU emulates with TCG.
//!
//! The host makes an ext4 image and a read-only image; QEMU hands them to L1
//! as virtio-pci disks (/dev/vda, /dev/vdb) and L1's init runs three L2 boots
//! (scripts in `qemu-tests/guest/`, run by L2's zvisor-init with busybox):
//! 1. `blk-write`: `--disk path=/dev/vda`: mount ext4, write files and their
//!    sha256 sums, unmount, sync, power off;
//! 2. `blk-verify`: `--disk path=/dev/vda,readonly=on --disk
//!    path=/dev/vdb,readonly=on --rng`: the sums verify, a write to vdb fails,
//!    `rng_current` names virtio and /dev/hwrng gives bytes; a dd read sample;
//! 3. `console`: `--console virtio --rng`: the script writes to /dev/hvc0
//!    only, the serial port is off, so its lines reaching L1 prove hvc0.
//!
//! After L1 powers off, the host runs `e2fsck -fn` on the ext4 image, reads
//! the files back with `debugfs` and compares them against the sums the guest
//! wrote, and checks the read-only image is byte-for-byte unchanged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};
use zvisor_qemu_tests::assets::on_path;
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::nested::l1_files;
use zvisor_qemu_tests::qemu::{run_retrying_hangs, QemuSpec};
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

const BUSYBOX: &str = "/bin/busybox";
const L2_TIMEOUT: u64 = 150;

fn sh(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn sha256(data: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("zvisor-sha-{}", std::process::id()));
    std::fs::write(&dir, data).unwrap();
    let o = sh(Command::new("sha256sum").arg(&dir));
    let _ = std::fs::remove_file(&dir);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn l2_exec(name: &str, extra: &str, conf: &str, cmdline_console: &str) -> String {
    format!(
        "exec {name} {L2_TIMEOUT} 0 /bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-initrd \
         --memory 256M {extra} --cmdline \"console={cmdline_console} reboot=k panic=-1 quiet \
         zvisor.tag={name} zvisor.report=0 zvisor.conf=/etc/zvisor/{conf}\"\n"
    )
}

#[test]
fn x86_64_virtio_devices_with_linux_drivers() {
    if !cfg!(target_arch = "x86_64") {
        skip("rung 2 virtio on x86_64 needs an x86_64 host");
        return;
    }
    let arch = GuestArch::X86_64;
    let Some(k) = prerequisites(arch) else {
        return;
    };
    for tool in ["mke2fs", "e2fsck", "debugfs", "sha256sum"] {
        if !on_path(tool) {
            skip(&format!("{tool} (e2fsprogs/coreutils) is not installed"));
            return;
        }
    }
    if !Path::new(BUSYBOX).exists() {
        skip("busybox-static is not installed (/bin/busybox)");
        return;
    }
    let init_dir = build_static(arch, &["zvisor-init"], false).expect("static zvisor-init");
    let vmm_dir = build_static(arch, &["zvisor"], true).expect("static zvisor");
    let init = init_dir.join("zvisor-init");
    let zvisor = vmm_dir.join("zvisor");
    check_static(&init).expect("zvisor-init must be static");
    check_static(&zvisor).expect("zvisor must be static");
    check_static(Path::new(BUSYBOX)).expect("busybox must be static");

    let dir = workdir("x86_64-virtio");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let idx = ModuleIndex::scan(&k.modules).expect("modules");
    let want = |names: &[&str]| {
        idx.resolve(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("modules")
    };

    // The read-only image's content (the image is made per L1 boot below).
    let ro_bytes: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();

    // L2: busybox, the virtio drivers, three plans.
    let l2_initrd = dir.join("l2.cpio");
    let mut texts = Vec::new();
    for (conf, script) in [
        ("write.conf", "blk-write.sh"),
        ("verify.conf", "blk-verify.sh"),
        ("hvc.conf", "hvc.sh"),
        ("net.conf", "net-l2.sh"),
        ("vsock.conf", "vsock-l2.sh"),
    ] {
        texts.push((
            format!("/etc/zvisor/{conf}"),
            format!("exec run 90 0 /bin/busybox sh /etc/zvisor/{script}\n").into_bytes(),
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
            modules: want(&[
                "virtio_mmio",
                "virtio_blk",
                "virtio-rng",
                "virtio_console",
                "virtio_net",
                "vmw_vsock_virtio_transport",
            ]),
        },
        &l2_initrd,
    )
    .expect("L2 initramfs");

    // L1: zvisor, the L2 kernel and initrd, kvm-amd and virtio-pci disks.
    let mut conf = String::from("tag L1\nreport\n");
    conf.push_str(&l2_exec(
        "blk-write",
        "--disk path=/dev/vda",
        "write.conf",
        "ttyS0",
    ));
    conf.push_str(&l2_exec(
        "blk-verify",
        "--disk path=/dev/vda,readonly=on --disk path=/dev/vdb,readonly=on --rng",
        "verify.conf",
        "ttyS0",
    ));
    conf.push_str(&l2_exec(
        "console",
        "--console virtio --rng",
        "hvc.conf",
        "hvc0",
    ));
    conf.push_str(&format!(
        "exec net {} 0 /bin/busybox sh /etc/zvisor/net-l1.sh\n",
        L2_TIMEOUT
    ));
    conf.push_str(&format!(
        "exec vsock {} 0 /bin/busybox sh /etc/zvisor/vsock-l1.sh\n",
        L2_TIMEOUT
    ));
    let mut l1_texts = vec![("/etc/zvisor/init.conf".to_string(), conf.into_bytes())];
    for script in ["net-l1.sh", "net-l1-ns.sh", "vsock-l1.sh"] {
        l1_texts.push((
            format!("/etc/zvisor/{script}"),
            std::fs::read(guest.join(script)).unwrap(),
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
            texts: l1_texts,
            modules: want(&["kvm-amd", "virtio_pci", "virtio_blk", "tun"]),
        },
        &l1_initrd,
    )
    .expect("L1 initramfs");

    // One L1 boot from fresh images; a hung L1 (QEMU 7.2's TCG SVM, see
    // docs/testing.md) is booted once more.
    let ext4 = dir.join("ext4.img");
    let ro = dir.join("ro.img");
    let (run, times) = run_retrying_hangs("rung 2 virtio", 2, |n| {
        // Host images: ext4 (64 MiB) and a read-only image with known content.
        let _ = std::fs::remove_file(&ext4);
        std::fs::File::create(&ext4)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        sh(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "zvisor"])
            .arg(&ext4));
        std::fs::write(&ro, &ro_bytes).unwrap();
        let log = dir.join(format!("l1-console-{n}.log"));
        let spec = QemuSpec {
            arch,
            nested: true,
            kernel: k.fast_kernel().to_path_buf(),
            initrd: l1_initrd.clone(),
            append: "panic=-1 quiet".into(),
            cpus: 2,
            memory_mib: 2048,
            timeout: Duration::from_secs(90 + 5 * (L2_TIMEOUT + 10)),
            silence_timeout: Some(Duration::from_secs(120)),
            log: Some(log.clone()),
            echo: std::env::var_os("ZVISOR_RUNG2_ECHO").is_some(),
            extra: vec![
                "-drive".into(),
                format!("file={},format=raw,if=virtio,cache=unsafe", ext4.display()),
                "-drive".into(),
                format!("file={},format=raw,if=virtio,readonly=on", ro.display()),
            ],
        };
        let run = spec.run().expect("qemu");
        eprintln!(
            "rung 2 virtio: L1 boot {n} ran {:.1} s (QEMU exit {:?}); console: {}",
            run.elapsed.as_secs_f64(),
            run.exit_code,
            log.display()
        );
        run
    });
    let log = dir.join(format!("l1-console-{}.log", times.len()));
    let out = &run.output;
    for l in out
        .lines()
        .filter(|l| l.contains("L2-") || l.contains("exec=") || l.contains("check=report"))
    {
        eprintln!("  {}", l.trim_end());
    }
    let has = |s: &str| out.lines().any(|l| l.contains(s));
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    need(run.exit_code == Some(0), "QEMU did not exit 0");
    need(
        has("ZVISOR-RESULT tag=L1 check=report") && has("kvm=yes"),
        "L1 has no /dev/kvm",
    );
    for name in ["blk-write", "blk-verify", "console", "net", "vsock"] {
        need(
            has(&format!("ZVISOR-RESULT tag=L1 exec={name} final=ok")),
            &format!("{name}: zvisor run failed"),
        );
    }
    need(
        has("[blk-write] [run] L2-BLK-WRITE-OK"),
        "blk-write: no L2-BLK-WRITE-OK",
    );
    need(
        has("[blk-verify] [run] L2-BLK-VERIFY-OK"),
        "blk-verify: checksums",
    );
    need(
        has("[blk-verify] [run] file4: OK"),
        "blk-verify: file4 not verified",
    );
    need(
        has("[blk-verify] [run] L2-VDB-RO=1"),
        "vdb is not read-only in L2",
    );
    need(
        has("[blk-verify] [run] L2-RO-WRITE-REFUSED"),
        "write to read-only disk not refused",
    );
    need(
        has("[blk-verify] [run] L2-RNG-CURRENT=virtio_rng"),
        "rng_current does not name virtio",
    );
    need(
        has("[blk-verify] [run] L2-RNG-BYTES=512"),
        "no 512 bytes from /dev/hwrng",
    );
    need(
        has("[blk-verify] [run] L2-RNG-DIFFERS"),
        "hwrng returned the same bytes twice",
    );
    need(has("[console] L2-HVC0-OK"), "console: nothing on hvc0");
    need(
        has("[console] L2-HVC0-RNG=virtio_rng"),
        "console: rng line missing on hvc0",
    );
    need(
        !has("[console] ZVISOR-INIT-READY"),
        "console: ttyS0 output leaked although --console virtio",
    );
    // virtio-net: TCP both ways, the same bytes on both ends.
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_string()))
    };
    let l1_sent = value("L1-TO-L2 ");
    let l2_got = value("L2-GOT ");
    let l2_sent = value("L2-SENT ");
    let l1_got = value("L1-FROM-L2 ");
    need(
        l1_sent.as_deref().is_some_and(|v| v.ends_with(" 300000")) && l1_sent == l2_got,
        &format!("net L1->L2: sent {l1_sent:?}, L2 got {l2_got:?}"),
    );
    need(
        l2_sent.as_deref().is_some_and(|v| v.ends_with(" 200000")) && l2_sent == l1_got,
        &format!("net L2->L1: sent {l2_sent:?}, L1 got {l1_got:?}"),
    );
    need(
        has("L2-MAC=52:54:00:00:00:02"),
        "net: L2's eth0 MAC is not --net mac=",
    );
    need(
        has("[net] L1-ZVISOR-EXIT=0"),
        "net: zvisor run in L1 did not exit 0",
    );
    // virtio-vsock: four concurrent echo connections each way.
    need(
        has("[vsock] L1-H2G VSOCK-ECHO-OK conns=4 bytes=100000"),
        "vsock host->guest echo",
    );
    need(
        has("L2-H2G VSOCK-SERVED conns=4 bytes=400000"),
        "vsock: L2 did not serve the host's connections",
    );
    need(
        has("L2-G2H VSOCK-ECHO-OK conns=4 bytes=100000"),
        "vsock guest->host echo",
    );
    need(
        has("[vsock] L1-G2H VSOCK-SERVED conns=4 bytes=400000"),
        "vsock: L1 did not serve the guest's connections",
    );
    need(
        has("[vsock] L1-VSOCK-ZVISOR-EXIT=0"),
        "vsock: zvisor run did not exit 0",
    );
    need(!has("L1-VSOCK-SOCKET-LEFT"), "vsock: socket left behind");
    for l in out.lines().filter(|l| l.contains("L2-DD-")) {
        eprintln!("  dd in L2: {}", l.trim_end());
    }

    // Host side: the filesystem is clean and holds what the guest wrote.
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&ext4)
        .output()
        .unwrap();
    need(
        fsck.status.success(),
        &format!(
            "e2fsck -fn failed: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        ),
    );
    let cat = |f: &str| {
        Command::new("debugfs")
            .args(["-R", &format!("cat /{f}")])
            .arg(&ext4)
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    let sums = String::from_utf8_lossy(&cat("SUMS")).into_owned();
    let entries: Vec<(&str, &str)> = sums.lines().filter_map(|l| l.split_once("  ")).collect();
    need(entries.len() == 5, &format!("SUMS on the image: {sums:?}"));
    for (sum, file) in &entries {
        let data = cat(file);
        need(
            sha256(&data) == *sum,
            &format!("{file}: host sha256 differs from the guest's"),
        );
        if let Some(n) = file.strip_prefix("file") {
            let i: usize = n.parse().unwrap_or(0);
            need(
                data.len() == i * 32 * 4096,
                &format!("{file}: {} bytes", data.len()),
            );
        }
    }
    need(
        std::fs::read(&ro).unwrap() == ro_bytes,
        "the read-only image changed",
    );
    assert!(
        problems.is_empty(),
        "rung 2 virtio failed:\n  - {}\nconsole: {}",
        problems.join("\n  - "),
        log.display()
    );
}

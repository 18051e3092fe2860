//! Rung 2, several devices of a kind: a virtio-blk disk as L2's root device,
//! three disks in one L2, and two NICs in one L2, with Debian's own drivers
//! under nested KVM inside one L1 that QEMU emulates with TCG.
//!
//! The host builds three images and QEMU hands them to L1 as virtio-pci disks
//! with the serials `l1-root`, `l1-data`, `l1-ro`:
//! - `root.img`: ext4 made with `mke2fs -d` from a tiny root filesystem:
//!   `zvisor-init` as `/sbin/init`, busybox, the L2 script and a random token;
//! - `data.img`: raw, a known header and pattern (read-write);
//! - `ro.img`: raw, a known header and pattern; writable for L1, so only
//!   zvisor's `readonly=on` keeps L2 from changing it.
//!
//! L1's init runs two L2 boots (scripts in `qemu-tests/guest/`):
//! 1. `rootdisk`: `zvisor run --disk path=<l1-root>,serial=zv-root --disk
//!    path=<l1-data>,serial=zv-data --disk path=<l1-ro>,readonly=on,serial=zv-ro`
//!    with `root=/dev/vda rootfstype=ext4 rw`. Debian builds `virtio_mmio` and
//!    `virtio_blk` as modules, so a busybox `/init` loads them, mounts root=
//!    and `switch_root`s to the disk's `/sbin/init`. In L2 the script finds
//!    each disk by its GET_ID serial, shows that `/` is the zv-root disk
//!    (`/proc/mounts`, device numbers), reads the host's token, writes a
//!    proof file into the root fs, writes 1 MiB to the data disk, reads the
//!    read-only disk, fails to write it, and remounts `/` read-only.
//! 2. `nics`: `zvisor run --net tap=zt0,mac=A --net tap=zt1,mac=B`; zt0 stays
//!    in L1's network namespace A, zt1 moves to namespace B, so each side of
//!    L1 reaches L2 through one NIC only; TCP both ways through each NIC.
//!
//! After L1 powers off, the host checks the root image with `e2fsck -fn`,
//! reads the proof file with `debugfs`, compares the data disk's written
//! MiB with the guest's sha256 (and the rest with what it wrote before), and
//! checks the read-only image is unchanged.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};
use zvisor_qemu_tests::assets::on_path;
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::qemu::{run_retrying_hangs, QemuRun, QemuSpec};
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

const BUSYBOX: &str = "/bin/busybox";
/// Timeout of each L2 run inside L1 (one retry each).
const L2_TIMEOUT: u64 = 150;
const ROOT_SIZE: u64 = 64 << 20;
const DATA_SIZE: usize = 8 << 20;
const RO_SIZE: usize = 4 << 20;
const DATA_HEAD: &[u8; 16] = b"ZVISOR-DATA-DISK";
const RO_HEAD: &[u8; 16] = b"ZVISOR-RO-DISK-C";
/// Where the guest writes on the data disk: 1 MiB at 1 MiB.
const DATA_WRITE: std::ops::Range<usize> = (1 << 20)..(2 << 20);
const MAC_A: &str = "52:54:00:00:0a:01";
const MAC_B: &str = "52:54:00:00:0b:01";

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
    let f = std::env::temp_dir().join(format!("zvisor-sha-rootdisk-{}", std::process::id()));
    std::fs::write(&f, data).unwrap();
    let o = sh(Command::new("sha256sum").arg(&f));
    let _ = std::fs::remove_file(&f);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A deterministic byte pattern, different per `seed`.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Copies a guest script next to the images with mode 0755 (cpio keeps it).
fn executable_copy(src: &Path, dst: &Path) -> PathBuf {
    std::fs::copy(src, dst).unwrap();
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst.to_path_buf()
}

/// The three disk images L1 gets, with what the host put in them.
struct Disks {
    root: PathBuf,
    data: PathBuf,
    ro: PathBuf,
    token: String,
    data_bytes: Vec<u8>,
    ro_bytes: Vec<u8>,
}

/// Builds the images afresh (each L1 boot starts from the same state).
fn make_disks(dir: &Path, init: &Path, guest: &Path) -> Disks {
    let tree = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&tree);
    for d in [
        "sbin",
        "bin",
        "etc/zvisor",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
    ] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::copy(init, tree.join("sbin/init")).unwrap();
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).unwrap();
    std::fs::write(
        tree.join("etc/zvisor/root.conf"),
        "exec run 90 0 /bin/busybox sh /etc/zvisor/rootdisk-l2.sh\n",
    )
    .unwrap();
    std::fs::copy(
        guest.join("rootdisk-l2.sh"),
        tree.join("etc/zvisor/rootdisk-l2.sh"),
    )
    .unwrap();
    let token = format!("host-token-{}", random_hex(16));
    std::fs::write(tree.join("etc/zvisor/host-token"), format!("{token}\n")).unwrap();
    let root = dir.join("root.img");
    let _ = std::fs::remove_file(&root);
    std::fs::File::create(&root)
        .unwrap()
        .set_len(ROOT_SIZE)
        .unwrap();
    sh(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "zvroot", "-d"])
        .arg(&tree)
        .arg(&root));

    let mut data_bytes = pattern(DATA_SIZE, 7);
    data_bytes[..16].copy_from_slice(DATA_HEAD);
    let data = dir.join("data.img");
    std::fs::write(&data, &data_bytes).unwrap();
    let mut ro_bytes = pattern(RO_SIZE, 1234);
    ro_bytes[..16].copy_from_slice(RO_HEAD);
    let ro = dir.join("ro.img");
    std::fs::write(&ro, &ro_bytes).unwrap();
    Disks {
        root,
        data,
        ro,
        token,
        data_bytes,
        ro_bytes,
    }
}

fn drive(img: &Path, id: &str, extra: &str) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=none,id={id}{extra}", img.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive={id},serial=l1-{id}"),
    ]
}

/// The text after the last occurrence of `key` in the transcript (a retried
/// L2 prints its lines again; the last attempt counts).
fn last_value(out: &str, key: &str) -> Option<String> {
    out.lines()
        .rev()
        .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_string()))
}

/// `k=v` from a line of space-separated `k=v` words.
fn field(line: &str, k: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
}

#[test]
fn x86_64_root_disk_and_several_disks_and_nics() {
    if !cfg!(target_arch = "x86_64") {
        skip("rung 2 on x86_64 needs an x86_64 host");
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

    let dir = workdir("x86_64-rootdisk-multi");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let idx = ModuleIndex::scan(&k.modules).expect("modules");
    let want = |names: &[&str]| {
        idx.resolve(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("modules")
    };

    // L2 for the root disk: a busybox /init that loads the modules and
    // switches to root=; no zvisor-init in this image. It exists because
    // Debian builds the virtio transport and block driver as modules.
    let config = std::fs::read_to_string(k.dir.join(format!("root/boot/config-{}", k.kver)))
        .unwrap_or_default();
    let opts: Vec<String> = ["CONFIG_VIRTIO_MMIO", "CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS"]
        .iter()
        .map(|o| {
            config
                .lines()
                .find(|l| l.starts_with(&format!("{o}=")))
                .unwrap_or(o)
                .to_string()
        })
        .collect();
    eprintln!(
        "L2 kernel {}: {}; root=/dev/vda needs an initramfs that loads virtio_mmio and virtio_blk",
        k.kver,
        opts.join(" ")
    );
    let root_initrd = dir.join("l2-root.cpio");
    write_image_file(
        &ImageSpec {
            init: None,
            files: vec![
                FileSpec {
                    src: executable_copy(
                        &guest.join("rootdisk-initramfs.sh"),
                        &dir.join("rootdisk-initramfs.sh"),
                    ),
                    dst: "/init".into(),
                },
                FileSpec {
                    src: BUSYBOX.into(),
                    dst: "/bin/busybox".into(),
                },
            ],
            texts: vec![],
            modules: want(&["virtio_mmio", "virtio_blk"]),
        },
        &root_initrd,
    )
    .expect("L2 root-disk initramfs");

    // L2 for the NICs: zvisor-init, busybox, virtio_net.
    let net_initrd = dir.join("l2-net.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init.clone()),
            files: vec![FileSpec {
                src: BUSYBOX.into(),
                dst: "/bin/busybox".into(),
            }],
            texts: vec![
                (
                    "/etc/zvisor/nics.conf".into(),
                    b"exec run 120 0 /bin/busybox sh /etc/zvisor/nics-l2.sh\n".to_vec(),
                ),
                (
                    "/etc/zvisor/nics-l2.sh".into(),
                    std::fs::read(guest.join("nics-l2.sh")).unwrap(),
                ),
            ],
            modules: want(&["virtio_mmio", "virtio_net"]),
        },
        &net_initrd,
    )
    .expect("L2 NIC initramfs");

    // L1: zvisor, the L2 kernel and both initrds, its scripts.
    let conf = format!(
        "tag L1\nreport\n\
         exec rootdisk {L2_TIMEOUT} 1 /bin/busybox sh /etc/zvisor/rootdisk-l1.sh\n\
         exec nics {L2_TIMEOUT} 1 /bin/busybox sh /etc/zvisor/nics-l1.sh\n"
    );
    let mut l1_texts = vec![("/etc/zvisor/init.conf".to_string(), conf.into_bytes())];
    for script in ["rootdisk-l1.sh", "nics-l1.sh", "nics-l1-ns.sh"] {
        l1_texts.push((
            format!("/etc/zvisor/{script}"),
            std::fs::read(guest.join(script)).unwrap(),
        ));
    }
    let l1_initrd = dir.join("l1.cpio");
    let file = |src: PathBuf, dst: &str| FileSpec {
        src,
        dst: dst.into(),
    };
    write_image_file(
        &ImageSpec {
            init: Some(init.clone()),
            files: vec![
                file(zvisor, "/bin/zvisor"),
                file(
                    k.vmlinux.clone().expect("ELF vmlinux (rerun ci/assets.sh)"),
                    "/boot/l2-kernel",
                ),
                file(root_initrd, "/boot/l2-root-initrd"),
                file(net_initrd, "/boot/l2-net-initrd"),
                file(BUSYBOX.into(), "/bin/busybox"),
            ],
            texts: l1_texts,
            modules: want(&["kvm-amd", "virtio_pci", "virtio_blk", "tun"]),
        },
        &l1_initrd,
    )
    .expect("L1 initramfs");

    // One L1 boot; booted once more (from fresh images) only if L1 hangs
    // (QEMU 7.2's TCG SVM, see docs/testing.md).
    let mut last_disks = None;
    let (run, boots) = run_retrying_hangs("rung 2 root disk + several disks/NICs", 2, |n| {
        let disks = make_disks(&dir, &init, &guest);
        let log = dir.join(format!("l1-console-{n}.log"));
        let mut extra = drive(&disks.root, "root", ",cache=unsafe");
        extra.extend(drive(&disks.data, "data", ",cache=unsafe"));
        // Writable for L1: only zvisor's readonly=on protects it from L2.
        extra.extend(drive(&disks.ro, "ro", ",cache=unsafe"));
        let spec = QemuSpec {
            arch,
            nested: true,
            kernel: k.fast_kernel().to_path_buf(),
            initrd: l1_initrd.clone(),
            append: "panic=-1 quiet".into(),
            cpus: 2,
            memory_mib: 2048,
            timeout: Duration::from_secs(90 + 4 * (L2_TIMEOUT + 10)),
            silence_timeout: Some(Duration::from_secs(L2_TIMEOUT + 60)),
            log: Some(log.clone()),
            echo: std::env::var_os("ZVISOR_RUNG2_ECHO").is_some(),
            extra,
        };
        let run: QemuRun = spec.run().expect("qemu");
        eprintln!(
            "rung 2 root disk + several disks/NICs: L1 boot {n} ran {:.1} s (QEMU exit {:?}, \
             timed out {}, stalled {}); console: {}",
            run.elapsed.as_secs_f64(),
            run.exit_code,
            run.timed_out,
            run.stalled,
            log.display()
        );
        last_disks = Some(disks);
        run
    });
    let disks = last_disks.expect("at least one L1 boot");
    let log = dir.join(format!("l1-console-{}.log", boots.len()));
    let out = &run.output;
    for l in out.lines().filter(|l| {
        l.contains("L2-") || l.contains("L1-") || l.contains("exec=") || l.contains("check=report")
    }) {
        eprintln!("  {}", l.trim_end());
    }

    let has = |s: &str| out.lines().any(|l| l.contains(s));
    let val = |k: &str| last_value(out, k);
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    need(run.exit_code == Some(0), "QEMU did not exit 0".into());
    need(
        has("ZVISOR-RESULT tag=L1 check=report") && has("kvm=yes"),
        "L1 has no /dev/kvm".into(),
    );
    for name in ["rootdisk", "nics"] {
        need(
            has(&format!("ZVISOR-RESULT tag=L1 exec={name} final=ok")),
            format!("{name}: the L1 script / zvisor run failed"),
        );
    }

    // 1. The root device.
    need(
        has("L2-INITRAMFS-SWITCH root=/dev/vda fstype=ext4 mode=rw"),
        "rootdisk: the initramfs did not switch to /dev/vda".into(),
    );
    need(
        has("ZVISOR-RESULT tag=rootdisk exec=run final=ok"),
        "rootdisk: L2's script (run by the disk's /sbin/init) failed".into(),
    );
    let mount = val("L2-ROOT-MOUNT ").unwrap_or_default();
    need(
        field(&mount, "dev").as_deref() == Some("/dev/vda")
            && field(&mount, "type").as_deref() == Some("ext4")
            && field(&mount, "opts").is_some_and(|o| o.starts_with("rw")),
        format!("rootdisk: / is not /dev/vda ext4 rw: {mount:?}"),
    );
    let devno = val("L2-ROOT-DEVNO=").unwrap_or_default();
    let mut words = devno.split_whitespace();
    let root_devno = words.next().unwrap_or("none").to_string();
    need(
        field(&devno, "ZV-ROOT-DEVNO").as_deref() == Some(root_devno.as_str())
            && field(&devno, "ZV-ROOT-DEV").as_deref() == Some("vda"),
        format!("rootdisk: / is not the disk with serial zv-root: {devno:?}"),
    );
    need(
        val("L2-CMDLINE-ROOT=").as_deref() == Some("root=/dev/vda"),
        "rootdisk: root= not on L2's command line".into(),
    );
    need(
        !has("L2-INITRAMFS-LEFT-BEHIND"),
        "rootdisk: / still holds the initramfs".into(),
    );
    need(
        val("L2-HOST-TOKEN=").as_deref() == Some(disks.token.as_str()),
        format!(
            "rootdisk: L2 read token {:?}, the host wrote {:?}",
            val("L2-HOST-TOKEN="),
            disks.token
        ),
    );
    need(
        has("L2-ROOT-REMOUNTED-RO"),
        "rootdisk: / was not remounted read-only at the end".into(),
    );

    // 2. Three disks, told apart by serial.
    let disk_lines: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once("L2-DISK ").map(|(_, v)| v.trim().to_string()))
        .collect();
    let disk = |serial: &str| {
        disk_lines
            .iter()
            .rev()
            .find(|l| field(l, "serial").as_deref() == Some(serial))
            .cloned()
    };
    for (serial, name, ro, bytes) in [
        ("zv-root", Some("vda"), "0", ROOT_SIZE),
        ("zv-data", None, "0", DATA_SIZE as u64),
        ("zv-ro", None, "1", RO_SIZE as u64),
    ] {
        let l = disk(serial).unwrap_or_default();
        need(
            field(&l, "ro").as_deref() == Some(ro)
                && field(&l, "sectors") == Some((bytes / 512).to_string())
                && name.is_none_or(|n| l.starts_with(&format!("{n} "))),
            format!(
                "disk {serial}: L2 saw {l:?}; want ro={ro}, {} sectors",
                bytes / 512
            ),
        );
    }
    need(
        val("L2-DATA-HEAD=").as_deref() == Some("ZVISOR-DATA-DISK"),
        format!("data disk header in L2: {:?}", val("L2-DATA-HEAD=")),
    );
    need(
        val("L2-RO-HEAD=").as_deref() == Some("ZVISOR-RO-DISK-C"),
        format!("read-only disk header in L2: {:?}", val("L2-RO-HEAD=")),
    );
    need(
        val("L2-RO-SHA ") == Some(sha256(&disks.ro_bytes)),
        "read-only disk: L2's sha256 differs from the host's".into(),
    );
    need(
        val("L2-RO-FLAG=").as_deref() == Some("1"),
        "zv-ro is not read-only in L2".into(),
    );
    need(
        has("L2-RO-WRITE-REFUSED") && !has("L2-RO-WRITE-SUCCEEDED"),
        "a write to the read-only disk was not refused".into(),
    );

    // 3. Two NICs, each its own path.
    need(
        has(&format!("mac={MAC_A}")),
        format!("L2 has no NIC with MAC {MAC_A}"),
    );
    need(
        has(&format!("mac={MAC_B}")),
        format!("L2 has no NIC with MAC {MAC_B}"),
    );
    for (l1, l2, size) in [
        ("L1-TO-A ", "L2-GOT-A ", 200000),
        ("L1-TO-B ", "L2-GOT-B ", 210000),
        ("L2-SENT-A ", "L1-FROM-A ", 220000),
        ("L2-SENT-B ", "L1-FROM-B ", 230000),
    ] {
        let (s, r) = (val(l1), val(l2));
        need(
            s.as_deref()
                .is_some_and(|v| v.ends_with(&format!(" {size}")))
                && s == r,
            format!("net: {}sent {s:?}, {}got {r:?}", l1.trim(), l2.trim()),
        );
    }
    // Each NIC moved its own payload (plus headers), not the other one's.
    for (key, rx, tx) in [
        ("L2-NIC-A ", 200000u64, 220000u64),
        ("L2-NIC-B ", 210000, 230000),
    ] {
        let l = val(key).unwrap_or_default();
        let n = |k: &str| field(&l, k).and_then(|v| v.parse::<u64>().ok());
        need(
            n("rx").is_some_and(|v| v >= rx && v < rx * 3 / 2)
                && n("tx").is_some_and(|v| v >= tx && v < tx * 3 / 2),
            format!("{}counters {l:?}: want rx ~{rx}, tx ~{tx}", key.trim()),
        );
    }
    need(
        !has("L1-ZT1-STILL-IN-A"),
        "zt1 did not move to namespace B".into(),
    );
    need(
        val("L1-NICS-ZVISOR-EXIT=").as_deref() == Some("0"),
        "nics: zvisor run in L1 did not exit 0".into(),
    );

    // Host side: the images after L1 powered off.
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&disks.root)
        .output()
        .unwrap();
    need(
        fsck.status.success(),
        format!(
            "e2fsck -fn root.img failed: {}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        ),
    );
    let proof = Command::new("debugfs")
        .args(["-R", "cat /l2-proof"])
        .arg(&disks.root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let said = val("L2-ROOT-PROOF=");
    need(
        said.as_deref()
            .is_some_and(|p| p.starts_with("written-by-L2-on-its-root-disk-") && p == proof),
        format!("root fs /l2-proof: the host read {proof:?}, L2 wrote {said:?}"),
    );
    let data_now = std::fs::read(&disks.data).unwrap();
    let wrote = val("L2-DATA-WROTE ");
    need(
        data_now.len() == DATA_SIZE
            && wrote.is_some()
            && wrote == val("L2-DATA-READBACK ")
            && wrote == Some(sha256(&data_now[DATA_WRITE])),
        format!(
            "data disk: L2 wrote {wrote:?}, read back {:?}, the host finds {}",
            val("L2-DATA-READBACK "),
            sha256(data_now.get(DATA_WRITE).unwrap_or_default())
        ),
    );
    need(
        data_now.get(..DATA_WRITE.start) == disks.data_bytes.get(..DATA_WRITE.start)
            && data_now.get(DATA_WRITE.end..) == disks.data_bytes.get(DATA_WRITE.end..),
        "data disk: bytes outside the written MiB changed".into(),
    );
    need(
        std::fs::read(&disks.ro).unwrap() == disks.ro_bytes,
        "the read-only image changed".into(),
    );
    if !problems.is_empty() {
        let tail: Vec<&str> = out.lines().rev().take(80).collect();
        eprintln!("---- last lines of L1's console ({}):", log.display());
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
    assert!(
        problems.is_empty(),
        "rung 2 root disk / several disks and NICs failed:\n  - {}\nconsole: {}\nL1 boots: {boots:?}",
        problems.join("\n  - "),
        log.display()
    );
}

//! Rung 2, virtio-console channel: `zvisor run --console virtio --channel
//! socket=PATH --channel file=PATH` in L1 (nested KVM inside QEMU TCG), a
//! real Debian L2 with its own virtio_console driver on the other end.
//!
//! L2 (`guest/chan-l2.sh`) finds its console devices in /sys, puts hvc1 in
//! raw mode, says hello, echoes 64 KiB back, answers a ping from a second
//! client, and writes a line to hvc2. L1 (`guest/chan-l1.sh`) runs zvisor
//! and `zvisor-chan-client` (the host end: hello, echo compare, reconnect),
//! then prints the sha256 of what it sent and got back, and the log file.
//! A named channel (`name=org.zvisor.agent.0`, a port of the multiport
//! device) is found by L2 in /sys/class/virtio-ports and answers one
//! request from a second client.

use std::path::Path;
use std::time::Duration;

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, ModuleIndex};
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::nested::l1_files;
use zvisor_qemu_tests::qemu::{run_retrying_hangs, QemuSpec};
use zvisor_qemu_tests::{prerequisites, skip, workdir, GuestArch};

const BUSYBOX: &str = "/bin/busybox";
const L1_EXEC_TIMEOUT: u64 = 400;

#[test]
fn x86_64_channel_with_linux_virtio_console() {
    if !cfg!(target_arch = "x86_64") {
        skip("rung 2 channel on x86_64 needs an x86_64 host");
        return;
    }
    let arch = GuestArch::X86_64;
    let Some(k) = prerequisites(arch) else {
        return;
    };
    if !Path::new(BUSYBOX).exists() {
        skip("busybox-static is not installed (/bin/busybox)");
        return;
    }
    let init_dir = build_static(arch, &["zvisor-init", "zvisor-qemu-tests"], false)
        .expect("static zvisor-init and zvisor-chan-client");
    let vmm_dir = build_static(arch, &["zvisor"], true).expect("static zvisor");
    let init = init_dir.join("zvisor-init");
    let client = init_dir.join("zvisor-chan-client");
    let zvisor = vmm_dir.join("zvisor");
    for b in [&init, &client, &zvisor] {
        check_static(b).expect("static binary");
    }
    check_static(Path::new(BUSYBOX)).expect("busybox must be static");

    let dir = workdir("x86_64-channel");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    let idx = ModuleIndex::scan(&k.modules).expect("modules");
    let want = |names: &[&str]| {
        idx.resolve(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("modules")
    };

    let l2_initrd = dir.join("l2.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init.clone()),
            files: vec![FileSpec {
                src: BUSYBOX.into(),
                dst: "/bin/busybox".into(),
            }],
            texts: vec![
                (
                    "/etc/zvisor/chan.conf".into(),
                    b"exec run 300 0 /bin/busybox sh /etc/zvisor/chan-l2.sh\n".to_vec(),
                ),
                (
                    "/etc/zvisor/chan-l2.sh".into(),
                    std::fs::read(guest.join("chan-l2.sh")).unwrap(),
                ),
            ],
            modules: want(&["virtio_mmio", "virtio_console"]),
        },
        &l2_initrd,
    )
    .expect("L2 initramfs");

    let conf = format!(
        "tag L1\nreport\nexec chan {L1_EXEC_TIMEOUT} 0 /bin/busybox sh /etc/zvisor/chan-l1.sh\n"
    );
    let l1_initrd = dir.join("l1.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init),
            files: {
                let mut f = l1_files(
                    &zvisor,
                    k.vmlinux
                        .as_deref()
                        .expect("ELF vmlinux (rerun ci/assets.sh)"),
                    &l2_initrd,
                    Path::new(BUSYBOX),
                );
                f.push(FileSpec {
                    src: client,
                    dst: "/bin/zvisor-chan-client".into(),
                });
                f
            },
            texts: vec![
                ("/etc/zvisor/init.conf".into(), conf.into_bytes()),
                (
                    "/etc/zvisor/chan-l1.sh".into(),
                    std::fs::read(guest.join("chan-l1.sh")).unwrap(),
                ),
            ],
            modules: want(&["kvm-amd"]),
        },
        &l1_initrd,
    )
    .expect("L1 initramfs");

    // A hung L1 (QEMU 7.2's TCG SVM, see docs/testing.md) is booted once more.
    let (run, times) = run_retrying_hangs("rung 2 channel", 2, |n| {
        let log = dir.join(format!("l1-console-{n}.log"));
        let spec = QemuSpec {
            arch,
            nested: true,
            kernel: k.fast_kernel().to_path_buf(),
            initrd: l1_initrd.clone(),
            append: "panic=-1 quiet".into(),
            cpus: 2,
            memory_mib: 1024,
            timeout: Duration::from_secs(120 + L1_EXEC_TIMEOUT),
            silence_timeout: Some(Duration::from_secs(300)),
            log: Some(log),
            echo: std::env::var_os("ZVISOR_RUNG2_ECHO").is_some(),
            extra: Vec::new(),
        };
        spec.run().expect("qemu")
    });
    let log = dir.join(format!("l1-console-{}.log", times.len()));
    let out = &run.output;
    eprintln!(
        "rung 2 channel: L1 ran {:.1} s (QEMU exit {:?}); console: {}",
        run.elapsed.as_secs_f64(),
        run.exit_code,
        log.display()
    );
    for l in out
        .lines()
        .filter(|l| l.contains("L1-CHAN") || l.contains("L2-") || l.contains("exec="))
    {
        eprintln!("  {}", l.trim_end());
    }
    let has = |s: &str| out.lines().any(|l| l.contains(s));
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_string()))
    };
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
    need(
        has("ZVISOR-RESULT tag=L1 exec=chan final=ok"),
        "chan: the L1 script failed",
    );
    need(has("L2-CONSOLES=4"), "L2 does not see four console devices");
    need(
        has("L2-AGENT-PORT=vport"),
        "L2 found no port named org.zvisor.agent.0 in sysfs",
    );
    need(
        has("L2-AGENT-REQ=AGENT-PING") && has("L1-CHAN-AGENT-CLIENT-AGENT-OK"),
        "named port: request/answer failed",
    );
    need(has("L1-CHAN-AGENT-EXIT=0"), "agent client failed");
    need(has("L2-CHAN-DONE"), "L2's script did not finish");
    need(has("L1-CHAN-CLIENT-HELLO-OK"), "no hello line from L2");
    need(
        has("L1-CHAN-CLIENT-ECHO-OK bytes=65536"),
        "64 KiB echo through hvc1 failed",
    );
    need(
        has("L1-CHAN-CLIENT-RECONNECT-OK") && has("L2-CHAN-RECONNECT-LINE=PING2"),
        "a second client did not get through",
    );
    need(has("L1-CHAN-CLIENT-EXIT=0"), "zvisor-chan-client failed");
    need(has("L1-CHAN-ZVISOR-EXIT=0"), "zvisor run did not exit 0");
    let sent = value("L1-CHAN-SENT ");
    let echoed = value("L1-CHAN-ECHOED ");
    let l2_got = value("L2-CHAN-GOT ");
    need(
        sent.as_deref().is_some_and(|v| v.ends_with(" 65536")) && sent == echoed && sent == l2_got,
        &format!("sha256: L1 sent {sent:?}, L2 got {l2_got:?}, L1 got back {echoed:?}"),
    );
    need(
        has("L1-CHAN-LOG CHAN-LOG-LINE from L2"),
        "the file channel (hvc2) did not log L2's line",
    );
    need(!has("L1-CHAN-SOCKET-LEFT"), "channel socket left behind");
    assert!(
        problems.is_empty(),
        "rung 2 channel failed:\n  - {}\nconsole: {}",
        problems.join("\n  - "),
        log.display()
    );
}

//! Rung 1, virtio: the tiny guest's own virtio-mmio block driver finds the
//! disk in the DSDT, reads a sector the test prepared and writes one back,
//! through the real `zvisor run --disk` on this host's /dev/kvm (queue
//! notifications via KVM ioeventfd, the line via KVM irqfd).

mod common;

use std::path::PathBuf;

use common::*;

fn image(name: &str) -> PathBuf {
    let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut b = vec![0u8; 16 * 512];
    b[512..512 + 32].copy_from_slice(b"HOST SECTOR ONE 0123456789abcdef");
    // Sector 2 starts with a pattern the guest must overwrite (or not).
    b[1024..1024 + 8].copy_from_slice(b"OLDOLDOL");
    std::fs::write(&p, &b).unwrap();
    p
}

fn blk_lines(r: &Run) -> Vec<String> {
    r.tiny_lines()
        .into_iter()
        .filter(|l| l.starts_with("blk "))
        .map(str::to_string)
        .collect()
}

#[test]
fn tiny_guest_reads_and_writes_a_virtio_disk() {
    if skip_without_kvm("tiny_guest_reads_and_writes_a_virtio_disk") {
        return;
    }
    for (kernel, word) in [
        ("tiny.elf", "ELF64-WROTE-THIS"),
        ("tiny.bzImage", "BZIMAGE-WROTE-THIS"),
        ("tiny-pvh.elf", "PVH-WROTE-THIS"),
    ] {
        let img = image(&format!("rung1-{kernel}.img"));
        let disk = format!("path={},serial=rung1", img.display());
        let cmdline = format!("tiny.blk tiny.blk.write={word}");
        let r = run(&[
            "--kernel",
            tiny(kernel).to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--disk",
            &disk,
        ]);
        let blk = blk_lines(&r);
        assert_eq!(r.code, Some(0), "{kernel}: {r:?}");
        assert_eq!(
            r.value("blk dsdt base=").as_deref(),
            Some("0xd0000000 irq=5"),
            "{kernel}: {blk:?}"
        );
        assert_eq!(r.value("blk capacity=").as_deref(), Some("16 ro=0"));
        assert_eq!(
            r.value("blk read sector=1 ").as_deref(),
            Some("status=0 data=HOST SECTOR ONE 0123456789abcdef"),
            "{kernel}: {blk:?}"
        );
        assert_eq!(
            r.value("blk write sector=2 ").as_deref(),
            Some("status=0"),
            "{kernel}: {blk:?}"
        );
        assert_eq!(r.value("blk flush ").as_deref(), Some("status=0"));
        // Every completion raised the used-buffer interrupt status.
        assert_eq!(
            blk.iter().filter(|l| *l == "blk isr=1").count(),
            3,
            "{kernel}: {blk:?}"
        );
        let after = std::fs::read(&img).unwrap();
        let mut want = vec![0u8; 512];
        want[..word.len()].copy_from_slice(word.as_bytes());
        assert_eq!(&after[1024..1536], &want[..], "{kernel}: sector 2");
        assert_eq!(&after[512..544], b"HOST SECTOR ONE 0123456789abcdef");
        assert!(after[1536..].iter().all(|&b| b == 0), "{kernel}");
    }
}

#[test]
fn tiny_guest_cannot_write_a_readonly_disk() {
    if skip_without_kvm("tiny_guest_cannot_write_a_readonly_disk") {
        return;
    }
    let img = image("rung1-ro.img");
    let before = std::fs::read(&img).unwrap();
    let disk = format!("path={},readonly=on", img.display());
    let r = run(&[
        "--kernel",
        tiny("tiny.elf").to_str().unwrap(),
        "--cmdline",
        "tiny.blk tiny.blk.write=MUST-NOT-LAND",
        "--disk",
        &disk,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.value("blk capacity=").as_deref(), Some("16 ro=1"));
    assert_eq!(
        r.value("blk read sector=1 ").as_deref(),
        Some("status=0 data=HOST SECTOR ONE 0123456789abcdef")
    );
    // VIRTIO_BLK_S_IOERR.
    assert_eq!(
        r.value("blk write sector=2 ").as_deref(),
        Some("status=1"),
        "{r:?}"
    );
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

/// The other devices attach next to the disk (rng, vsock) and the disk
/// stays the first slot the DSDT describes; the vsock socket is gone after.
#[test]
fn devices_attach_and_vsock_socket_is_removed() {
    if skip_without_kvm("devices_attach_and_vsock_socket_is_removed") {
        return;
    }
    let img = image("rung1-multi.img");
    let sock = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rung1-v.sock");
    let _ = std::fs::remove_file(&sock);
    let disk = format!("path={}", img.display());
    let vsock = format!("cid=3,socket={}", sock.display());
    let r = run(&[
        "--kernel",
        tiny("tiny.elf").to_str().unwrap(),
        "--cmdline",
        "tiny.blk tiny.blk.write=MULTI",
        "--disk",
        &disk,
        "--rng",
        "--vsock",
        &vsock,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.value("blk write sector=2 ").as_deref(),
        Some("status=0"),
        "{r:?}"
    );
    // The DSDT now describes three devices.
    let dsdt: usize = r
        .value("acpi DSDT len=")
        .and_then(|v| v.split(' ').next().map(|n| n.parse().unwrap()))
        .unwrap();
    assert!(dsdt > 300, "{dsdt}");
    assert!(!sock.exists(), "vsock socket left behind");
}

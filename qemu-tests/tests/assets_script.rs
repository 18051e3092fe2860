//! Tests of `ci/assets.sh` that need no network: the bzImage -> vmlinux
//! extraction for every compression Debian uses, and the verify-only path
//! of a second run (including tamper detection).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use zvisor_qemu_tests::assets::{on_path, repo_root, KernelAssets};
use zvisor_qemu_tests::{skip, GuestArch};

fn script() -> PathBuf {
    repo_root().join("ci/assets.sh")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zvisor-assets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str], assets: Option<&Path>) -> Output {
    let mut c = Command::new(script());
    c.args(args);
    if let Some(a) = assets {
        c.env("ZVISOR_ASSETS", a);
    }
    c.output().unwrap()
}

/// A minimal ELF64 executable with one PT_NOTE segment holding `note`.
fn elf_with_note(owner: &[u8], ty: u32) -> Vec<u8> {
    let mut note = Vec::new();
    note.extend((owner.len() as u32 + 1).to_le_bytes());
    note.extend(8u32.to_le_bytes());
    note.extend(ty.to_le_bytes());
    note.extend(owner);
    note.push(0);
    while note.len() % 4 != 0 {
        note.push(0);
    }
    note.extend(0x0100_0850u64.to_le_bytes());
    let mut v = vec![0x7f, b'E', b'L', b'F', 2, 1, 1];
    v.resize(16, 0);
    v.extend(2u16.to_le_bytes()); // ET_EXEC
    v.extend(0x3eu16.to_le_bytes()); // x86-64
    v.extend(1u32.to_le_bytes());
    v.extend(0x0100_0000u64.to_le_bytes()); // entry
    v.extend(64u64.to_le_bytes()); // phoff
    v.extend(0u64.to_le_bytes()); // shoff
    v.extend(0u32.to_le_bytes());
    v.extend(64u16.to_le_bytes()); // ehsize
    v.extend(56u16.to_le_bytes()); // phentsize
    v.extend(1u16.to_le_bytes()); // phnum
    v.extend([0u8; 6]);
    assert_eq!(v.len(), 64);
    let note_off = 64 + 56;
    v.extend(4u32.to_le_bytes()); // PT_NOTE
    v.extend(4u32.to_le_bytes()); // flags
    v.extend((note_off as u64).to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend((note.len() as u64).to_le_bytes());
    v.extend((note.len() as u64).to_le_bytes());
    v.extend(4u64.to_le_bytes());
    v.extend(note);
    // Some body so the compressors have something to chew on.
    v.extend((0..4096u32).map(|i| (i * 7 % 251) as u8));
    v
}

fn compress(tool: &[&str], data: &[u8]) -> Vec<u8> {
    let mut c = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = c.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "{tool:?} failed");
    out.stdout
}

/// A fake bzImage: boot header fields as the boot protocol defines them,
/// and the payload followed by its uncompressed size, as kbuild appends.
fn fake_bzimage(payload: &[u8], uncompressed: usize) -> Vec<u8> {
    let setup_sects = 3u8;
    let payload_offset = 0x1c4u32;
    let mut v = vec![0u8; (usize::from(setup_sects) + 1) * 512 + payload_offset as usize];
    v[0x1f1] = setup_sects;
    v[0x202..0x206].copy_from_slice(b"HdrS");
    v[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    v[0x248..0x24c].copy_from_slice(&payload_offset.to_le_bytes());
    v[0x24c..0x250].copy_from_slice(&(payload.len() as u32 + 4).to_le_bytes());
    v.extend(payload);
    v.extend((uncompressed as u32).to_le_bytes());
    v.extend([0xaa; 100]); // whatever follows the payload in a real image
    v
}

#[test]
fn extracts_vmlinux_for_every_compression() {
    if !on_path("readelf") {
        skip("readelf (binutils) is not installed");
        return;
    }
    let d = tmpdir("extract");
    let elf = elf_with_note(b"Xen", 0x12);
    let tools: [(&str, &[&str]); 5] = [
        ("gzip", &["gzip", "-9", "-c"]),
        ("xz", &["xz", "--check=crc32", "-c"]),
        ("lz4", &["lz4", "-l", "-9", "-c"]),
        ("zstd", &["zstd", "-19", "-q", "-c"]),
        ("bzip2", &["bzip2", "-c"]),
    ];
    let mut tested = 0;
    for (name, cmd) in tools {
        if !on_path(cmd[0]) {
            eprintln!("{name}: not installed, not tested");
            continue;
        }
        let bz = d.join(format!("bzImage.{name}"));
        std::fs::write(&bz, fake_bzimage(&compress(cmd, &elf), elf.len())).unwrap();
        let out_path = d.join(format!("vmlinux.{name}"));
        let o = run(
            &[
                "--extract-vmlinux",
                bz.to_str().unwrap(),
                out_path.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read(&out_path).unwrap(),
            elf,
            "{name}: wrong vmlinux"
        );
        tested += 1;
    }
    assert!(
        tested >= 4,
        "gzip, xz, lz4 and zstd must all be testable here"
    );

    // No PVH note: refused.
    let plain = elf_with_note(b"GNU", 3);
    let bz = d.join("bzImage.nopvh");
    std::fs::write(
        &bz,
        fake_bzimage(&compress(&["gzip", "-c"], &plain), plain.len()),
    )
    .unwrap();
    let o = run(
        &[
            "--extract-vmlinux",
            bz.to_str().unwrap(),
            d.join("x").to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no Xen PVH entry note"));

    // Unknown compression: refused with the magic in the message.
    let bz = d.join("bzImage.raw");
    std::fs::write(&bz, fake_bzimage(&elf, elf.len())).unwrap();
    let o = run(
        &[
            "--extract-vmlinux",
            bz.to_str().unwrap(),
            d.join("x").to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown compression magic 7f454c46"));

    // Not a bzImage at all.
    let o = run(
        &[
            "--extract-vmlinux",
            "/etc/hostname",
            d.join("x").to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no 'HdrS' boot header"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn second_run_only_verifies_and_catches_tampering() {
    let d = tmpdir("verify");
    let a = d.join("x86_64");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::write(
        a.join("kernel.env"),
        "PKG=linux-image-test\nVERSION=1\nKVER=t\nDEB_SHA256=00\n",
    )
    .unwrap();
    std::fs::write(a.join("vmlinuz"), b"kernel bytes").unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("sha256sum ./kernel.env ./vmlinuz > MANIFEST.sha256")
        .current_dir(&a)
        .status()
        .unwrap();
    assert!(st.success());
    // The busybox-static of the same architecture, also already verified.
    let bb = d.join("busybox/x86_64");
    std::fs::create_dir_all(&bb).unwrap();
    std::fs::write(bb.join("busybox.env"), "PKG=busybox-static\nVERSION=9\n").unwrap();
    std::fs::write(bb.join("busybox"), b"busybox bytes").unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("sha256sum busybox busybox.env > MANIFEST.sha256")
        .current_dir(&bb)
        .status()
        .unwrap();
    assert!(st.success());

    // No network needed: the manifests verify, nothing is fetched.
    let o = run(&["x86_64"], Some(&d));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("linux-image-test 1 verified (2 files)"),
        "{err}"
    );
    assert!(err.contains("busybox-static 9 verified"), "{err}");
    assert!(
        !d.join("apt").exists(),
        "a verify-only run must not touch apt"
    );

    std::fs::write(a.join("vmlinuz"), b"kernel bytez").unwrap();
    let o = run(&["amd64"], Some(&d));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("MANIFEST.sha256 does not verify"), "{err}");

    for bad in [&["mips"][..], &["--nope"][..]] {
        let o = run(bad, Some(&d));
        assert!(!o.status.success());
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).lines().count(),
            1,
            "one-line error for {bad:?}"
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn real_bzimage_gives_the_recorded_vmlinux() {
    let k = match KernelAssets::find(GuestArch::X86_64) {
        Ok(k) => k,
        Err(e) => {
            skip(&e);
            return;
        }
    };
    let Some(recorded) = &k.vmlinux else {
        skip("no vmlinux in the x86_64 assets");
        return;
    };
    let d = tmpdir("real");
    let out = d.join("vmlinux");
    let o = run(
        &[
            "--extract-vmlinux",
            k.vmlinuz.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(recorded).unwrap());
    std::fs::remove_dir_all(&d).unwrap();
}

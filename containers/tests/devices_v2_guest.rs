//! The cgroup v2 device filter on other architectures' real kernels: the
//! `devcg_guest` example, built static for s390x (big-endian) and aarch64,
//! is the `/init` of an initramfs booted under QEMU TCG with the Debian
//! kernels of `ci/assets.sh`. It loads, attaches and exercises our eBPF
//! program there (see examples/devcg_guest.rs). Skips, saying why, when
//! QEMU, the kernel asset or the cross linker is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// TCG guests are CPU-bound: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

struct Arch {
    name: &'static str,
    target: &'static str,
    qemu: &'static str,
    linker: &'static str,
    machine: &'static [&'static str],
    console: &'static str,
}

const S390X: Arch = Arch {
    name: "s390x",
    target: "s390x-unknown-linux-gnu",
    qemu: "qemu-system-s390x",
    linker: "s390x-linux-gnu-gcc",
    machine: &["-M", "s390-ccw-virtio", "-cpu", "max", "-nographic"],
    console: "ttysclp0",
};

const AARCH64: Arch = Arch {
    name: "aarch64",
    target: "aarch64-unknown-linux-gnu",
    qemu: "qemu-system-aarch64",
    linker: "aarch64-linux-gnu-gcc",
    machine: &[
        "-M",
        "virt",
        "-cpu",
        "max",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
    ],
    console: "ttyAMA0",
};

fn skip_reason(a: &Arch, kernel: &Path) -> Option<String> {
    if std::env::consts::ARCH != "x86_64" {
        return Some("boots guests from an x86_64 host only".into());
    }
    for prog in [a.qemu, a.linker, "cpio"] {
        if !on_path(prog) {
            return Some(format!("{prog} is not installed"));
        }
    }
    if !kernel.is_file() {
        return Some(format!(
            "no kernel at {} (run ci/assets.sh)",
            kernel.display()
        ));
    }
    None
}

/// Builds the example statically for `a`; returns its path.
fn build(a: &Arch) -> PathBuf {
    let dir = ws().join("target/static-devcg");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(ws())
        .args(["build", "--release", "--quiet", "--target", a.target])
        .args(["-p", "zvisor-containers", "--example", "devcg_guest"])
        .env("CARGO_TARGET_DIR", &dir)
        // Replaces the target's rustflags (s390x's --s390-pgste, which an
        // init must not have).
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo");
    assert!(st.success(), "static build for {} failed", a.name);
    dir.join(a.target).join("release/examples/devcg_guest")
}

fn boot(a: &Arch) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let assets = std::env::var_os("ZVISOR_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws().join(".zvisor-assets"));
    let kernel = assets.join(a.name).join("vmlinuz");
    if let Some(why) = skip_reason(a, &kernel) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let bin = build(a);
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::copy(&bin, root.join("init")).unwrap();
    let initrd = t.path().join("initrd.cpio");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&initrd).unwrap())
        .spawn()
        .unwrap();
    cpio.stdin.take().unwrap().write_all(b"init\n").unwrap();
    assert!(cpio.wait().unwrap().success());

    let log = t.path().join("console.log");
    let started = Instant::now();
    let mut q = Command::new(a.qemu)
        .args(a.machine)
        .args(["-accel", "tcg", "-m", "512", "-smp", "1", "-no-reboot"])
        .args(["-no-user-config", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!("console={} panic=-1 quiet", a.console))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(600);
    let status = loop {
        if let Some(st) = q.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = q.kill();
            let _ = q.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("DEVCG"))
        .collect();
    eprintln!(
        "{} guest in {:?} ({status:?}):\n{}",
        a.name,
        started.elapsed(),
        lines.join("\n")
    );
    assert!(status.is_some(), "timed out:\n{out}");
    assert!(lines.contains(&"DEVCG-DONE pass"), "{out}");
    for want in [
        "DEVCG null_rw errno=0 want=0",
        "DEVCG zero_w errno=1 want=1",
        "DEVCG full_r errno=1 want=1",
        "DEVCG detached",
    ] {
        assert!(lines.contains(&want), "{want} missing:\n{out}");
    }
    assert!(
        lines.contains(
            &format!(
                "DEVCG arch={} endian={}",
                a.name,
                if a.name == "s390x" { "Big" } else { "Little" }
            )
            .as_str()
        ),
        "{out}"
    );
}

#[test]
fn s390x_kernel_enforces_our_big_endian_program() {
    boot(&S390X);
}

#[test]
fn aarch64_kernel_enforces_our_program() {
    boot(&AARCH64);
}

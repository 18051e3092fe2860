//! Bad input: one clear line on stderr naming the problem, a non-zero exit
//! code, and no panic or backtrace.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

/// Asserts a clean one-line failure that mentions every one of `needles`.
fn assert_refused(args: &[&str], needles: &[&str]) {
    let r = run(args);
    assert_ne!(r.code, Some(0), "{args:?} succeeded: {r:?}");
    assert!(r.code.is_some(), "{args:?} died from a signal: {r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one stderr line: {r:?}");
    let line = lines[0];
    assert!(line.starts_with("zvisor: error: "), "{args:?}: {line}");
    for n in needles {
        assert!(
            line.contains(n),
            "{args:?}: {line:?} does not mention {n:?}"
        );
    }
    assert!(
        !line.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "{r:?}"
    );
    assert_eq!(r.stdout, "", "{args:?}: the guest must not have run: {r:?}");
}

/// Arch-independent refusals: these never reach the backend.
#[test]
fn bad_sizes_and_counts() {
    assert_refused(
        &["--kernel", "/nonexistent", "--memory", "12Q"],
        &["--memory", "12Q", "unit"],
    );
    assert_refused(
        &["--kernel", "/nonexistent", "--memory", "lots"],
        &["--memory", "lots"],
    );
    assert_refused(
        &["--kernel", "/nonexistent", "--cpus", "0"],
        &["--cpus", "at least 1"],
    );
}

/// Usage errors (clap) exit 2 without a backtrace.
#[test]
fn usage_errors() {
    let r = run(&["--cpus", "-3"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(!r.stderr.contains("panicked"));
}

#[test]
fn bad_kernel_files() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP bad_kernel_files: checks the x86_64 kernel loader");
        return;
    }
    assert_refused(
        &["--kernel", "/nonexistent/vmlinuz"],
        &["/nonexistent/vmlinuz", "No such file"],
    );
    let empty = tmp("empty-kernel");
    std::fs::write(&empty, b"").unwrap();
    assert_refused(
        &["--kernel", empty.to_str().unwrap()],
        &["empty-kernel", "empty"],
    );
    let junk = tmp("junk-kernel");
    let bytes: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(&junk, bytes).unwrap();
    assert_refused(
        &["--kernel", junk.to_str().unwrap()],
        &["junk-kernel", "not a Linux kernel"],
    );
    // An ELF for another machine.
    let mut elf = std::fs::read(tiny("tiny.elf")).unwrap();
    elf[18] = 22; // EM_S390
    let s390 = tmp("s390-kernel");
    std::fs::write(&s390, elf).unwrap();
    assert_refused(
        &["--kernel", s390.to_str().unwrap()],
        &["s390-kernel", "not an x86_64 ELF"],
    );
    assert_refused(
        &["--kernel", env!("CARGO_TARGET_TMPDIR")],
        &["Is a directory"],
    );
}

#[test]
fn memory_too_small() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP memory_too_small: checks the x86_64 layout");
        return;
    }
    let bz = tiny("tiny.bzImage");
    let bz = bz.to_str().unwrap();
    // The tiny bzImage asks for 3 MiB from 1 MiB (init_size).
    assert_refused(
        &["--kernel", bz, "--memory", "3M"],
        &["needs 4 MiB", "--memory is 3M"],
    );
    assert_refused(
        &["--kernel", bz, "--memory", "1M"],
        &["--memory 1M", "too small"],
    );
    assert_refused(&["--kernel", bz, "--memory", "4097K"], &["4 KiB"]);
}

#[test]
fn missing_initrd() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP missing_initrd: x86_64 backend");
        return;
    }
    let k = tiny("tiny.elf");
    assert_refused(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            "/nonexistent/initrd.img",
        ],
        &["initrd", "/nonexistent/initrd.img", "No such file"],
    );
}

#[test]
fn bad_kvm_devices() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP bad_kvm_devices: x86_64 backend");
        return;
    }
    let k = tiny("tiny.elf");
    let k = k.to_str().unwrap();
    assert_refused(
        &["--kernel", k, "--kvm", "/nonexistent/kvm"],
        &["/nonexistent/kvm", "No such file"],
    );
    let plain = tmp("not-kvm");
    std::fs::write(&plain, b"").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o000)).unwrap();
    // root opens a mode-000 file anyway, then finds it is not KVM; others get EACCES.
    let r = run(&["--kernel", k, "--kvm", plain.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("not a KVM device") || r.stderr.contains("Permission denied"),
        "{r:?}"
    );
    assert_refused(
        &["--kernel", k, "--kvm", "/dev/null"],
        &["/dev/null", "not a KVM device"],
    );
}

#[test]
fn kvm_permission_denied() {
    if skip_without_kvm("kvm_permission_denied") {
        return;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIP kvm_permission_denied: needs root to drop to an unprivileged user");
        return;
    }
    let meta = std::fs::metadata("/dev/kvm").unwrap();
    if meta.permissions().mode() & 0o006 != 0 {
        eprintln!("SKIP kvm_permission_denied: /dev/kvm is world-accessible here");
        return;
    }
    let k = tiny("tiny.elf");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_zvisor"))
        .args(["run", "--kernel", k.to_str().unwrap()])
        .output();
    let Ok(out) = out else {
        eprintln!("SKIP kvm_permission_denied: setpriv is not installed");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/dev/kvm") && stderr.contains("Permission denied"),
        "{stderr}"
    );
}

#[test]
fn too_many_cpus() {
    if skip_without_kvm("too_many_cpus") {
        return;
    }
    let k = tiny("tiny.elf");
    let k = k.to_str().unwrap();
    assert_refused(
        &["--kernel", k, "--cpus", "100000"],
        &["--cpus 100000", "KVM_CAP_MAX_VCPUS"],
    );
    assert_refused(&["--kernel", k, "--cpus", "4294967295"], &["--cpus"]);
}

#[test]
fn cmdline_too_long() {
    if skip_without_kvm("cmdline_too_long") {
        return;
    }
    let k = tiny("tiny.bzImage");
    let long = "x".repeat(5000);
    assert_refused(
        &["--kernel", k.to_str().unwrap(), "--cmdline", &long],
        &["--cmdline is 5000 bytes", "2047"],
    );
    // Checked before the host is touched: a missing KVM device does not mask it.
    let k = k.to_str().unwrap();
    assert_refused(
        &[
            "--kernel",
            k,
            "--cmdline",
            &long,
            "--kvm",
            "/nonexistent/kvm",
        ],
        &["--cmdline is 5000 bytes", "2047"],
    );
}

/// Device options: one line, non-zero exit, nothing created.
#[test]
fn bad_device_options() {
    let tmpdir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let k = "/nonexistent-kernel";
    assert_refused(
        &["--kernel", k, "--disk", "path=/nonexistent.img"],
        &["--disk", "/nonexistent.img"],
    );
    assert_refused(
        &["--kernel", k, "--disk", "path=/dev/null,readonly=maybe"],
        &["--disk", "readonly", "maybe"],
    );
    assert_refused(&["--kernel", k, "--disk", "file=x"], &["--disk", "file"]);
    assert_refused(
        &["--kernel", k, "--net", "tap=t0,mac=01:02:03:04:05:06"],
        &["--net", "multicast"],
    );
    assert_refused(
        &["--kernel", k, "--vsock", "cid=2,socket=/x"],
        &["--vsock", "cid"],
    );
    assert_refused(&["--kernel", k, "--console", "vga"], &["--console", "vga"]);
    // A bad disk after a good vsock option: the socket is never created.
    let sock = tmpdir.join("cli-never.sock");
    let _ = std::fs::remove_file(&sock);
    let v = format!("cid=3,socket={}", sock.display());
    assert_refused(
        &[
            "--kernel",
            k,
            "--vsock",
            &v,
            "--disk",
            "path=/nonexistent.img",
        ],
        &["--disk"],
    );
    assert!(!sock.exists());
    // The VM fails to build (no kernel) after the socket was bound: removed.
    let r = run(&["--kernel", k, "--vsock", &v]);
    assert_ne!(r.code, Some(0));
    assert!(!sock.exists(), "socket left behind: {r:?}");
    // An existing file is never replaced.
    std::fs::write(&sock, b"keep").unwrap();
    assert_refused(&["--kernel", k, "--vsock", &v], &["--vsock", "exists"]);
    assert_eq!(std::fs::read(&sock).unwrap(), b"keep");
    std::fs::remove_file(&sock).unwrap();
}

/// A tap opened by name is not left behind when a later device fails.
#[test]
fn no_half_made_tap() {
    let uid = effective_uid();
    if uid != 0 || !Path::new("/dev/net/tun").exists() {
        eprintln!("skipping no_half_made_tap: needs root and /dev/net/tun");
        return;
    }
    let name = "zvcli0";
    let r = run(&[
        "--kernel",
        "/nonexistent-kernel",
        "--net",
        &format!("tap={name}"),
        "--vsock",
        "cid=3,socket=/nonexistent-dir/v.sock",
    ]);
    assert_ne!(r.code, Some(0), "{r:?}");
    assert!(r.stderr.contains("--vsock"), "{r:?}");
    assert!(
        !Path::new("/sys/class/net").join(name).exists(),
        "tap {name} left behind"
    );
}

fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(|n| n.parse().unwrap_or(1)))
        })
        .unwrap_or(1)
}

/// A signal while the VM is still being built (here: opening a kernel that
/// is a FIFO nobody writes to blocks) still ends zvisor with 128 + signal.
#[test]
fn signal_during_build() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP signal_during_build: x86_64 backend");
        return;
    }
    let fifo = tmp("kernel-fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let child = zvisor()
        .args(["run", "--kernel", fifo.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until zvisor's signal thread exists: from then on the signals are
    // blocked everywhere and taken by it.
    let tasks = format!("/proc/{}/task", child.id());
    let start = std::time::Instant::now();
    while !std::fs::read_dir(&tasks).unwrap().any(|t| {
        std::fs::read_to_string(t.unwrap().path().join("comm")).is_ok_and(|c| c.trim() == "signals")
    }) {
        assert!(start.elapsed().as_secs() < 20, "no signal thread");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "zvisor: stopped by signal 2\n"
    );
}

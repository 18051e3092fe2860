//! The cgroup v2 device filter checked inside a guest kernel, as the
//! guest's `/init` (a static binary alone in an initramfs). Used by
//! `containers/tests/devices_v2_guest.rs` to run our eBPF encoding on a
//! real s390x (big-endian) kernel under QEMU TCG.
//!
//! It mounts proc, sysfs, devtmpfs and cgroup2, attaches a device program
//! (deny all; `c 1:3 rwm`; `c 1:5 r`) to a new cgroup, forks a child into
//! it that tries some opens, prints one `DEVCG ...` line per check and
//! `DEVCG-DONE pass|fail`, detaches, and powers off. Run as a normal
//! program (not pid 1) it refuses to do anything.

use std::ffi::CString;
use std::path::Path;

use zvisor_containers::cgroups::bpf::{self, devices::parse_access, DevRule, DevType};

fn mount(src: &str, dst: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(dst);
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (s, d, t) = (c(src), c(dst), c(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let r = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        println!(
            "DEVCG mount {fstype} on {dst}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Opens `path` with `flags` in a child that first joins cgroup `cg`;
/// returns 0 on success or the errno.
fn try_open(cg: &Path, path: &str, flags: i32) -> i32 {
    // SAFETY: this process is single-threaded (it is the guest's init).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match std::fs::write(cg.join("cgroup.procs"), "0") {
            Err(_) => 250,
            Ok(()) => {
                let p = CString::new(path).unwrap_or_default();
                // SAFETY: a valid path; the fd is left to exit.
                let fd = unsafe { libc::open(p.as_ptr(), flags) };
                if fd >= 0 {
                    0
                } else {
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(255)
                }
            }
        };
        // SAFETY: ends the child without running the parent's atexit state.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        254
    }
}

fn run() -> bool {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2");
    println!(
        "DEVCG arch={} endian={:?}",
        std::env::consts::ARCH,
        bpf::insn::Endian::host()
    );
    let cg = Path::new("/sys/fs/cgroup/devcg");
    if let Err(e) = std::fs::create_dir(cg) {
        println!("DEVCG mkdir {}: {e}", cg.display());
        return false;
    }
    let r = |allow, typ, major, minor, acc| DevRule {
        allow,
        typ,
        major,
        minor,
        access: parse_access(acc).unwrap_or(0),
    };
    let rules = [
        r(false, DevType::All, None, None, "rwm"),
        r(true, DevType::Char, Some(1), Some(3), "rwm"),
        r(true, DevType::Char, Some(1), Some(5), "r"),
    ];
    let mut ok = true;
    match bpf::install(cg, &rules) {
        Ok(ids) => println!("DEVCG attached {ids:?}"),
        Err(e) => {
            println!("DEVCG install failed: {e}");
            return false;
        }
    }
    for (name, path, flags, want) in [
        ("null_rw", "/dev/null", libc::O_RDWR, 0),
        ("zero_r", "/dev/zero", libc::O_RDONLY, 0),
        ("zero_w", "/dev/zero", libc::O_WRONLY, libc::EPERM),
        ("full_r", "/dev/full", libc::O_RDONLY, libc::EPERM),
    ] {
        let got = try_open(cg, path, flags);
        println!("DEVCG {name} errno={got} want={want}");
        ok &= got == want;
    }
    let outside = {
        let p = CString::new("/dev/full").unwrap_or_default();
        // SAFETY: a valid path; closed right after.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
        if fd >= 0 {
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
        }
        fd >= 0
    };
    println!("DEVCG outside_full_r ok={outside}");
    ok &= outside;
    match bpf::remove_all(cg).and_then(|_| bpf::attached(cg)) {
        Ok(ids) if ids.is_empty() => println!("DEVCG detached"),
        other => {
            println!("DEVCG detach: {other:?}");
            ok = false;
        }
    }
    let _ = std::fs::remove_dir(cg);
    ok
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("devcg_guest is a guest's /init; run it as pid 1 in a VM");
        std::process::exit(2);
    }
    let ok = run();
    println!("DEVCG-DONE {}", if ok { "pass" } else { "fail" });
    // SAFETY: no preconditions; we are init and done.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}

//! Shared helpers of the integration tests: the runtime binary, busybox
//! bundles, and leak checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

/// Why the tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    // Under qemu-user the runtime would drive a kernel of another
    // architecture (qemu-user fakes uname, but not /proc/sys/kernel/arch).
    // They run natively: on x86_64 CI, and inside emulated s390x/aarch64
    // guests (qemu-tests' s390x_containers and aarch64_containers).
    let kernel_arch = std::fs::read_to_string("/proc/sys/kernel/arch").unwrap_or_default();
    if std::env::consts::ARCH != "x86_64" && kernel_arch.trim() != std::env::consts::ARCH {
        return Some(format!(
            "integration tests need a native {} kernel (this one is {:?})",
            std::env::consts::ARCH,
            kernel_arch.trim()
        ));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian busybox-static)".into());
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        return Some("needs a cgroup filesystem".into());
    }
    None
}

/// Returns early (skipping) from a test when the host cannot run it.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"))
}

/// Builds the `zvisor` package's binaries once per test process.
fn build_zvisor() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "zvisor"])
            .current_dir(ws)
            .status()
            .expect("running cargo build -p zvisor");
        assert!(st.success(), "cargo build -p zvisor failed");
    });
}

/// The `zvisor-runc` binary: `$ZVISOR_RUNC`, or the workspace's
/// `zvisor-runc` built on demand.
pub fn runc_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ZVISOR_RUNC") {
        return PathBuf::from(p);
    }
    build_zvisor();
    target_dir().join("debug/zvisor-runc")
}

/// A bundle in a temporary directory with a busybox rootfs.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub state_root: tempfile::TempDir,
    pub config: Value,
    /// Extra environment of every runtime command.
    pub env: Vec<(String, String)>,
}

/// Builds a busybox-static rootfs (symlinks to one binary) under `root`.
pub fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        if name != "busybox" && !name.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(name));
        }
    }
    for d in ["proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

/// runc's default config with `args` and no terminal.
pub fn base_config(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_MKNOD", "CAP_SYS_CHROOT", "CAP_SETPCAP"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_MKNOD", "CAP_SYS_CHROOT", "CAP_SETPCAP"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_MKNOD", "CAP_SYS_CHROOT", "CAP_SETPCAP"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "zvtest",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

impl Bundle {
    /// A bundle running `args`.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        Bundle {
            dir,
            state_root: tempfile::tempdir().unwrap(),
            config: base_config(args),
            env: Vec::new(),
        }
    }

    /// Writes config.json.
    pub fn write(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    /// The runtime with `--root` set.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(runc_bin());
        c.arg("--root").arg(self.state_root.path()).args(args);
        c.current_dir(self.dir.path());
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs the runtime; returns the output.
    pub fn runc(&self, args: &[&str]) -> Output {
        self.write();
        let out = self.quiet(args);
        eprintln!(
            "zvisor-runc {args:?} -> {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs the runtime without writing config.json or logging.
    pub fn quiet(&self, args: &[&str]) -> Output {
        // Files, not pipes: a created container keeps its stdio open.
        let o = tempfile::NamedTempFile::new().unwrap();
        let e = tempfile::NamedTempFile::new().unwrap();
        let status = self
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(o.reopen().unwrap())
            .stderr(e.reopen().unwrap())
            .status()
            .expect("running zvisor-runc");
        let out = Output {
            status,
            stdout: std::fs::read(o.path()).unwrap(),
            stderr: std::fs::read(e.path()).unwrap(),
        };
        out
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.runc(args);
        assert!(out.status.success(), "zvisor-runc {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `state` as JSON.
    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }
}

/// A unique container id for this test process.
pub fn id(name: &str) -> String {
    format!("zvt-{name}-{}", std::process::id())
}

/// Every cgroup directory a container may have left behind.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in rd.flatten() {
            let d = h.path().join("zvisor-runc").join(id);
            if d.exists() {
                out.push(d);
            }
        }
    }
    let d = Path::new("/sys/fs/cgroup/zvisor-runc").join(id);
    if d.exists() {
        out.push(d);
    }
    out
}

/// How many cgroup directories a container has at least: one on pure
/// cgroup v2, one per v1 hierarchy (two or more) otherwise.
pub fn min_cgroup_dirs() -> usize {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        1
    } else {
        2
    }
}

/// Number of host processes whose command line mentions `needle`.
pub fn procs_with(needle: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                n += 1;
            }
        }
    }
    n
}

/// Number of mounts in our mount namespace.
pub fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

/// Asserts that nothing of container `id` is left on the host.
pub fn assert_no_leaks(b: &Bundle, id: &str) {
    assert!(
        cgroup_dirs(id).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs(id)
    );
    assert!(!b.state_root.path().join(id).exists(), "state dir left");
}

/// Waits until `f` is true (max ~5 s).
pub fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

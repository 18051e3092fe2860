//! The virtio device models' in-process driver tests (`vmm/tests/*.rs`)
//! inside an emulated guest of another architecture, so their host side
//! (virtio-blk's io_uring engine, the tap of virtio-net, vsock's Unix
//! sockets, the epoll workers) runs on a real s390x (big-endian) or arm64
//! kernel rather than under qemu-user, which has no io_uring.
//!
//! The test executables are cross-built statically (as `containers` does
//! it), packed with busybox-static of that architecture and the kernel's
//! `tun` module, and run one per `exec` step by `zvisor-init` under
//! `qemu-system-<arch>` TCG (no KVM: the tests drive the devices
//! in-process). The host parses each executable's libtest output from the
//! console and checks that the io_uring engine really ran.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec, Module, ModuleIndex};

use crate::arch::GuestArch;
use crate::assets::{repo_root, KernelAssets};
use crate::binaries::{build_static, check_static};
use crate::containers::{busybox, exec_name, exec_outputs, static_cargo, GuestRun};
use crate::libtest::{self, Report, Status};
use crate::qemu::QemuSpec;
use crate::serial::{Kind, Transcript};

/// Seconds one test executable may take inside the guest.
pub const EXEC_TIMEOUT_SECS: u64 = 600;

/// The environment variable that makes `virtio_blk` fail where io_uring is
/// unavailable (set by `vmm-run.sh` in the guest).
pub const REQUIRE_IO_URING_ENV: &str = "ZVISOR_REQUIRE_IO_URING";

/// virtio_blk tests that must report, on lines of their own,
/// `ZVTEST-ENGINE <test> Uring ok`: proof that their io_uring half ran.
pub const URING_TESTS: [&str; 3] = [
    "auto_engine_matches_the_kernel",
    "engines_serve_mixed_batches",
    "engines_report_a_shrunken_image",
];

/// Tests that may skip inside the guest, with the reason. None today:
/// every test, virtio_net's tap tests included, must run.
pub const ALLOWED_SKIPS: [&str; 0] = [];

/// The cross-built executables for one architecture.
#[derive(Debug, Clone)]
pub struct VmmBinaries {
    /// Static `zvisor-init`.
    pub init: PathBuf,
    /// Static integration-test executables: (test target name, path).
    pub tests: Vec<(String, PathBuf)>,
}

/// Builds `zvisor-init` and the `zvisor-vmm` integration tests statically
/// for `arch` (release profile, the static-guest target directory).
pub fn build(arch: GuestArch) -> Result<VmmBinaries, String> {
    let init = build_static(arch, &["zvisor-init"], false)?.join("zvisor-init");
    let out = static_cargo(arch, "test")
        .args(["--no-run", "--message-format=json"])
        .args(["-p", "zvisor-vmm", "--test", "*"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "static build of the zvisor-vmm tests for {} failed: {}",
            arch.name(),
            out.status
        ));
    }
    let tests = crate::containers::test_executables(&String::from_utf8_lossy(&out.stdout));
    if !tests.iter().any(|(n, _)| n == "virtio_blk") {
        return Err(format!(
            "cargo built no virtio_blk test executable (got {:?})",
            tests.iter().map(|(n, _)| n).collect::<Vec<_>>()
        ));
    }
    for p in std::iter::once(&init).chain(tests.iter().map(|(_, p)| p)) {
        check_static(p)?;
    }
    Ok(VmmBinaries { init, tests })
}

/// The second run of `virtio_blk`: its images on ext4 on a virtio disk
/// that QEMU gives the guest (`TMPDIR` there), so the io_uring engine does
/// real block I/O through a filesystem, not only tmpfs page-cache copies.
pub const EXT4_RUN: &str = "virtio_blk_ext4";

/// Where the guest mounts that disk.
pub const EXT4_MOUNT: &str = "/mnt/ext4";

/// Size of the ext4 image the host makes for it.
pub const EXT4_MIB: u64 = 64;

/// Modules the guest needs for QEMU's disk: virtio_blk and ext4 on both
/// (s390x's virtio-ccw transport is built in, `S390_GUEST=y`), plus
/// virtio_pci on aarch64 (`-M virt` puts `if=virtio` disks on PCI), and
/// crc32c_generic, which ext4 asks the crypto API for at mount time
/// (modinfo does not list it: without it the mount fails with "Cannot load
/// crc32c driver").
pub fn disk_modules(arch: GuestArch) -> &'static [&'static str] {
    match arch {
        GuestArch::Aarch64 => &["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"],
        GuestArch::S390x | GuestArch::X86_64 => &["virtio_blk", "crc32c_generic", "ext4"],
    }
}

/// The modules the guest loads: `tun` (unless the kernel has it built in,
/// per `modules.builtin`), [`disk_modules`], and their dependencies.
pub fn modules(k: &KernelAssets, arch: GuestArch) -> Result<Vec<Module>, String> {
    let idx = ModuleIndex::scan(&k.modules).map_err(|e| format!("modules: {e}"))?;
    let builtin = std::fs::read_to_string(k.modules.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |m: &str| {
        builtin
            .lines()
            .any(|l| l.rsplit('/').next() == Some(&format!("{m}.ko")))
    };
    let mut want = Vec::new();
    for m in std::iter::once("tun").chain(disk_modules(arch).iter().copied()) {
        if idx.path(m).is_some() {
            want.push(m.to_string());
        } else if !is_builtin(m) {
            return Err(format!(
                "kernel {} has {m} neither as a module nor built in",
                k.kver
            ));
        }
    }
    idx.resolve(&want).map_err(|e| format!("modules: {e}"))
}

/// `/etc/zvisor/init.conf`: report, set up (mounts the ext4 disk), run each
/// test executable, `virtio_blk` once more on ext4 ([`EXT4_RUN`]), unmount
/// the disk, then print the kernel's last messages.
pub fn init_conf(tag: &str, names: &[String]) -> String {
    let mut c = format!(
        "tag {tag}\nreport\nexec setup 120 0 /bin/busybox sh /zvtest/setup.sh {EXT4_MOUNT}\n"
    );
    for n in names {
        c.push_str(&format!(
            "exec {} {EXEC_TIMEOUT_SECS} 0 /bin/busybox sh /zvtest/run.sh {n}\n",
            exec_name(n)
        ));
    }
    c.push_str(&format!(
        "exec {} {EXEC_TIMEOUT_SECS} 0 /bin/busybox sh /zvtest/run.sh virtio_blk {EXT4_MOUNT}\n",
        exec_name(EXT4_RUN)
    ));
    // The last test process has exited, but the kernel tears an io_uring
    // down asynchronously, and until then its registered image file keeps
    // the filesystem busy: try for up to 10 s.
    c.push_str(&format!(
        "exec umount 60 0 /bin/busybox sh -c \"for i in 1 2 3 4 5 6 7 8 9 10; do \
         /bin/busybox umount {EXT4_MOUNT} && exit 0; /bin/busybox sleep 1; done; exit 1\"\n"
    ));
    c.push_str("exec dmesg 30 0 /bin/busybox sh -c \"dmesg | tail -n 40\"\n");
    c
}

/// Makes the ext4 image QEMU gives the guest.
pub fn make_ext4(path: &Path) -> Result<(), String> {
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(EXT4_MIB << 20)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "zvblk"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run mke2fs (install e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mke2fs {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// `e2fsck -fn` of the image after the guest unmounted it: `None` when
/// clean, else e2fsck's report.
pub fn fsck(path: &Path) -> Option<String> {
    match Command::new("e2fsck").arg("-fn").arg(path).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "e2fsck -fn {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("cannot run e2fsck: {e}")),
    }
}

/// Writes the guest's initramfs to `path`.
pub fn write_initramfs(
    bins: &VmmBinaries,
    busybox: &Path,
    modules: Vec<Module>,
    tag: &str,
    path: &Path,
) -> Result<u64, String> {
    let guest = repo_root().join("qemu-tests").join("guest");
    let read = |n: &str| {
        std::fs::read(guest.join(n)).map_err(|e| format!("{}: {e}", guest.join(n).display()))
    };
    let mut files = vec![FileSpec {
        src: busybox.to_path_buf(),
        dst: "/bin/busybox".into(),
    }];
    for (n, p) in &bins.tests {
        files.push(FileSpec {
            src: p.clone(),
            dst: format!("/zvtest/bin/{n}"),
        });
    }
    let names: Vec<String> = bins.tests.iter().map(|(n, _)| n.clone()).collect();
    let spec = ImageSpec {
        init: Some(bins.init.clone()),
        files,
        texts: vec![
            (
                "/etc/zvisor/init.conf".into(),
                init_conf(tag, &names).into_bytes(),
            ),
            ("/zvtest/setup.sh".into(), read("vmm-setup.sh")?),
            ("/zvtest/run.sh".into(), read("vmm-run.sh")?),
            ("/zvtest/sbin/ip".into(), read("vmm-ip.sh")?),
        ],
        modules,
    };
    write_image_file(&spec, path).map_err(|e| format!("initramfs: {e}"))
}

/// Our tests that cannot run somewhere print `SKIP <what>: <why>` (libtest
/// still counts them as passed); this turns such a line into the
/// `SKIPPED: <what>: <why>` that [`libtest::parse`] reports as a skip,
/// also when it follows a test's `test NAME ... ` on the same line.
pub fn normalize_skip(line: &str) -> String {
    let skip = |s: &str| {
        s.trim_start()
            .strip_prefix("SKIP ")
            .map(|rest| format!("SKIPPED: {rest}"))
    };
    if let Some((head, after)) = line
        .strip_prefix("test ")
        .and_then(|r| r.split_once(" ... "))
    {
        if let Some(s) = skip(after) {
            return format!("test {head} ... {s}");
        }
        return line.to_string();
    }
    skip(line).unwrap_or_else(|| line.to_string())
}

/// Parses one executable's output lines (skips normalized).
pub fn parse_report(lines: &[String]) -> Report {
    let norm: Vec<String> = lines.iter().map(|l| normalize_skip(l)).collect();
    libtest::parse(norm.iter().map(String::as_str))
}

/// The value of `key` in the `ZVTEST-INFO key=value ...` lines among
/// `lines` (the last occurrence wins).
pub fn info(lines: &[String], key: &str) -> Option<String> {
    lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("ZVTEST-INFO "))
        .flat_map(str::split_whitespace)
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .next_back()
}

/// True when console line `line` is virtio_blk's `ZVTEST-ENGINE <test>
/// Uring ok`, on a line of its own or right after libtest's `test NAME ... `.
pub fn ran_uring(line: &str, test: &str) -> bool {
    let want = format!("ZVTEST-ENGINE {test} Uring ok");
    let line = line.trim();
    line == want || line.ends_with(&format!(" ... {want}"))
}

/// One guest run with what the harness needs to judge it.
#[derive(Debug)]
pub struct VmmRun {
    /// The run and its parsed reports.
    pub run: GuestRun,
    /// The modules the guest was given.
    pub modules: Vec<Module>,
    /// The host's `e2fsck -fn` of the ext4 disk afterwards (`None`: clean).
    pub fsck: Option<String>,
}

/// What this harness checks beyond [`GuestRun::problems`]: the modules
/// loaded, tun usable, io_uring not disabled, the ext4 disk mounted and
/// clean afterwards, the io_uring half of every engine test run (on tmpfs
/// and on ext4), and every virtio_net test passed (not skipped).
pub fn vmm_problems(v: &VmmRun, tag: &str) -> Vec<String> {
    let run = &v.run;
    let mut p = run.problems(tag, &ALLOWED_SKIPS);
    let outputs = exec_outputs(&run.qemu.output);
    let t = Transcript::parse(&run.qemu.output);
    for m in &v.modules {
        let name = m
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .unwrap_or("?");
        match t.find(Kind::Result, tag, "module", name) {
            Some(r) if r.get("status") == Some("ok") => {}
            Some(r) => p.push(format!("module {name}: {}", r.raw)),
            None => p.push(format!("module {name} was not loaded")),
        }
    }
    let setup = outputs.get("setup").cloned().unwrap_or_default();
    match info(&setup, "tun").as_deref() {
        Some("yes") => {}
        other => p.push(format!("/dev/net/tun missing in the guest ({other:?})")),
    }
    match info(&setup, "io_uring_disabled").as_deref() {
        // Linux 6.1 has no such sysctl: io_uring is then simply on.
        Some("0" | "absent") => {}
        other => p.push(format!("io_uring_disabled is {other:?}")),
    }
    match info(&setup, "ext4").as_deref() {
        Some(dev) if dev.starts_with("/dev/") => {}
        other => p.push(format!("the ext4 disk was not mounted ({other:?})")),
    }
    let fs = outputs
        .get(&exec_name(EXT4_RUN))
        .and_then(|l| info(l, "fs"));
    // busybox's `stat -f -c %T` names ext4 "ext2/ext3" (one magic number).
    if fs.as_deref() != Some("ext2/ext3") {
        p.push(format!("{EXT4_RUN} ran on {fs:?}, not on the ext4 disk"));
    }
    match t.exec_final(tag, "umount") {
        Some(r) if r.get("final") == Some("ok") => {}
        _ => p.push(format!("{EXT4_MOUNT} was not unmounted cleanly")),
    }
    if let Some(f) = &v.fsck {
        p.push(f.clone());
    }
    for run_name in ["virtio_blk", EXT4_RUN] {
        let blk = outputs
            .get(&exec_name(run_name))
            .cloned()
            .unwrap_or_default();
        for test in URING_TESTS {
            if !blk.iter().any(|l| ran_uring(l, test)) {
                p.push(format!(
                    "{run_name}::{test} did not run the io_uring engine"
                ));
            }
        }
    }
    match run.reports.iter().find(|(n, _)| n == "virtio_net") {
        Some((_, r)) if r.passed() >= 4 => {}
        Some((_, r)) => p.push(format!(
            "virtio_net: only {} tests passed (4 tap tests expected)",
            r.passed()
        )),
        None => p.push("no virtio_net executable ran".into()),
    }
    p
}

/// Each test executable's parsed report from the console transcript.
pub fn reports(names: &[String], console: &str) -> Vec<(String, Report)> {
    let outputs = exec_outputs(console);
    names
        .iter()
        .map(|n| {
            let lines = outputs.get(&exec_name(n)).cloned().unwrap_or_default();
            (n.clone(), parse_report(&lines))
        })
        .collect()
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmmPlan {
    /// Guest architecture.
    pub arch: GuestArch,
    /// vCPUs.
    pub cpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Overall QEMU timeout.
    pub timeout: Duration,
    /// Result-line tag.
    pub tag: String,
}

impl VmmPlan {
    /// 2 vCPUs, 1 GiB, 20 minutes at most.
    pub fn new(arch: GuestArch) -> Self {
        Self {
            arch,
            cpus: 2,
            memory_mib: 1024,
            timeout: Duration::from_secs(1200),
            tag: format!("vmm-{}", arch.name()),
        }
    }

    /// Builds, packs and boots with a fresh ext4 disk; parses every test
    /// executable's output and checks the disk afterwards.
    pub fn run(&self, k: &KernelAssets, workdir: &Path) -> Result<VmmRun, String> {
        let t = Instant::now();
        let bins = build(self.arch)?;
        let build_time = t.elapsed();
        let bb = busybox(self.arch)?;
        let mods = modules(k, self.arch)?;
        let initrd = workdir.join("initrd.cpio");
        write_initramfs(&bins, &bb, mods.clone(), &self.tag, &initrd)?;
        let disk = workdir.join("ext4.img");
        make_ext4(&disk)?;
        let log = workdir.join("console.log");
        let spec = QemuSpec {
            arch: self.arch,
            nested: false,
            kernel: k.fast_kernel().to_path_buf(),
            initrd,
            // loglevel=1 keeps kernel messages from splitting test output;
            // the dmesg step shows them at the end.
            append: format!("panic=-1 loglevel=1 zvisor.tag={}", self.tag),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            timeout: self.timeout,
            silence_timeout: Some(Duration::from_secs(EXEC_TIMEOUT_SECS / 2)),
            log: Some(log.clone()),
            echo: std::env::var_os("ZVISOR_QEMU_ECHO").is_some(),
            // virtio-blk-ccw on s390x, virtio-blk-pci on aarch64 virt.
            extra: vec![
                "-drive".into(),
                format!("file={},format=raw,if=virtio", disk.display()),
            ],
        };
        let qemu = spec.run()?;
        let mut names: Vec<String> = bins.tests.iter().map(|(n, _)| n.clone()).collect();
        names.push(EXT4_RUN.to_string());
        let reports = reports(&names, &qemu.output);
        Ok(VmmRun {
            run: GuestRun {
                qemu,
                reports,
                log,
                build_time,
            },
            modules: mods,
            fsck: fsck(&disk),
        })
    }
}

/// Boots `arch`, runs every zvisor-vmm test executable in it and asserts a
/// clean run (the body of `s390x_virtio_devices` and
/// `aarch64_virtio_devices`).
pub fn run_and_check(arch: GuestArch) {
    let Some(k) = crate::prerequisites(arch) else {
        return;
    };
    if let Err(e) = busybox(arch) {
        crate::skip(&e);
        return;
    }
    if !(crate::assets::on_path("mke2fs") && crate::assets::on_path("e2fsck")) {
        crate::skip("mke2fs/e2fsck are not installed (e2fsprogs)");
        return;
    }
    let plan = VmmPlan::new(arch);
    // A guest that ran no test at all (its kernel oopsed while loading the
    // modules, or it hung, under TCG) is booted once more, and says why.
    let mut boots = 0;
    let v = loop {
        boots += 1;
        let dir = crate::workdir(&plan.tag);
        let v = plan
            .run(&k, &dir)
            .unwrap_or_else(|e| panic!("{}: {e}", plan.tag));
        let (p, s, f) = v.run.totals();
        if p + s + f > 0 || boots >= 2 {
            break v;
        }
        let why = v
            .run
            .qemu
            .output
            .lines()
            .find(|l| l.contains("illegal operation") || l.contains("Oops") || l.contains("panic"))
            .unwrap_or("no test output")
            .trim()
            .to_string();
        eprintln!(
            "{}: boot {boots} ran no test ({why}; hung: {}); booting once more",
            plan.tag,
            v.run.qemu.hung()
        );
    };
    let problems = vmm_problems(&v, &plan.tag);
    let run = &v.run;
    let (passed, skipped, failed) = run.totals();
    let setup = exec_outputs(&run.qemu.output)
        .remove("setup")
        .unwrap_or_default();
    let show = |k: &str| info(&setup, k).unwrap_or_else(|| "?".into());
    eprintln!(
        "{}: kernel {} ({}), io_uring_disabled={}, tun={}, ext4 on {}: {passed} passed, {skipped} skipped, {failed} failed; build {:.1} s, QEMU run {:.1} s ({} vCPUs, {} MiB); console in {}\n{}",
        plan.tag,
        show("kernel"),
        show("machine"),
        show("io_uring_disabled"),
        show("tun"),
        show("ext4"),
        run.build_time.as_secs_f64(),
        run.qemu.elapsed.as_secs_f64(),
        plan.cpus,
        plan.memory_mib,
        run.log.display(),
        run.table()
    );
    for (n, r) in &run.reports {
        if r.tests.iter().any(|t| t.status == Status::Failed) {
            eprintln!("{n}: {:?}", r.problem());
        }
    }
    assert!(
        problems.is_empty(),
        "{}: {}\n(console in {})",
        plan.tag,
        problems.join("\n"),
        run.log.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_lines_become_skipped() {
        assert_eq!(
            normalize_skip("SKIP tap_traffic: no /dev/net/tun"),
            "SKIPPED: tap_traffic: no /dev/net/tun"
        );
        assert_eq!(
            normalize_skip("test x ... SKIP io_uring engine: ENOSYS"),
            "test x ... SKIPPED: io_uring engine: ENOSYS"
        );
        assert_eq!(normalize_skip("test x ... ok"), "test x ... ok");
        assert_eq!(normalize_skip("SKIPPED: already"), "SKIPPED: already");
        assert_eq!(normalize_skip("nothing SKIP here"), "nothing SKIP here");
        let lines: Vec<String> =
            "running 2 tests\ntest a ... SKIP a: no tap\nok\ntest b ... ok\n\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
                .lines()
                .map(String::from)
                .collect();
        let r = parse_report(&lines);
        assert_eq!(r.problem(), None);
        assert_eq!(r.tests[0].status, Status::Skipped("a: no tap".into()));
        assert_eq!((r.passed(), r.skipped()), (1, 1));
    }

    /// A console as the guest prints it: tun loaded, setup facts, the two
    /// virtio_blk runs (io_uring markers as given), a virtio_net run (test
    /// lines as given) and the unmount.
    fn console(tun: &str, blk_uring: bool, net: &[&str]) -> String {
        let mut c = String::from(
            "ZVISOR-RESULT tag=v module=tun status=ok elapsed_ms=1\n\
             ZVISOR-RESULT tag=v exec=setup final=ok attempts=1\n",
        );
        c.push_str(&format!(
            "[setup] ZVTEST-INFO machine=s390x tun={tun} io_uring_disabled=absent\n\
             [setup] ZVTEST-INFO ext4=/dev/vda\n\
             [t-virtio_blk_ext4] ZVTEST-INFO tmpdir=/mnt/ext4 fs=ext2/ext3\n"
        ));
        let eng = if blk_uring { "Uring" } else { "Sync" };
        for x in ["t-virtio_blk", "t-virtio_blk_ext4"] {
            c.push_str(&format!("[{x}] running 3 tests\n"));
            for t in URING_TESTS {
                c.push_str(&format!(
                    "[{x}] test {t} ... ZVTEST-ENGINE {t} Sync ok\n[{x}] ZVTEST-ENGINE {t} {eng} ok\n[{x}] ok\n"
                ));
            }
            c.push_str(&format!("[{x}] test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"));
            c.push_str(&format!(
                "ZVISOR-RESULT tag=v exec={x} final=ok attempts=1\n"
            ));
        }
        c.push_str(&format!("[t-virtio_net] running {} tests\n", net.len()));
        for l in net {
            c.push_str(&format!("[t-virtio_net] {l}\n"));
        }
        c.push_str(&format!(
            "[t-virtio_net] test result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
            net.len()
        ));
        c.push_str("ZVISOR-RESULT tag=v exec=t-virtio_net final=ok attempts=1\n");
        c.push_str("ZVISOR-RESULT tag=v exec=umount final=ok attempts=1\n");
        c
    }

    fn problems_of(console: String, fsck: Option<&str>) -> Vec<String> {
        let names = ["virtio_blk", "virtio_net", EXT4_RUN].map(String::from);
        let run = GuestRun {
            reports: reports(&names, &console),
            qemu: crate::qemu::QemuRun {
                output: console,
                stderr: String::new(),
                exit_code: Some(0),
                timed_out: false,
                stalled: false,
                elapsed: Duration::from_secs(1),
                hang_report: String::new(),
            },
            log: PathBuf::from("/dev/null"),
            build_time: Duration::ZERO,
        };
        let tun = Module {
            name: "tun".into(),
            path: PathBuf::from("/m/kernel/drivers/net/tun.ko"),
            depends: Vec::new(),
        };
        let v = VmmRun {
            run,
            modules: vec![tun],
            fsck: fsck.map(String::from),
        };
        vmm_problems(&v, "v")
    }

    const NET_OK: [&str; 4] = [
        "test a ... ok",
        "test b ... ok",
        "test c ... ok",
        "test d ... ok",
    ];

    #[test]
    fn clean_transcript_has_no_problems() {
        assert_eq!(
            problems_of(console("yes", true, &NET_OK), None),
            Vec::<String>::new()
        );
    }

    #[test]
    fn sync_only_missing_tun_and_skipped_taps_are_problems() {
        let p = problems_of(console("yes", false, &NET_OK), None);
        assert_eq!(p.len(), 6, "{p:?}");
        assert!(
            p.iter()
                .all(|x| x.contains("did not run the io_uring engine")),
            "{p:?}"
        );
        assert!(p[3].starts_with("virtio_blk_ext4::"), "{p:?}");
        let p = problems_of(console("no", true, &NET_OK), None);
        assert!(p.iter().any(|x| x.contains("/dev/net/tun")), "{p:?}");
        let skipped = [
            "test a ... SKIP a: cannot open /dev/net/tun",
            "ok",
            "test b ... ok",
            "test c ... ok",
            "test d ... ok",
        ];
        let p = problems_of(console("yes", true, &skipped), None);
        assert!(
            p.iter()
                .any(|x| x.contains("virtio_net::a skipped unexpectedly")),
            "{p:?}"
        );
        assert!(p.iter().any(|x| x.contains("only 3 tests passed")), "{p:?}");
        let unloaded = console("yes", true, &NET_OK).replace("status=ok", "status=error:2");
        assert!(problems_of(unloaded, None)[0].starts_with("module tun:"));
    }

    #[test]
    fn unmounted_or_unclean_disk_is_a_problem() {
        let c = console("yes", true, &NET_OK);
        let p = problems_of(c.replace("ext4=/dev/vda", "ext4=none"), None);
        assert_eq!(p, ["the ext4 disk was not mounted (Some(\"none\"))"]);
        let p = problems_of(
            c.replace("exec=umount final=ok", "exec=umount final=failed"),
            None,
        );
        assert!(p.iter().any(|x| x.contains("not unmounted")), "{p:?}");
        let p = problems_of(c.replace("fs=ext2/ext3", "fs=tmpfs"), None);
        assert_eq!(
            p,
            ["virtio_blk_ext4 ran on Some(\"tmpfs\"), not on the ext4 disk"]
        );
        let p = problems_of(c, Some("e2fsck -fn x: errors"));
        assert_eq!(p, ["e2fsck -fn x: errors"]);
    }

    #[test]
    fn uring_markers_alone_or_after_the_test_name() {
        let t = "engines_serve_mixed_batches";
        assert!(ran_uring(
            "ZVTEST-ENGINE engines_serve_mixed_batches Uring ok\r",
            t
        ));
        assert!(ran_uring(
            "test engines_serve_mixed_batches ... ZVTEST-ENGINE engines_serve_mixed_batches Uring ok",
            t
        ));
        assert!(!ran_uring(
            "ZVTEST-ENGINE engines_serve_mixed_batches Sync ok",
            t
        ));
        assert!(!ran_uring("ZVTEST-ENGINE other_test Uring ok", t));
        assert!(!ran_uring(
            "xZVTEST-ENGINE engines_serve_mixed_batches Uring ok",
            t
        ));
    }

    #[test]
    fn info_fields_last_wins() {
        let lines = vec![
            "ZVTEST-INFO tun=no machine=s390x".to_string(),
            "other".to_string(),
            "ZVTEST-INFO tun=yes io_uring_disabled=absent".to_string(),
        ];
        assert_eq!(info(&lines, "tun").as_deref(), Some("yes"));
        assert_eq!(info(&lines, "machine").as_deref(), Some("s390x"));
        assert_eq!(info(&lines, "io_uring_disabled").as_deref(), Some("absent"));
        assert_eq!(info(&lines, "kernel"), None);
    }

    #[test]
    fn init_conf_runs_setup_then_each_executable() {
        let c = init_conf("vmm", &["virtio_blk".into(), "virtio_net".into()]);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[..2], ["tag vmm", "report"]);
        assert!(lines[2].starts_with("exec setup ") && lines[2].ends_with("setup.sh /mnt/ext4"));
        assert!(lines[3].starts_with("exec t-virtio_blk 600 0 "));
        assert!(lines[3].ends_with("run.sh virtio_blk"));
        assert!(lines[4].ends_with("run.sh virtio_net"));
        assert!(lines[5].starts_with("exec t-virtio_blk_ext4 600 0 "));
        assert!(lines[5].ends_with("run.sh virtio_blk /mnt/ext4"));
        assert!(lines[6].starts_with("exec umount 60 0 /bin/busybox sh -c "));
        assert!(lines[6].contains("/bin/busybox umount /mnt/ext4 && exit 0"));
        assert!(lines[7].starts_with("exec dmesg "));
    }
}

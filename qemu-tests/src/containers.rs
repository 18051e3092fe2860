//! The OCI runtime's integration tests (`containers/tests/*.rs`) inside an
//! emulated guest of another architecture: the test executables and
//! `zvisor-runc` are cross-built statically for the guest, packed with
//! Debian's busybox-static of that architecture (the guest's userland and
//! the containers' rootfs) into an initramfs, and run by `zvisor-init`
//! under `qemu-system-<arch>` TCG, one executable per `exec` step. The host
//! parses each executable's libtest output from the console.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zvisor_mkinitramfs::{write_image_file, FileSpec, ImageSpec};

use crate::arch::GuestArch;
use crate::assets::{assets_dir, repo_root};
use crate::binaries::{build_static, check_static, static_target_dir};
use crate::libtest::{self, Report, Status};
use crate::qemu::{QemuRun, QemuSpec};
use crate::serial::Transcript;

/// The cgroup layout the guest mounts before the tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// The CI host's layout: v1 hierarchies per controller, a name=systemd
    /// hierarchy and a v2 `unified` mount (the runtime's v1 path).
    V1Hybrid,
    /// Pure cgroup2 at /sys/fs/cgroup (the runtime's v2 path).
    V2,
}

impl CgroupLayout {
    /// The argument of `containers-setup.sh`.
    pub fn arg(self) -> &'static str {
        match self {
            Self::V1Hybrid => "v1",
            Self::V2 => "v2",
        }
    }
}

/// The cross-built executables for one architecture.
#[derive(Debug, Clone)]
pub struct GuestBinaries {
    /// Static `zvisor-init`.
    pub init: PathBuf,
    /// Static `zvisor-runc`.
    pub runc: PathBuf,
    /// Static integration-test executables: (test target name, path).
    pub tests: Vec<(String, PathBuf)>,
}

/// `cargo <subcommand> --release --target <arch>` for static guest executables
/// (shared with `vmmtests`).
pub(crate) fn static_cargo(arch: GuestArch, subcommand: &str) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .env("CARGO_TARGET_DIR", static_target_dir(false))
        // RUSTFLAGS replaces .cargo/config.toml's target rustflags: the cfg
        // lets io-uring (a dependency of the `zvisor` package that holds
        // zvisor-runc) build on s390x; it changes nothing elsewhere.
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static --cfg io_uring_skip_arch_check",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .arg(subcommand)
        .args(["--release", "--quiet", "--target", arch.rust_target()]);
    cmd
}

/// The test executables named in `cargo test --no-run
/// --message-format=json` output: (target name, path) of every artifact of
/// kind `test` built with the test harness.
pub fn test_executables(json_lines: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|x| x == "test"));
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true || !is_test_target {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            out.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Builds `zvisor-init`, `zvisor-runc` and the containers crate's
/// integration tests statically for `arch` (release profile, in the
/// static-guest target directory that `binaries` uses too).
pub fn build(arch: GuestArch) -> Result<GuestBinaries, String> {
    let dir = build_static(arch, &["zvisor-init"], false)?;
    let init = dir.join("zvisor-init");
    let st = static_cargo(arch, "build")
        .args(["-p", "zvisor", "--bin", "zvisor-runc"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err(format!(
            "static build of zvisor-runc for {} failed: {st}",
            arch.name()
        ));
    }
    let runc = static_target_dir(false)
        .join(arch.rust_target())
        .join("release")
        .join("zvisor-runc");
    let out = static_cargo(arch, "test")
        .args(["--no-run", "--message-format=json"])
        .args(["-p", "zvisor-containers", "--test", "*"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "static build of the containers tests for {} failed: {}",
            arch.name(),
            out.status
        ));
    }
    let tests = test_executables(&String::from_utf8_lossy(&out.stdout));
    if tests.is_empty() {
        return Err("cargo built no containers test executables".into());
    }
    for p in std::iter::once(&init)
        .chain(std::iter::once(&runc))
        .chain(tests.iter().map(|(_, p)| p))
    {
        check_static(p)?;
    }
    Ok(GuestBinaries { init, runc, tests })
}

/// Debian's busybox-static for `arch`, fetched by `ci/assets.sh`.
pub fn busybox(arch: GuestArch) -> Result<PathBuf, String> {
    let p = assets_dir()
        .join("busybox")
        .join(arch.name())
        .join("busybox");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing (run `ci/assets.sh {}`)",
            p.display(),
            arch.name()
        ))
    }
}

/// The `exec` step name of test executable `name`.
pub fn exec_name(name: &str) -> String {
    format!("t-{name}")
}

/// Seconds one test executable may take inside the guest.
pub const EXEC_TIMEOUT_SECS: u64 = 900;

/// `/etc/zvisor/init.conf`: report, set up the root and cgroups, run each
/// test executable, then print the kernel's last messages.
pub fn init_conf(tag: &str, layout: CgroupLayout, names: &[String]) -> String {
    let mut c = format!(
        "tag {tag}\nreport\nexec setup 120 0 /bin/busybox sh /zvtest/setup.sh {}\n",
        layout.arg()
    );
    for n in names {
        c.push_str(&format!(
            "exec {} {EXEC_TIMEOUT_SECS} 0 /bin/busybox sh /zvtest/run.sh {n}\n",
            exec_name(n)
        ));
    }
    c.push_str("exec dmesg 30 0 /bin/busybox sh -c \"dmesg | tail -n 40\"\n");
    c
}

/// Writes the guest's initramfs to `path`.
pub fn write_initramfs(
    bins: &GuestBinaries,
    busybox: &Path,
    tag: &str,
    layout: CgroupLayout,
    path: &Path,
) -> Result<u64, String> {
    let guest = repo_root().join("qemu-tests").join("guest");
    let read = |n: &str| {
        std::fs::read(guest.join(n)).map_err(|e| format!("{}: {e}", guest.join(n).display()))
    };
    let mut files = vec![
        FileSpec {
            src: busybox.to_path_buf(),
            dst: "/bin/busybox".into(),
        },
        FileSpec {
            src: bins.runc.clone(),
            dst: "/usr/bin/zvisor-runc".into(),
        },
    ];
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
                init_conf(tag, layout, &names).into_bytes(),
            ),
            ("/zvtest/setup.sh".into(), read("containers-setup.sh")?),
            ("/zvtest/run.sh".into(), read("containers-run.sh")?),
        ],
        modules: Vec::new(),
    };
    write_image_file(&spec, path).map_err(|e| format!("initramfs: {e}"))
}

/// Each exec step's output lines, keyed by exec name (zvisor-init prefixes
/// them with `[name] `).
pub fn exec_outputs(console: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((name, text)) = rest.split_once("] ") else {
            continue;
        };
        if !name.is_empty() && !name.contains(' ') {
            m.entry(name.to_string())
                .or_default()
                .push(text.to_string());
        }
    }
    m
}

/// The outcome of one guest run.
#[derive(Debug)]
pub struct GuestRun {
    /// The QEMU run (console transcript, exit, time).
    pub qemu: QemuRun,
    /// Per test executable: its parsed report.
    pub reports: Vec<(String, Report)>,
    /// Where the console log is.
    pub log: PathBuf,
    /// Time spent building the binaries.
    pub build_time: Duration,
}

impl GuestRun {
    /// Everything wrong with this run (empty when it is clean): QEMU did
    /// not power off, an exec step failed, an executable's report is
    /// incomplete or has failures, a skip is not in `allowed_skips`
    /// (`executable::test` names), or nothing passed at all.
    pub fn problems(&self, tag: &str, allowed_skips: &[&str]) -> Vec<String> {
        let mut p = Vec::new();
        if self.qemu.timed_out {
            p.push(format!(
                "QEMU timed out after {:?} (stalled: {})",
                self.qemu.elapsed, self.qemu.stalled
            ));
        } else if self.qemu.exit_code != Some(0) {
            p.push(format!(
                "QEMU exited with {:?} (power-off expected): {}",
                self.qemu.exit_code, self.qemu.stderr
            ));
        }
        let t = Transcript::parse(&self.qemu.output);
        for step in std::iter::once("setup".to_string())
            .chain(self.reports.iter().map(|(n, _)| exec_name(n)))
        {
            match t.exec_final(tag, &step) {
                Some(r) if r.get("final") == Some("ok") => {}
                Some(_) => p.push(format!("exec step {step} failed")),
                None => p.push(format!("exec step {step} never finished")),
            }
        }
        let mut passed = 0;
        for (n, r) in &self.reports {
            if let Some(why) = r.problem() {
                p.push(format!("{n}: {why}"));
            }
            for tc in &r.tests {
                if let Status::Skipped(why) = &tc.status {
                    let full = format!("{n}::{}", tc.name);
                    if !allowed_skips.contains(&full.as_str()) {
                        p.push(format!("{full} skipped unexpectedly: {why}"));
                    }
                }
            }
            passed += r.passed();
        }
        if passed == 0 {
            p.push("no test passed".into());
        }
        p
    }

    /// A table of the results, one line per test executable, then each
    /// skip with its reason.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for (n, r) in &self.reports {
            s.push_str(&format!(
                "  {n:<12} passed {:>2}  skipped {:>2}  failed {:>2}\n",
                r.passed(),
                r.skipped(),
                r.failed()
            ));
        }
        for (n, r) in &self.reports {
            for tc in &r.tests {
                if let Status::Skipped(why) = &tc.status {
                    s.push_str(&format!("  skipped {n}::{}: {why}\n", tc.name));
                }
            }
        }
        s
    }

    /// Totals: (passed, skipped, failed).
    pub fn totals(&self) -> (usize, usize, usize) {
        self.reports.iter().fold((0, 0, 0), |(a, b, c), (_, r)| {
            (a + r.passed(), b + r.skipped(), c + r.failed())
        })
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct GuestPlan {
    /// Guest architecture.
    pub arch: GuestArch,
    /// The cgroup layout inside.
    pub layout: CgroupLayout,
    /// vCPUs.
    pub cpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Overall QEMU timeout.
    pub timeout: Duration,
    /// Result-line tag.
    pub tag: String,
}

impl GuestPlan {
    /// 2 vCPUs, 1.5 GiB, 25 minutes at most.
    pub fn new(arch: GuestArch, layout: CgroupLayout) -> Self {
        Self {
            arch,
            layout,
            cpus: 2,
            memory_mib: 1536,
            timeout: Duration::from_secs(1500),
            tag: format!("ct-{}-{}", arch.name(), layout.arg()),
        }
    }

    /// Builds, packs and boots; parses every test executable's output.
    pub fn run(&self, kernel: &Path, workdir: &Path) -> Result<GuestRun, String> {
        let t = Instant::now();
        let bins = build(self.arch)?;
        let build_time = t.elapsed();
        let bb = busybox(self.arch)?;
        let initrd = workdir.join("initrd.cpio");
        write_initramfs(&bins, &bb, &self.tag, self.layout, &initrd)?;
        let log = workdir.join("console.log");
        let spec = QemuSpec {
            arch: self.arch,
            nested: false,
            kernel: kernel.to_path_buf(),
            initrd,
            // loglevel=1: kernel messages (the OOM killer's, say) must not
            // split test output lines; the dmesg step shows them at the end.
            append: format!("panic=-1 loglevel=1 zvisor.tag={}", self.tag),
            cpus: self.cpus,
            memory_mib: self.memory_mib,
            timeout: self.timeout,
            silence_timeout: Some(Duration::from_secs(EXEC_TIMEOUT_SECS / 2)),
            log: Some(log.clone()),
            echo: std::env::var_os("ZVISOR_QEMU_ECHO").is_some(),
            extra: Vec::new(),
        };
        let qemu = spec.run()?;
        let outputs = exec_outputs(&qemu.output);
        let reports = bins
            .tests
            .iter()
            .map(|(n, _)| {
                let lines = outputs.get(&exec_name(n)).map(Vec::as_slice).unwrap_or(&[]);
                (n.clone(), libtest::parse(lines.iter().map(String::as_str)))
            })
            .collect();
        Ok(GuestRun {
            qemu,
            reports,
            log,
            build_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_json_gives_test_executables_only() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"zvisor_containers"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"zvisor_containers"},"profile":{"test":true},"executable":"/t/deps/zvisor_containers-1"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"lifecycle"},"profile":{"test":true},"executable":"/t/deps/lifecycle-2"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"hooks"},"profile":{"test":true},"executable":"/t/deps/hooks-3"}
{"reason":"build-finished","success":true}
not json"#;
        assert_eq!(
            test_executables(json),
            [
                ("hooks".to_string(), PathBuf::from("/t/deps/hooks-3")),
                (
                    "lifecycle".to_string(),
                    PathBuf::from("/t/deps/lifecycle-2")
                ),
            ]
        );
    }

    #[test]
    fn exec_outputs_split_by_prefix() {
        let m = exec_outputs(
            "[    1.0] kernel line\r\n[t-hooks] test a ... ok\r\nZVISOR-RESULT tag=x exec=t-hooks begin\n[t-hooks] \n[setup] ZVTEST-INFO layout=v2\n",
        );
        assert_eq!(m["t-hooks"], ["test a ... ok", ""]);
        assert_eq!(m["setup"], ["ZVTEST-INFO layout=v2"]);
        assert!(!m.contains_key("    1.0"));
    }

    #[test]
    fn init_conf_runs_setup_then_each_executable() {
        let c = init_conf(
            "ct",
            CgroupLayout::V2,
            &["hooks".into(), "lifecycle".into()],
        );
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], "tag ct");
        assert_eq!(lines[1], "report");
        assert!(lines[2].starts_with("exec setup ") && lines[2].ends_with("setup.sh v2"));
        assert!(lines[3].starts_with("exec t-hooks 900 0 ") && lines[3].ends_with("run.sh hooks"));
        assert!(lines[4].ends_with("run.sh lifecycle"));
        assert!(lines[5].starts_with("exec dmesg "));
    }
}

//! zvisor's guest init: a small static PID 1 for test guests.
//!
//! It mounts /proc, /sys and /dev, loads the modules listed in
//! `/etc/zvisor/modules` (in that order), prints a `ZVISOR-INIT-READY`
//! marker, runs the plan from the kernel command line and
//! `/etc/zvisor/init.conf` (see `plan.rs`), prints `ZVISOR-RESULT` lines,
//! and powers off with `reboot(RB_POWER_OFF)` (or reboots, with
//! `zvisor.halt=reboot`).
//!
//! Result lines are `ZVISOR-RESULT tag=<tag> key=value ...`, values without
//! spaces, so a harness can parse them from a serial console.
//!
//! Run as a normal process (not PID 1), it mounts nothing, loads nothing,
//! does not power off, takes its command line from `ZVISOR_INIT_CMDLINE`
//! and exits 0 only if every step succeeded; this is how its tests run it.

mod exec;
mod plan;
mod report;
mod sys;
mod vsock;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use exec::console_line as say;
use plan::Step;

/// Load order written by zvisor-mkinitramfs.
const MODULES_LIST: &str = "/etc/zvisor/modules";

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn mount_all() {
    for (src, dst, fs) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("tmpfs", "/run", "tmpfs"),
    ] {
        if let Err(e) = sys::mount(src, dst, fs) {
            say(&format!("zvisor-init: warning: mount {fs} on {dst}: {e}"));
        }
    }
}

/// Loads the listed modules; returns how many failed.
fn load_modules(tag: &str) -> u32 {
    let Ok(list) = std::fs::read_to_string(MODULES_LIST) else {
        return 0;
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let mut failed = 0;
    for path in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .unwrap_or(path);
        let t = Instant::now();
        let params = plan::module_params(&cmdline, name);
        let status = match sys::load_module(Path::new(path), &params) {
            Ok(()) => "ok".to_string(),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => "already-loaded".to_string(),
            Err(e) => {
                failed += 1;
                format!("error:{}", e.raw_os_error().unwrap_or(0))
            }
        };
        let params = if params.is_empty() {
            String::new()
        } else {
            format!(" params={}", params.replace(' ', ","))
        };
        say(&format!(
            "ZVISOR-RESULT tag={tag} module={name} status={status} elapsed_ms={}{params}",
            t.elapsed().as_millis()
        ));
    }
    // Without devtmpfs nobody creates /dev/kvm: do it from sysfs.
    if !Path::new("/dev/kvm").exists() {
        if let Some((ma, mi)) = read_trimmed("/sys/class/misc/kvm/dev").and_then(|d| {
            let (a, b) = d.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) {
            if let Err(e) = sys::mknod_char("/dev/kvm", ma, mi) {
                say(&format!("zvisor-init: warning: mknod /dev/kvm: {e}"));
            }
        }
    }
    failed
}

fn report(tag: &str) -> bool {
    let online = read_trimmed("/sys/devices/system/cpu/online");
    let nproc = online.as_deref().and_then(report::count_cpu_list);
    let possible = read_trimmed("/sys/devices/system/cpu/possible")
        .as_deref()
        .and_then(report::count_cpu_list);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| report::meminfo_kib(&m, "MemTotal"));
    let show = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    say(&format!(
        "ZVISOR-RESULT tag={tag} check=report nproc={} cpus_possible={} memtotal_kib={} kernel={} arch={} kvm={}",
        show(nproc.map(|n| n.to_string())),
        show(possible.map(|n| n.to_string())),
        show(mem.map(|n| n.to_string())),
        sys::kernel_release(),
        std::env::consts::ARCH,
        if Path::new("/dev/kvm").exists() { "yes" } else { "no" },
    ));
    nproc.is_some() && mem.is_some()
}

fn uptime() -> String {
    read_trimmed("/proc/uptime")
        .and_then(|u| u.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Runs everything; returns (all steps succeeded, end with a reboot).
fn run(pid1: bool) -> (bool, bool) {
    if pid1 {
        mount_all();
    }
    let cmdline = if pid1 {
        std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
    } else {
        std::env::var("ZVISOR_INIT_CMDLINE").unwrap_or_default()
    };
    let boot = match plan::parse_cmdline(&cmdline) {
        Ok(b) => b,
        Err(e) => {
            say(&format!("ZVISOR-INIT-ERROR kernel command line: {e}"));
            return (false, false);
        }
    };
    let mut tag = boot.tag.clone();
    let conf_steps = match std::fs::read_to_string(&boot.conf) {
        Ok(text) => match plan::parse_conf(&text, &mut tag) {
            Ok(s) => s,
            Err(e) => {
                say(&format!("ZVISOR-INIT-ERROR {}: {e}", boot.conf));
                return (false, boot.halt_reboot);
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            say(&format!("ZVISOR-INIT-ERROR {}: {e}", boot.conf));
            return (false, boot.halt_reboot);
        }
    };
    let mut failures = if pid1 { load_modules(&tag) } else { 0 };
    // Held until init ends (see `zvisor.kvm_pin` in plan.rs).
    let _kvm_pin = if boot.kvm_pin {
        match sys::kvm_idle_vm() {
            Ok(fds) => {
                say(&format!("ZVISOR-RESULT tag={tag} kvm_pin=ok"));
                Some(fds)
            }
            Err(e) => {
                failures += 1;
                say(&format!("ZVISOR-RESULT tag={tag} kvm_pin=error:{e}"));
                None
            }
        }
    } else {
        None
    };
    say(&format!(
        "ZVISOR-INIT-READY tag={tag} uptime_s={} kernel={}",
        uptime(),
        sys::kernel_release()
    ));
    for step in plan::plan(&boot, conf_steps) {
        match step {
            Step::Report => {
                if !report(&tag) {
                    failures += 1;
                }
            }
            Step::Exec(spec) => {
                say(&format!(
                    "ZVISOR-RESULT tag={tag} exec={} begin timeout_s={} argv={}",
                    spec.name,
                    spec.timeout_secs,
                    spec.argv
                        .join("\u{1f}")
                        .replace(char::is_whitespace, "_")
                        .replace('\u{1f}', " ")
                ));
                let (o, attempts) = exec::run_with_retries(&spec, say, |attempt, o, el| {
                    say(&format!(
                        "ZVISOR-RESULT tag={tag} exec={} attempt={attempt} status={} elapsed_ms={}",
                        spec.name,
                        o.label(),
                        el.as_millis()
                    ));
                });
                if !o.ok() {
                    failures += 1;
                }
                say(&format!(
                    "ZVISOR-RESULT tag={tag} exec={} final={} attempts={attempts}",
                    spec.name,
                    if o.ok() { "ok" } else { "failed" }
                ));
            }
        }
    }
    say(&format!(
        "ZVISOR-INIT-DONE tag={tag} status={} failures={failures} uptime_s={}",
        if failures == 0 { "ok" } else { "failed" },
        uptime()
    ));
    (failures == 0, boot.halt_reboot)
}

fn main() -> ExitCode {
    let pid1 = std::process::id() == 1;
    let args: Vec<String> = std::env::args().collect();
    if !pid1 && args.get(1).map(String::as_str) == Some("vsock") {
        return vsock::main(&args[2..]);
    }
    let (ok, reboot) = run(pid1);
    if !pid1 {
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let e = sys::halt(reboot);
    say(&format!("zvisor-init: reboot() failed: {e}"));
    // PID 1 must not exit (the kernel would panic); wait for the end.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

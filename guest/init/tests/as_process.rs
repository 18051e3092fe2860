//! Runs the real init binary as an ordinary process (not PID 1): it then
//! mounts nothing and does not power off, but parses its plan, runs
//! commands with timeouts and retries, and prints its result lines.

use std::process::Command;
use std::time::{Duration, Instant};

/// False (with a message) when the init binary cannot be executed here:
/// under qemu-user without binfmt_misc, a test cannot exec another binary
/// of the emulated architecture. Natively this always runs.
fn can_exec() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_zvisor-init"))
        .env("ZVISOR_INIT_CMDLINE", "zvisor.report=0")
        .output();
    let ran = out
        .as_ref()
        .is_ok_and(|o| o.status.code() != Some(127) && o.status.code() != Some(126));
    if !ran && !cfg!(target_arch = "x86_64") {
        eprintln!(
            "SKIPPED: cannot exec the {} init binary here (qemu-user without binfmt_misc)",
            std::env::consts::ARCH
        );
        return false;
    }
    true
}

fn run_init(cmdline: &str, conf: Option<&str>) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "zvisor-init-test-{}-{}",
        std::process::id(),
        cmdline.len() + conf.map_or(0, str::len)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let conf_path = dir.join("init.conf");
    if let Some(c) = conf {
        std::fs::write(&conf_path, c).unwrap();
    }
    let full = format!(
        "console=ttyS0 zvisor.conf={} {cmdline}",
        conf_path.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_zvisor-init"))
        .env("ZVISOR_INIT_CMDLINE", full)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn has_line(out: &str, needle: &str) -> bool {
    out.lines().any(|l| l.contains(needle))
}

#[test]
fn report_matches_this_machine() {
    if !can_exec() {
        return;
    }
    let (ok, out) = run_init("zvisor.tag=host", None);
    assert!(ok, "{out}");
    assert!(has_line(&out, "ZVISOR-INIT-READY tag=host"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ZVISOR-RESULT tag=host check=report"))
        .unwrap_or_else(|| panic!("no report line in {out}"));
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
            .to_string()
    };
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let want: u32 = online
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u32>().unwrap() - a.parse::<u32>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert_eq!(field("nproc"), want.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let memtotal = meminfo
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    assert_eq!(field("memtotal_kib"), memtotal);
    assert_eq!(field("arch"), std::env::consts::ARCH);
    assert!(
        has_line(&out, "ZVISOR-INIT-DONE tag=host status=ok failures=0"),
        "{out}"
    );
}

#[test]
fn exec_success_failure_retry_and_timeout() {
    if !can_exec() {
        return;
    }
    let conf = "tag T\n\
        exec good 10 0 /bin/sh -c \"echo hello from child; echo to stderr >&2\"\n\
        exec bad 10 1 /bin/sh -c \"exit 3\"\n\
        exec slow 1 0 /bin/sleep 30\n\
        exec missing 5 0 /nonexistent/program\n";
    let t = Instant::now();
    let (ok, out) = run_init("zvisor.report=0", Some(conf));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "timeout was not enforced"
    );
    assert!(!ok, "failures must give a non-zero exit\n{out}");
    assert!(!has_line(&out, "check=report"), "{out}");
    assert!(has_line(&out, "[good] hello from child"), "{out}");
    assert!(has_line(&out, "[good] to stderr"), "{out}");
    assert!(has_line(&out, "exec=good attempt=1 status=exit:0"), "{out}");
    assert!(has_line(&out, "exec=good final=ok attempts=1"), "{out}");
    assert!(has_line(&out, "exec=bad attempt=1 status=exit:3"), "{out}");
    assert!(has_line(&out, "exec=bad attempt=2 status=exit:3"), "{out}");
    assert!(has_line(&out, "exec=bad final=failed attempts=2"), "{out}");
    assert!(
        has_line(&out, "exec=slow attempt=1 status=timeout"),
        "{out}"
    );
    assert!(
        has_line(&out, "exec=missing attempt=1 status=spawn-failed"),
        "{out}"
    );
    assert!(
        has_line(&out, "ZVISOR-INIT-DONE tag=T status=failed failures=3"),
        "{out}"
    );
}

#[test]
fn cmdline_exec_and_bad_input() {
    if !can_exec() {
        return;
    }
    let (ok, out) = run_init(
        "zvisor.report=0 zvisor.exec=\"/bin/echo via cmdline\"",
        None,
    );
    assert!(ok, "{out}");
    assert!(has_line(&out, "[exec1] via cmdline"), "{out}");

    let (ok, out) = run_init("zvisor.nonsense=1", None);
    assert!(!ok);
    assert!(
        has_line(
            &out,
            "ZVISOR-INIT-ERROR kernel command line: unknown parameter zvisor.nonsense"
        ),
        "{out}"
    );

    let (ok, out) = run_init("", Some("exec x 0 0 /bin/true\n"));
    assert!(!ok);
    assert!(has_line(&out, "ZVISOR-INIT-ERROR"), "{out}");
}

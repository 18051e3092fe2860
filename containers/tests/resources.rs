//! Cgroup limits really enforced, pause/resume, update, ps (needs root).

mod common;

use common::*;
use serde_json::json;

fn v1_file(ctrl: &str, id: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/zvisor-runc/{id}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn is_v1() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory").is_dir()
}

#[test]
fn over_the_memory_limit_is_oom_killed() {
    require_root!();
    // Hold ~64 MiB in a shell variable under a 16 MiB limit.
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "a=$(head -c 67108864 /dev/zero | tr '\\0' x); echo survived",
    ]);
    let mut mem = json!({"limit": 16777216});
    if std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        mem["swap"] = json!(16777216);
    }
    b.config["linux"]["resources"]["memory"] = mem;
    let id = id("oom");
    let out = b.runc(&["run", &id]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("survived"));
    assert_eq!(out.status.code(), Some(137), "SIGKILL by the OOM killer");
    assert_no_leaks(&b, &id);
}

#[test]
fn pids_limit_stops_forks() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "exec 2>&1; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo done",
    ]);
    b.config["linux"]["resources"]["pids"] = json!({"limit": 4});
    let id = id("pids");
    let out = b.runc(&["run", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("can't fork"), "{text}");
    assert!(!text.contains("done"));
    assert_no_leaks(&b, &id);
}

#[test]
fn cpu_and_cpuset_limits_are_written() {
    require_root!();
    if !is_v1() {
        eprintln!("SKIPPED: checks v1 files");
        return;
    }
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["linux"]["resources"]["cpu"] =
        json!({"shares": 256, "quota": 20000, "period": 100000, "cpus": "0"});
    b.config["linux"]["resources"]["memory"] = json!({"limit": 67108864});
    let id = id("cpu");
    b.ok(&["run", "-d", &id]);
    assert_eq!(v1_file("cpu", &id, "cpu.shares").as_deref(), Some("256"));
    assert_eq!(
        v1_file("cpu", &id, "cpu.cfs_quota_us").as_deref(),
        Some("20000")
    );
    assert_eq!(v1_file("cpuset", &id, "cpuset.cpus").as_deref(), Some("0"));
    assert_eq!(
        v1_file("memory", &id, "memory.limit_in_bytes").as_deref(),
        Some("67108864")
    );
    let deny = v1_file("devices", &id, "devices.list").unwrap();
    assert!(
        !deny.contains("a *:* rwm"),
        "device cgroup is not open: {deny}"
    );
    assert!(deny.contains("c 1:3 rwm"), "{deny}");
    // update, pause/resume, ps
    b.ok(&["update", "--memory", "33554432", "--pids-limit", "9", &id]);
    assert_eq!(
        v1_file("memory", &id, "memory.limit_in_bytes").as_deref(),
        Some("33554432")
    );
    assert_eq!(v1_file("pids", &id, "pids.max").as_deref(), Some("9"));
    let res = b.dir.path().join("res.json");
    std::fs::write(&res, r#"{"cpu":{"shares":512}}"#).unwrap();
    b.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    assert_eq!(v1_file("cpu", &id, "cpu.shares").as_deref(), Some("512"));
    b.ok(&["pause", &id]);
    assert_eq!(b.state(&id)["status"], "paused");
    assert_eq!(
        v1_file("freezer", &id, "freezer.state").as_deref(),
        Some("FROZEN")
    );
    b.ok(&["resume", &id]);
    assert_eq!(b.state(&id)["status"], "running");
    assert!(!b.runc(&["resume", &id]).status.success());
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    let ps: Vec<i64> = serde_json::from_str(&b.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(ps, vec![pid]);
    let table = b.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"));
    assert!(table.contains("sleep 30"), "{table}");
    b.ok(&["delete", "--force", &id]);
    assert_no_leaks(&b, &id);
}

#[test]
fn unavailable_controllers_are_clear_errors() {
    require_root!();
    if std::path::Path::new("/sys/fs/cgroup/hugetlb").exists() || !is_v1() {
        eprintln!("SKIPPED: this host has a v1 hugetlb controller");
        return;
    }
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["resources"]["hugepageLimits"] =
        json!([{"pageSize": "2MB", "limit": 1048576}]);
    let id = id("hugetlb");
    let out = b.runc(&["create", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hugetlb cgroup controller is not mounted")
    );
    assert_no_leaks(&b, &id);
}

fn v2_file(id: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/zvisor-runc/{id}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The cgroup v2 twin of `cpu_and_cpuset_limits_are_written`: runs where
/// /sys/fs/cgroup is pure cgroup2 (the emulated s390x/arm64 guests' v2
/// boot; a hybrid host like CI's skips it).
#[test]
fn v2_limits_update_pause_resume() {
    require_root!();
    if !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        eprintln!("SKIPPED: /sys/fs/cgroup is not cgroup2");
        return;
    }
    let mut b = Bundle::new(&["sleep", "30"]);
    b.config["linux"]["resources"]["cpu"] =
        json!({"shares": 256, "quota": 20000, "period": 100000, "cpus": "0"});
    b.config["linux"]["resources"]["memory"] = json!({"limit": 67108864});
    b.config["linux"]["resources"]["pids"] = json!({"limit": 50});
    let id = id("cpu2");
    b.ok(&["run", "-d", &id]);
    // shares -> weight as runc converts it: 1 + (256 - 2) * 9999 / 262142.
    assert_eq!(v2_file(&id, "cpu.weight").as_deref(), Some("10"));
    assert_eq!(v2_file(&id, "cpu.max").as_deref(), Some("20000 100000"));
    assert_eq!(v2_file(&id, "cpuset.cpus").as_deref(), Some("0"));
    assert_eq!(v2_file(&id, "memory.max").as_deref(), Some("67108864"));
    assert_eq!(v2_file(&id, "pids.max").as_deref(), Some("50"));
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    let procs = v2_file(&id, "cgroup.procs").unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    b.ok(&["update", "--memory", "33554432", "--pids-limit", "9", &id]);
    assert_eq!(v2_file(&id, "memory.max").as_deref(), Some("33554432"));
    assert_eq!(v2_file(&id, "pids.max").as_deref(), Some("9"));
    let res = b.dir.path().join("res.json");
    std::fs::write(&res, r#"{"cpu":{"shares":512}}"#).unwrap();
    b.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    assert_eq!(v2_file(&id, "cpu.weight").as_deref(), Some("20"));
    b.ok(&["pause", &id]);
    assert_eq!(b.state(&id)["status"], "paused");
    assert_eq!(v2_file(&id, "cgroup.freeze").as_deref(), Some("1"));
    assert!(wait_for(
        || v2_file(&id, "cgroup.events").is_some_and(|e| e.lines().any(|l| l == "frozen 1"))
    ));
    b.ok(&["resume", &id]);
    assert_eq!(b.state(&id)["status"], "running");
    assert_eq!(v2_file(&id, "cgroup.freeze").as_deref(), Some("0"));
    let ps: Vec<i64> = serde_json::from_str(&b.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(ps, vec![pid]);
    b.ok(&["delete", "--force", &id]);
    assert_no_leaks(&b, &id);
}

//! The cgroup v2 device filter (eBPF) enforced by the kernel (needs root
//! and a cgroup2 mount; on this hybrid host the `unified` mount).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;
use zvisor_containers::cgroups::bpf::{self, sys, DevRule, DevType};
use zvisor_containers::cgroups::{Layout, V2_ROOT_ENV};

/// The host's cgroup2 mount, or why there is none.
fn cgroup2_root() -> Result<PathBuf, String> {
    match Layout::detect().map_err(|e| e.to_string())? {
        Layout::V2 { root } => Ok(root),
        Layout::V1 {
            unified: Some(u), ..
        } => Ok(u),
        Layout::V1 { unified: None, .. } => Err("no cgroup2 mount on this host".into()),
    }
}

macro_rules! require_v2 {
    () => {{
        require_root!();
        match cgroup2_root() {
            Ok(r) => r,
            Err(why) => {
                eprintln!("SKIPPED: {why}");
                return;
            }
        }
    }};
}

/// A cgroup2 directory removed (programs detached) on drop.
struct TestCg(PathBuf);

impl Drop for TestCg {
    fn drop(&mut self) {
        let _ = bpf::remove_all(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs `probes` (name, shell command) in a host shell that first moves
/// itself into cgroup `cg`; returns "name=ok" or "name=denied: <stderr>".
fn probe(cg: Option<&Path>, probes: &[(&str, &str)]) -> Vec<String> {
    let mut script = String::from("set -u\n");
    if let Some(cg) = cg {
        script += &format!("echo $$ > {}/cgroup.procs || exit 99\n", cg.display());
    }
    script += "t() { if out=$(eval \"$2\" 2>&1); then echo \"$1=ok\"; else echo \"$1=denied: $out\"; fi; }\n";
    for (name, cmd) in probes {
        script += &format!("t {name} '{cmd}'\n");
    }
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn verdict<'a>(lines: &'a [String], name: &str) -> &'a str {
    let l = lines
        .iter()
        .find(|l| l.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing in {lines:?}"));
    &l[name.len() + 1..]
}

fn assert_ok(lines: &[String], name: &str) {
    assert_eq!(verdict(lines, name), "ok", "{name}: {lines:?}");
}

fn assert_eperm(lines: &[String], name: &str) {
    let v = verdict(lines, name);
    assert!(
        v.starts_with("denied") && v.contains("Operation not permitted"),
        "{name} should fail with EPERM: {lines:?}"
    );
}

fn r(allow: bool, typ: DevType, major: Option<u32>, minor: Option<u32>, acc: &str) -> DevRule {
    DevRule {
        allow,
        typ,
        major,
        minor,
        access: bpf::devices::parse_access(acc).unwrap(),
    }
}

#[test]
fn kernel_enforces_the_compiled_program() {
    let root = require_v2!();
    let cg = TestCg(root.join(format!("zvt-bpf-{}", std::process::id())));
    std::fs::create_dir(&cg.0).unwrap();
    let nodes = tempfile::tempdir().unwrap();
    let n = nodes.path().display().to_string();
    let probes = [
        ("null_rw", "exec 3<>/dev/null".to_string()),
        ("zero_r", "exec 3</dev/zero".into()),
        ("zero_w", "echo x >/dev/zero".into()),
        ("full_r", "exec 3</dev/full".into()),
        ("mknod_1_7", format!("mknod {n}/full c 1 7")),
        ("mknod_1_9", format!("mknod {n}/urandom c 1 9")),
    ];
    let probes: Vec<(&str, &str)> = probes.iter().map(|(a, b)| (*a, b.as_str())).collect();
    // Without a program everything works (the host's v1 devices cgroup is
    // open), so the denials below are the program's.
    let before = probe(Some(&cg.0), &probes);
    for name in ["null_rw", "zero_r", "zero_w", "full_r"] {
        assert_ok(&before, name);
    }
    std::fs::remove_dir_all(nodes.path()).unwrap();
    std::fs::create_dir(nodes.path()).unwrap();

    use DevType::*;
    let rules = [
        r(false, All, None, None, "rwm"),
        r(true, Char, Some(1), Some(3), "rwm"),
        r(true, Char, Some(1), Some(5), "r"),
        r(true, Char, Some(1), Some(7), "m"),
    ];
    let ids = bpf::install(&cg.0, &rules).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let got = probe(Some(&cg.0), &probes);
    assert_ok(&got, "null_rw");
    assert_ok(&got, "zero_r");
    assert_eperm(&got, "zero_w");
    assert_eperm(&got, "full_r");
    assert_ok(&got, "mknod_1_7");
    assert_eperm(&got, "mknod_1_9");
    // Outside the cgroup nothing changed.
    let outside = probe(None, &probes[..3]);
    assert_ok(&outside, "zero_w");

    // Replace (update): only the new program stays attached.
    std::fs::remove_dir_all(nodes.path()).unwrap();
    std::fs::create_dir(nodes.path()).unwrap();
    let rules2 = [
        r(true, All, None, None, "rwm"),
        r(false, Char, Some(1), Some(3), "w"),
    ];
    let ids2 = bpf::install(&cg.0, &rules2).unwrap();
    assert_eq!(ids2.len(), 1, "{ids2:?}");
    assert_ne!(ids2, ids);
    assert!(
        wait_for(|| sys::prog_by_id(ids[0]).unwrap().is_none()),
        "the replaced program {} still exists",
        ids[0]
    );
    let got = probe(Some(&cg.0), &probes);
    assert_eperm(&got, "null_rw");
    assert_ok(&got, "zero_w");
    assert_ok(&got, "full_r");
    assert_ok(&got, "mknod_1_9");
    let read_only_null = probe(Some(&cg.0), &[("null_r", "exec 3</dev/null")]);
    assert_ok(&read_only_null, "null_r");

    // Numbers for docs/performance.md: the runtime's default rule set.
    let mut defaults = vec![r(false, All, None, None, "rwm")];
    defaults.extend(DevRule::defaults());
    let n = bpf::compile(&defaults).unwrap().len();
    let t = std::time::Instant::now();
    let ids3 = bpf::install(&cg.0, &defaults).unwrap();
    eprintln!(
        "BENCH devcg default rules: {} rules, {n} instructions, compile+load+attach+detach-old {:?}",
        defaults.len(),
        t.elapsed()
    );
    assert_eq!(ids3.len(), 1);
    assert!(wait_for(|| sys::prog_by_id(ids2[0]).unwrap().is_none()));

    bpf::remove_all(&cg.0).unwrap();
    assert!(bpf::attached(&cg.0).unwrap().is_empty());
    assert!(
        wait_for(|| sys::prog_by_id(ids3[0]).unwrap().is_none()),
        "the detached program still exists"
    );
}

/// A bundle whose runtime commands manage the unified mount as pure v2.
fn v2_bundle(root: &Path, args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.env.push((V2_ROOT_ENV.into(), root.display().to_string()));
    b
}

fn container_cg(root: &Path, id: &str) -> PathBuf {
    root.join("zvisor-runc").join(id)
}

#[test]
fn runtime_v2_path_filters_devices_and_updates_the_filter() {
    let root = require_v2!();
    let mut b = v2_bundle(&root, &["sleep", "300"]);
    // /dev/kmsg (1:11, in every kernel; writing it needs no capability):
    // write allowed. /dev/net/tun (10:200) is not listed: mknod is allowed by
    // the defaults (`c *:* m`), opening it is not. The device check comes
    // before the driver's open, so this also holds in the emulated guests,
    // whose kernels have no tun driver loaded.
    b.config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}
    ]);
    let id = id("devv2");
    b.ok(&["run", "-d", &id]);
    let cg = container_cg(&root, &id);
    assert!(
        cg.is_dir(),
        "the container's cgroup is on the cgroup2 mount"
    );
    let ids = bpf::attached(&cg).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    let member = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        member.contains(&format!("0::/zvisor-runc/{id}")),
        "init is in the v2 cgroup: {member}"
    );
    let check = |probes: &[(&str, &str)]| -> Vec<String> {
        let mut script = String::new();
        script += "t() { if out=$(eval \"$2\" 2>&1); then echo \"$1=ok\"; else echo \"$1=denied: $out\"; fi; }\n";
        for (name, cmd) in probes {
            script += &format!("t {name} '{cmd}'\n");
        }
        b.ok(&["exec", &id, "sh", "-c", &script])
            .lines()
            .map(str::to_string)
            .collect()
    };
    let probes = [
        ("null_rw", "exec 3<>/dev/null"),
        ("null_r", "exec 3</dev/null"),
        ("zero_r", "exec 3</dev/zero"),
        ("mknod_tun", "[ -e /dev/tun ] || mknod /dev/tun c 10 200"),
        ("tun_r", "exec 3</dev/tun"),
        ("tun_w", "exec 3>/dev/tun"),
        ("mknod_kmsg", "[ -e /dev/kmsg2 ] || mknod /dev/kmsg2 c 1 11"),
        ("kmsg_w", "exec 3>/dev/kmsg2"),
    ];
    let got = check(&probes);
    assert_ok(&got, "null_rw");
    assert_ok(&got, "zero_r");
    assert_ok(&got, "mknod_tun");
    assert_eperm(&got, "tun_r");
    assert_eperm(&got, "tun_w");
    assert_ok(&got, "mknod_kmsg");
    assert_ok(&got, "kmsg_w");

    // update: a deny rule after the defaults takes /dev/null's write away.
    let res = b.dir.path().join("res.json");
    std::fs::write(
        &res,
        r#"{"devices":[{"allow":false,"type":"c","major":1,"minor":3,"access":"w"}]}"#,
    )
    .unwrap();
    b.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    let ids2 = bpf::attached(&cg).unwrap();
    assert_eq!(ids2.len(), 1, "{ids2:?}");
    assert_ne!(ids2, ids, "update replaced the program");
    let got = check(&probes);
    assert_eperm(&got, "null_rw");
    assert_ok(&got, "null_r");
    assert_ok(&got, "zero_r");
    assert_ok(&got, "kmsg_w");
    assert_eperm(&got, "tun_r");
    // A second update adds to the first: /dev/zero's read goes too.
    std::fs::write(
        &res,
        r#"{"devices":[{"allow":false,"type":"c","major":1,"minor":5,"access":"r"}]}"#,
    )
    .unwrap();
    b.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    let got = check(&probes);
    assert_eperm(&got, "zero_r");
    assert_eperm(&got, "null_rw");
    assert_ok(&got, "null_r");
    assert_ok(&got, "kmsg_w");
    // update without device rules leaves the program alone.
    let ids3 = bpf::attached(&cg).unwrap();
    std::fs::write(&res, r#"{"devices":[]}"#).unwrap();
    b.ok(&["update", "-r", res.to_str().unwrap(), &id]);
    assert_eq!(bpf::attached(&cg).unwrap(), ids3);
    assert_eperm(&check(&probes), "null_rw");
    if !root.join("cgroup.subtree_control").exists()
        || !std::fs::read_to_string(root.join("cgroup.controllers"))
            .unwrap_or_default()
            .contains("pids")
    {
        // The unified mount of a hybrid host has no controllers: a clear error.
        let out = b.runc(&["update", "--pids-limit", "50", &id]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("pids.max does not exist"));
        assert_eq!(bpf::attached(&cg).unwrap(), ids3);
    }

    b.ok(&["delete", "--force", &id]);
    assert!(!cg.exists());
    assert_no_leaks(&b, &id);
    for p in ids3 {
        assert!(
            wait_for(|| sys::prog_by_id(p).unwrap().is_none()),
            "program {p} outlives the container"
        );
    }
}

#[test]
fn bad_override_is_a_clear_error() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.env.push((V2_ROOT_ENV.into(), "/tmp".into()));
    let id = id("badv2");
    let out = b.runc(&["run", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not this host's cgroup2 mount point"),
        "{err}"
    );
    assert_no_leaks(&b, &id);
}

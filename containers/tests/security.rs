//! Capabilities, no_new_privs, rlimits, seccomp (needs root).

mod common;

use common::*;
use serde_json::json;

#[test]
fn capabilities_are_really_dropped() {
    require_root!();
    let mut b = Bundle::new(&["sh", "-c", "exec 2>&1; grep -E '^Cap(Eff|Prm|Bnd|Inh|Amb)' /proc/self/status; hostname other || echo hostname-denied; chown 1 /tmp && echo chown-ok"]);
    let caps = json!(["CAP_CHOWN"]);
    b.config["process"]["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps});
    let id = id("caps");
    let out = b.ok(&["run", &id]);
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000001")),
            "{set}: {out}"
        );
    }
    assert!(out.contains("hostname-denied"), "{out}");
    assert!(out.contains("chown-ok"), "{out}");
}

#[test]
fn no_new_privs_is_set() {
    require_root!();
    let b = Bundle::new(&["grep", "NoNewPrivs", "/proc/self/status"]);
    let id = id("nnp");
    assert!(b.ok(&["run", &id]).contains("NoNewPrivs:\t1"));
    let mut b = Bundle::new(&["grep", "NoNewPrivs", "/proc/self/status"]);
    b.config["process"]["noNewPrivileges"] = json!(false);
    assert!(b.ok(&["run", &id]).contains("NoNewPrivs:\t0"));
}

#[test]
fn rlimits_are_applied_and_host_limits_explained() {
    require_root!();
    let mut b = Bundle::new(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
    let id = id("rlim");
    assert_eq!(b.ok(&["run", &id]), "256\n512\n");
    let has_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    if !has_sys_resource {
        b.config["process"]["rlimits"] =
            json!([{"type": "RLIMIT_NOFILE", "hard": u64::MAX, "soft": 1024}]);
        let out = b.runc(&["create", &id]);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("CAP_SYS_RESOURCE"));
        assert_no_leaks(&b, &id);
    }
}

#[test]
fn seccomp_denies_a_listed_syscall_with_its_errno() {
    require_root!();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "exec 2>&1; mkdir /tmp/denied; echo still-alive; ls -d /tmp",
    ]);
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_S390X"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
            // aarch64 has no chmod(2): libc's chmod is fchmodat, mode third.
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]}
        ]
    });
    let id = id("seccomp");
    let out = b.ok(&["run", &id]);
    // EDQUOT (122) was chosen because nothing else would produce it.
    assert!(out.contains("Disk quota exceeded"), "{out}");
    assert!(out.contains("still-alive"));
    // Without no_new_privs the filter goes in while CAP_SYS_ADMIN is held.
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.config["process"]["args"] = json!([
        "sh",
        "-c",
        "exec 2>&1; touch /tmp/f; chmod 777 /tmp/f; echo rc=$?; chmod 700 /tmp/f; echo rc=$?"
    ]);
    let out = b.ok(&["run", &id]);
    assert!(out.contains("rc=1") && out.contains("rc=0"), "{out}");
}

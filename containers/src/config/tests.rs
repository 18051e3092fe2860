use super::*;

fn host() -> Host {
    Host {
        apparmor: false,
        selinux: false,
        sys_resource: false,
        hard_limit: |_| 1024,
    }
}

fn base() -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "/"},
        "process": {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]}
    })
}

fn check(v: serde_json::Value) -> Result<()> {
    let spec: Spec = serde_json::from_value(v).unwrap();
    validate(&spec, Path::new("/"), &host())
}

fn err(v: serde_json::Value) -> String {
    check(v).unwrap_err().to_string()
}

#[test]
fn the_base_config_is_valid() {
    check(base()).unwrap();
}

#[test]
fn bad_configs_get_clear_errors() {
    let mut v = base();
    v["process"]["args"] = serde_json::json!([]);
    assert!(err(v).contains("process.args"));

    let mut v = base();
    v["process"]["cwd"] = "rel".into();
    assert!(err(v).contains("must be absolute"));

    let mut v = base();
    v["root"]["path"] = "/nonexistent-rootfs".into();
    assert!(err(v).contains("not a directory"));

    let mut v = base();
    v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
    assert!(err(v).contains("twice"));

    let mut v = base();
    v["linux"]["namespaces"] = serde_json::json!([{"type": "user"}]);
    assert!(err(v).contains("uidMappings"));

    let mut v = base();
    v["hostname"] = "x".into();
    v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}]);
    assert!(err(v).contains("uts namespace"));

    let mut v = base();
    v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
    assert!(err(v).contains("not namespaced"));

    let mut v = base();
    v["process"]["apparmorProfile"] = "docker-default".into();
    assert!(err(v).contains("AppArmor is not enabled"));

    let mut v = base();
    v["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
    assert!(err(v).contains("SELinux is not enabled"));

    let mut v = base();
    v["ociVersion"] = "0.9".into();
    assert!(err(v).contains("ociVersion"));
}

#[test]
fn rlimits_above_the_host_hard_limit_need_cap_sys_resource() {
    let mut v = base();
    v["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]);
    let e = err(v.clone());
    assert!(e.contains("CAP_SYS_RESOURCE"), "{e}");
    v["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 1024}]);
    assert!(err(v.clone()).contains("exceeds hard"));
    v["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}]);
    check(v).unwrap();
}

#[test]
fn seccomp_is_compiled_during_validation() {
    let mut v = base();
    v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]});
    assert!(err(v).contains("SCMP_ACT_NOTIFY"));
}

//! Lifecycle, namespaces, rootfs and failure behaviour (needs root).

mod common;

use common::*;
use std::process::Stdio;

use serde_json::json;

#[test]
fn create_start_state_kill_delete() {
    require_root!();
    let b = Bundle::new(&["sleep", "60"]);
    let id = id("life");
    b.ok(&["create", "--pid-file", "pidfile", &id]);
    let st = b.state(&id);
    assert_eq!(st["status"], "created");
    let pid = st["pid"].as_i64().unwrap();
    assert!(pid > 0);
    let pf = std::fs::read_to_string(b.dir.path().join("pidfile")).unwrap();
    assert_eq!(pf.trim(), pid.to_string());
    assert!(
        cgroup_dirs(&id).len() >= min_cgroup_dirs(),
        "cgroups created"
    );
    let list = b.ok(&["list", "--format", "json"]);
    assert!(list.contains(&id));
    // Deleting a running container needs --force; starting twice fails.
    b.ok(&["start", &id]);
    assert_eq!(b.state(&id)["status"], "running");
    assert!(!b.runc(&["start", &id]).status.success());
    assert!(!b.runc(&["delete", &id]).status.success());
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\x0060\x00");
    b.ok(&["kill", &id, "KILL"]);
    assert!(wait_for(|| b.state(&id)["status"] == "stopped"));
    b.ok(&["delete", &id]);
    assert_no_leaks(&b, &id);
    let out = b.runc(&["state", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn run_returns_the_exit_code_and_cleans_up() {
    require_root!();
    let b = Bundle::new(&["sh", "-c", "echo out; exit 7"]);
    let id = id("runexit");
    let out = b.runc(&["run", &id]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_no_leaks(&b, &id);
}

#[test]
fn namespaces_are_observed_from_inside() {
    require_root!();
    let script = "echo pid=$$; hostname; for n in pid mnt net ipc uts cgroup; do readlink /proc/self/ns/$n; done; \
                  ls /sys/class/net; grep memory /proc/self/cgroup || grep '^0::' /proc/self/cgroup";
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536"});
    b.config["process"]["args"] = json!([
        "sh",
        "-c",
        format!("{script}; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax")
    ]);
    let id = id("ns");
    let out = b.ok(&["run", &id]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("pid=1"));
    assert_eq!(lines.next(), Some("zvtest"));
    for n in ["pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        let inside = lines.next().unwrap();
        let host = std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        assert!(inside.starts_with(&format!("{n}:[")), "{inside}");
        assert_ne!(inside, host.to_string_lossy(), "{n} namespace not new");
    }
    assert_eq!(lines.next(), Some("lo"), "only loopback in a new netns");
    // The cgroup namespace's root: v1's memory line, or the v2 line.
    let cg = lines.next().unwrap_or_default();
    if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert!(
            cg.ends_with(":memory:/") && !cg.starts_with("0:"),
            "cgroup ns root: {cg}"
        );
    } else {
        assert_eq!(cg, "0::/", "cgroup ns root");
    }
    assert_eq!(lines.next(), Some("1"));
    assert_eq!(lines.next(), Some("65536"));
    assert_no_leaks(&b, &id);
}

#[test]
fn user_namespace_maps_root() {
    require_root!();
    let mut b = Bundle::new(&["sh", "-c", "id -u; cat /proc/self/uid_map; sleep 30"]);
    let nss = b.config["linux"]["namespaces"].as_array_mut().unwrap();
    nss.push(json!({"type": "user"}));
    nss.retain(|n| n["type"] != "cgroup");
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // sysfs of our own needs the userns to own the netns: it does here.
    let id = id("userns");
    b.ok(&["run", "--detach", &id]);
    let pid = b.state(&id)["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains("100000"), "{uid_line}");
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    b.ok(&["delete", "--force", &id]);
    assert_no_leaks(&b, &id);
}

#[test]
fn joins_an_existing_namespace_by_path() {
    require_root!();
    let a = Bundle::new(&["sleep", "60"]);
    let ida = id("joina");
    a.ok(&["run", "-d", &ida]);
    let pida = a.state(&ida)["pid"].as_i64().unwrap();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "readlink /proc/self/ns/net; readlink /proc/self/ns/uts",
    ]);
    for n in b.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if n["type"] == "network" {
            n["path"] = json!(format!("/proc/{pida}/ns/net"));
        }
    }
    let idb = id("joinb");
    let out = b.ok(&["run", &idb]);
    let mut l = out.lines();
    let net_a = std::fs::read_link(format!("/proc/{pida}/ns/net")).unwrap();
    let uts_a = std::fs::read_link(format!("/proc/{pida}/ns/uts")).unwrap();
    assert_eq!(l.next().unwrap(), net_a.to_string_lossy());
    assert_ne!(l.next().unwrap(), uts_a.to_string_lossy());
    a.ok(&["delete", "-f", &ida]);
    assert_no_leaks(&a, &ida);
    assert_no_leaks(&b, &idb);
}

#[test]
fn readonly_rootfs_masked_and_readonly_paths() {
    require_root!();
    let script = "exec 2>&1; touch /x; touch /tmp/ok && echo tmp-ok; echo 1 > /proc/sys/kernel/shmmax 2>&1; \
                  cat /proc/kcore | wc -c; ls /sys/firmware | wc -l; ls /dev; cat /proc/self/mountinfo | grep -c ' / / '; true";
    let mut b = Bundle::new(&["sh", "-c", script]);
    b.config["root"]["readonly"] = json!(true);
    let id = id("ro");
    let out = b.ok(&["run", &id]);
    assert!(out.contains("touch: /x: Read-only file system"), "{out}");
    assert!(out.contains("tmp-ok"));
    assert!(out.contains("Read-only file system"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"0"),
        "masked kcore reads empty and /sys/firmware is empty: {out}"
    );
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
    ] {
        assert!(lines.contains(&dev), "/dev/{dev} missing: {out}");
    }
    assert_no_leaks(&b, &id);
}

#[test]
fn no_pivot_uses_chroot() {
    require_root!();
    let b = Bundle::new(&["sh", "-c", "ls /bin/busybox && echo chrooted"]);
    let id = id("nopivot");
    let out = b.ok(&["run", "--no-pivot", &id]);
    assert!(out.contains("chrooted"));
    assert_no_leaks(&b, &id);
}

#[test]
fn env_cwd_user_and_umask() {
    require_root!();
    let mut b = Bundle::new(&["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G; umask"]);
    b.config["process"]["env"] = json!(["PATH=/bin", "FOO=bar"]);
    b.config["process"]["cwd"] = json!("/tmp");
    b.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1001, "additionalGids": [5, 6], "umask": 63});
    let id = id("user");
    let out = b.ok(&["run", &id]);
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l, ["bar", "/tmp", "1000", "1001", "1001 5 6", "0077"]);
}

#[test]
fn bind_mounts_with_options() {
    require_root!();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from-host").unwrap();
    let mut b = Bundle::new(&["sh", "-c", "cat /data/f; (echo x > /data/g) 2>&1; true"]);
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": host.path(), "options": ["rbind", "ro", "rprivate"]}));
    let id = id("bind");
    let out = b.ok(&["run", &id]);
    assert!(out.starts_with("from-host"));
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!host.path().join("g").exists());
}

#[test]
fn bad_configs_fail_before_anything_is_created() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["args"] = json!([]);
    let id = id("badcfg");
    let out = b.runc(&["create", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid config: process.args"));
    assert_no_leaks(&b, &id);

    let mut b = Bundle::new(&["true"]);
    b.config["process"]["apparmorProfile"] = json!("docker-default");
    let out = b.runc(&["create", &id]);
    // Debian's kernels enable AppArmor (the emulated s390x/arm64 guests run
    // them); this CI host has none.
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    let want = if apparmor {
        "apparmorProfile (not implemented yet)"
    } else {
        "AppArmor is not enabled"
    };
    assert!(String::from_utf8_lossy(&out.stderr).contains(want));
    assert_no_leaks(&b, &id);

    let b = Bundle::new(&["true"]);
    let out = b.runc(&["--systemd-cgroup", "create", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--systemd-cgroup is not supported"));

    std::fs::write(b.dir.path().join("config.json"), "{not json").unwrap();
    let out = b
        .cmd(&["create", &id])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.json"));
    assert_no_leaks(&b, &id);
}

#[test]
fn failure_mid_create_leaves_nothing() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": "/nonexistent/zv", "options": ["rbind"]}));
    let id = id("midfail");
    let mounts = mount_count();
    let out = b.runc(&["create", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/zv does not exist"));
    assert_no_leaks(&b, &id);
    assert_eq!(mount_count(), mounts);
    assert_eq!(procs_with(&id), 0);
    // An executable that does not exist fails at create, not at start.
    let b = Bundle::new(&["/no/such/binary"]);
    let out = b.runc(&["create", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert_no_leaks(&b, &id);
}

#[test]
fn kill_9_mid_create_then_delete_force_cleans_up() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"]}]});
    b.write();
    let id = id("k9");
    let mut child = b
        .cmd(&["create", &id])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(
        || cgroup_dirs(&id).len() >= min_cgroup_dirs() && procs_with(&id) >= 2
    ));
    std::thread::sleep(std::time::Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !cgroup_dirs(&id).is_empty(),
        "the interrupted create left a cgroup behind"
    );
    b.ok(&["delete", "--force", &id]);
    assert_no_leaks(&b, &id);
    assert!(wait_for(|| procs_with(&id) == 0), "processes left");
    // The orphaned hook is not ours to reap, but the container's init is gone.
}

#[test]
fn no_leaks_after_200_cycles() {
    require_root!();
    let b = Bundle::new(&["true"]);
    b.write();
    let mounts = mount_count();
    let base = id("leak");
    for i in 0..200 {
        let id = format!("{base}-{i}");
        let o = b.quiet(&["create", &id]);
        assert!(
            o.status.success(),
            "create {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = b.quiet(&["start", &id]);
        assert!(
            o.status.success(),
            "start {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(wait_for(|| {
            let o = b.quiet(&["state", &id]);
            String::from_utf8_lossy(&o.stdout).contains("\"stopped\"")
        }));
        let o = b.quiet(&["delete", &id]);
        assert!(
            o.status.success(),
            "delete {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for i in 0..200 {
        let id = format!("{base}-{i}");
        assert!(cgroup_dirs(&id).is_empty(), "cgroup of {id} left");
    }
    assert_eq!(
        std::fs::read_dir(b.state_root.path()).unwrap().count(),
        0,
        "state dirs left"
    );
    assert_eq!(mount_count(), mounts, "mounts left");
    assert_eq!(procs_with(&base), 0, "processes left");
}

#[test]
fn time_namespace_with_offsets() {
    require_root!();
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        eprintln!("SKIPPED: no time namespaces in this kernel");
        return;
    }
    let mut b = Bundle::new(&["cat", "/proc/uptime"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 10_000_000, "nanosecs": 0}});
    let id = id("timens");
    let out = b.ok(&["run", &id]);
    let up: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        up >= 10_000_000.0,
        "uptime {up} carries the boottime offset"
    );
}

#[test]
fn json_log_features_and_spec() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["cwd"] = json!("relative");
    let log = b.dir.path().join("log.json");
    let id = id("jsonlog");
    let out = b.runc(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        &id,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = std::fs::read_to_string(&log).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("process.cwd"), "{v}");
    let f: serde_json::Value = serde_json::from_str(&b.ok(&["features"])).unwrap();
    assert!(f["linux"]["seccomp"]["archs"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ARCH_S390X")));
    let d = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(runc_bin())
        .args(["spec", "--bundle"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["ociVersion"], "1.0.2");
}

#[test]
fn preserved_fds_do_not_leak_the_exec_fifo() {
    require_root!();
    // With --preserve-fds, fds 3.. stay open in the user process; the
    // runtime's own fds (the exec fifo is held until execve) must not.
    let b = Bundle::new(&["sh", "-c", "ls -l /proc/self/fd/"]);
    let id = id("prsv");
    let out = b.ok(&["run", "--preserve-fds", "3", &id]);
    assert!(!out.contains("fifo"), "{out}");
    assert_no_leaks(&b, &id);
}

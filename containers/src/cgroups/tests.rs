use super::*;

const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
30 25 0:28 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).unwrap()
}

#[test]
fn hybrid_layout_is_v1_with_unified() {
    let l = Layout::from_mountinfo(HYBRID).unwrap();
    let Layout::V1 {
        hierarchies,
        unified,
    } = &l
    else {
        panic!("{l:?}")
    };
    assert_eq!(
        unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    assert_eq!(hierarchies.len(), 3, "name=systemd is not a controller");
    assert_eq!(hierarchies[0].0, vec!["cpu", "cpuacct"]);
    let cg = Cgroup::new(l, "a/b".into());
    assert_eq!(
        cg.controller_dir("cpuacct").unwrap(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/a/b")
    );
    let e = cg.controller_dir("hugetlb").unwrap_err();
    assert!(e.to_string().contains("hugetlb"), "{e}");
    assert_eq!(cg.dirs().len(), 4);
}

#[test]
fn pure_v2_layout() {
    let l = Layout::from_mountinfo(
        "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    )
    .unwrap();
    assert_eq!(
        l,
        Layout::V2 {
            root: "/sys/fs/cgroup".into()
        }
    );
}

#[test]
fn cgroups_path_is_normalised() {
    assert_eq!(rel_path(None, "c1").unwrap(), Path::new("zvisor-runc/c1"));
    assert_eq!(
        rel_path(Some(Path::new("/a/b")), "c").unwrap(),
        Path::new("a/b")
    );
    assert!(rel_path(Some(Path::new("/a/../b")), "c").is_err());
    assert!(rel_path(Some(Path::new("system.slice:docker:abc")), "c").is_err());
    assert!(rel_path(Some(Path::new("/")), "c").is_err());
}

#[test]
fn v1_plan() {
    let r = res(
        r#"{"memory":{"limit":1048576,"swap":2097152},"cpu":{"shares":512,"quota":5000,"period":10000,"cpus":"0"},
        "pids":{"limit":10},"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}],
        "blockIO":{"weight":300,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1000}]}}"#,
    );
    let got: Vec<(String, String)> = plan(&r, false)
        .unwrap()
        .into_iter()
        .map(|w| (w.file, w.value))
        .collect();
    let want = [
        ("devices.deny", "a *:* rwm"),
        ("devices.allow", "c 1:3 rw"),
        ("memory.limit_in_bytes", "1048576"),
        ("memory.memsw.limit_in_bytes", "2097152"),
        ("cpu.shares", "512"),
        ("cpu.cfs_period_us", "10000"),
        ("cpu.cfs_quota_us", "5000"),
        ("cpuset.cpus", "0"),
        ("pids.max", "10"),
        ("blkio.weight", "300"),
        ("blkio.throttle.read_bps_device", "8:0 1000"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(plan(&res(r#"{"unified":{"memory.max":"1"}}"#), false).is_err());
}

#[test]
fn v2_plan() {
    let r = res(
        r#"{"memory":{"limit":1048576,"swap":3145728},"cpu":{"shares":1024,"quota":-1},
        "pids":{"limit":0},"unified":{"memory.high":"900000"}}"#,
    );
    let got: Vec<(String, String)> = plan(&r, true)
        .unwrap()
        .into_iter()
        .map(|w| (w.file, w.value))
        .collect();
    let want = [
        ("memory.max", "1048576"),
        ("memory.swap.max", "2097152"),
        ("cpu.weight", "39"),
        ("cpu.max", "max 100000"),
        ("pids.max", "max"),
        ("memory.high", "900000"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(plan(&res(r#"{"unified":{"../x":"1"}}"#), true).is_err());
}

#[test]
fn writes_land_in_a_fake_hierarchy() {
    let t = tempfile::tempdir().unwrap();
    let mem = t.path().join("memory");
    let pids = t.path().join("pids");
    std::fs::create_dir_all(mem.join("c")).unwrap();
    std::fs::create_dir_all(pids.join("c")).unwrap();
    for f in ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"] {
        std::fs::write(mem.join("c").join(f), "").unwrap();
    }
    std::fs::write(pids.join("c/pids.max"), "").unwrap();
    let cg = Cgroup::new(
        Layout::V1 {
            hierarchies: vec![
                (vec!["memory".into()], mem.clone()),
                (vec!["pids".into()], pids.clone()),
            ],
            unified: None,
        },
        "c".into(),
    );
    cg.apply(&res(
        r#"{"memory":{"limit":4096,"swap":8192},"pids":{"limit":5}}"#,
    ))
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(mem.join("c/memory.limit_in_bytes")).unwrap(),
        "4096"
    );
    assert_eq!(
        std::fs::read_to_string(mem.join("c/memory.memsw.limit_in_bytes")).unwrap(),
        "8192"
    );
    assert_eq!(
        std::fs::read_to_string(pids.join("c/pids.max")).unwrap(),
        "5"
    );
    let e = cg.apply(&res(r#"{"cpu":{"shares":2}}"#)).unwrap_err();
    assert!(
        e.to_string()
            .contains("cpu cgroup controller is not mounted"),
        "{e}"
    );
}

#[test]
fn unified_mount_can_be_managed_as_pure_v2() {
    let l = Layout::from_mountinfo(HYBRID).unwrap();
    assert!(!l.is_v2());
    let v2 = l
        .clone()
        .forced_v2(Path::new("/sys/fs/cgroup/unified/"))
        .unwrap();
    assert_eq!(
        v2,
        Layout::V2 {
            root: "/sys/fs/cgroup/unified/".into()
        }
    );
    let cg = Cgroup::new(v2, "zvisor-runc/c".into());
    assert_eq!(
        cg.dirs(),
        vec![PathBuf::from("/sys/fs/cgroup/unified/zvisor-runc/c")]
    );
    let e = l.forced_v2(Path::new("/sys/fs/cgroup/memory")).unwrap_err();
    assert!(
        e.to_string()
            .contains("is not this host's cgroup2 mount point"),
        "{e}"
    );
    let no_v2 =
        Layout::from_mountinfo("29 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
            .unwrap();
    assert!(no_v2.forced_v2(Path::new("/sys/fs/cgroup")).is_err());
}

#[test]
fn v2_device_rules_are_no_file_writes_but_are_validated() {
    let r = res(
        r#"{"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]}"#,
    );
    assert!(plan(&r, true).unwrap().is_empty());
    // Cgroup::apply validates them before touching anything.
    let t = tempfile::tempdir().unwrap();
    let cg = Cgroup::new(
        Layout::V2 {
            root: t.path().into(),
        },
        "c".into(),
    );
    let bad = res(r#"{"devices":[{"allow":true,"type":"c","access":"rwx"}]}"#);
    let e = cg.apply(&bad).unwrap_err();
    assert!(e.to_string().contains("must be made of r, w, m"), "{e}");
}

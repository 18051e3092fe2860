use super::*;
use crate::sys::recorder::Recorder;

fn spec(json: serde_json::Value) -> Spec {
    serde_json::from_value(json).unwrap()
}

fn opts(rootfs: &Path) -> Opts<'_> {
    Opts {
        rootfs,
        bundle: Path::new("/b"),
        no_pivot: false,
        userns: false,
        cgroup: None,
    }
}

#[test]
fn options_split_into_flags_propagation_and_data() {
    let o = parse_options(&[
        "nosuid".into(),
        "ro".into(),
        "rw".into(),
        "rbind".into(),
        "rslave".into(),
        "mode=755".into(),
        "size=65536k".into(),
    ]);
    assert_eq!(
        o.flags,
        MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC
    );
    assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
}

#[test]
fn symlinks_cannot_escape_the_rootfs() {
    let r = Recorder::default();
    r.link("/r/etc", "../../../../host-etc");
    r.link("/r/abs", "/usr/lib");
    assert_eq!(
        resolve_in_root(&r, Path::new("/r"), Path::new("/etc/passwd")).unwrap(),
        Path::new("/r/host-etc/passwd")
    );
    assert_eq!(
        resolve_in_root(&r, Path::new("/r"), Path::new("/abs/x")).unwrap(),
        Path::new("/r/usr/lib/x")
    );
    r.link("/r/loop", "/loop");
    assert!(resolve_in_root(&r, Path::new("/r"), Path::new("/loop")).is_err());
}

#[test]
fn prepare_mounts_in_order_and_makes_devices() {
    let r = Recorder::default();
    r.dir("/host/data");
    let s = spec(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/data", "type": "bind", "source": "/host/data", "options": ["rbind", "ro", "rprivate"]}
        ],
        "linux": {"devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]}
    }));
    prepare(&r, &s, &opts(Path::new("/r"))).unwrap();
    let log = r.log.borrow().join("\n");
    let want = [
        "mount - / - MS_REC | MS_SLAVE -",
        "mount /r /r - MS_BIND | MS_REC -",
        "mount proc /r/proc proc (empty) -",
        "mount tmpfs /r/dev tmpfs MS_NOSUID mode=755",
        "mount /host/data /r/data - MS_BIND | MS_REC -",
        "mount - /r/data - MS_RDONLY | MS_REMOUNT | MS_BIND -",
        "mount - /r/data - MS_REC | MS_PRIVATE -",
        "mknod /r/dev/fuse 666 2789",
        "mknod /r/dev/null 666 259",
        "symlink /r/dev/ptmx -> pts/ptmx",
    ];
    let mut at = 0;
    for w in want {
        let i = log[at..]
            .find(w)
            .unwrap_or_else(|| panic!("missing or out of order: {w}\n{log}"));
        at += i + w.len();
    }
}

#[test]
fn finish_masks_and_remounts_readonly() {
    let r = Recorder::default();
    r.dir("/proc/acpi");
    r.fs.borrow_mut()
        .insert("/proc/kcore".into(), (Kind::File, None));
    r.dir("/proc/sys");
    let s = spec(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "linux": {"maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/missing"],
                  "readonlyPaths": ["/proc/sys"]}
    }));
    finish(&r, &s).unwrap();
    let log = r.log.borrow();
    assert_eq!(log[0], "mount tmpfs /proc/acpi tmpfs MS_RDONLY -");
    assert_eq!(log[1], "mount /dev/null /proc/kcore - MS_BIND -");
    assert_eq!(log[2], "mount /proc/sys /proc/sys - MS_BIND | MS_REC -");
    assert!(log[3].contains("MS_RDONLY") && log[3].contains("MS_REMOUNT"));
    assert_eq!(log[4], "mount - / - MS_RDONLY | MS_REMOUNT | MS_BIND -");
    assert_eq!(log.len(), 5);
}

#[test]
fn userns_binds_devices_instead_of_mknod() {
    let r = Recorder::default();
    let s = spec(serde_json::json!({"ociVersion": "1.0.2",
        "mounts": [{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}]}));
    let mut o = opts(Path::new("/r"));
    o.userns = true;
    prepare(&r, &s, &o).unwrap();
    let log = r.log.borrow().join("\n");
    assert!(
        log.contains("mount /dev/null /r/dev/null - MS_BIND -"),
        "{log}"
    );
    assert!(!log.contains("mknod"), "{log}");
}

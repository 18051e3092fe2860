//! The container's filesystem: propagation, the rootfs bind, config mounts,
//! devices, pivot_root (or chroot), masked and readonly paths.

use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::SFlag;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use crate::cgroups::{Cgroup, Layout};
use crate::error::{p, Error, Result};
use crate::sys::{Kind, Sys};

/// Inputs besides config.json.
pub struct Opts<'a> {
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// Absolute bundle path (relative bind sources are relative to it).
    pub bundle: &'a Path,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container has its own user namespace (no mknod; bind devices).
    pub userns: bool,
    /// The container's cgroup, for `cgroup` mounts.
    pub cgroup: Option<&'a Cgroup>,
}

/// Parsed mount options.
#[derive(Debug, PartialEq, Eq)]
pub struct MountOpts {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes to apply after mounting.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific data.
    pub data: Vec<String>,
}

/// Splits OCI mount options into flags, propagation and data.
pub fn parse_options(opts: &[String]) -> MountOpts {
    let mut m = MountOpts {
        flags: MsFlags::empty(),
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for o in opts {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                if let Some(f) = propagation(o) {
                    m.propagation.push(f);
                }
                continue;
            }
            "tmpcopyup" | "idmap" | "ridmap" => {
                tracing::warn!("mount option {o} is not supported; ignored");
                continue;
            }
            _ => {
                m.data.push(o.clone());
                continue;
            }
        };
        m.flags |= set;
        m.flags &= !clear;
    }
    m
}

/// Maps a propagation name to its flags.
pub fn propagation(name: &str) -> Option<MsFlags> {
    let r = MsFlags::MS_REC;
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | r,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | r,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | r,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | r,
        _ => return None,
    })
}

/// Resolves `path` inside `root`, following symlinks without escaping it.
pub fn resolve_in_root(sys: &dyn Sys, root: &Path, path: &Path) -> Result<PathBuf> {
    let mut parts: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(next) = parts.pop() {
        let mut comps: Vec<Component> = next.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir => cur = PathBuf::new(),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    cur.pop();
                }
                Component::Normal(n) => {
                    cur.push(n);
                    let full = root.join(&cur);
                    if sys.kind(&full) == Some(Kind::Symlink) {
                        links += 1;
                        if links > 40 {
                            return Err(Error::Config(format!(
                                "too many symlinks resolving {} in the rootfs",
                                p(path)
                            )));
                        }
                        let target = sys.readlink(&full).unwrap_or_default();
                        cur.pop();
                        let rest: PathBuf = comps.iter().rev().collect();
                        parts.push(rest);
                        parts.push(target);
                        comps.clear();
                    }
                }
            }
        }
    }
    Ok(root.join(cur))
}

/// Everything before pivot_root: propagation, the rootfs bind, mounts,
/// devices and /dev symlinks.
pub fn prepare(sys: &dyn Sys, spec: &Spec, o: &Opts) -> Result<()> {
    let linux = spec.linux().as_ref();
    let rprop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .map(|s| propagation(s).ok_or_else(|| Error::Config(format!("rootfsPropagation {s:?}"))))
        .transpose()?;
    // Keep host mounts from leaking in either direction; shared root
    // propagation is applied after pivot_root (pivot needs a non-shared parent).
    let root_flags = match rprop {
        Some(f) if !f.contains(MsFlags::MS_SHARED) => f,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    sys.mount(None, Path::new("/"), None, root_flags, None)?;
    sys.mount(
        Some(o.rootfs),
        o.rootfs,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let mut has_dev = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") {
            has_dev = true;
        }
        mount_one(sys, m, o)?;
    }
    if has_dev || spec.mounts().is_none() {
        devices(sys, spec, o)?;
    }
    Ok(())
}

fn mount_one(sys: &dyn Sys, m: &Mount, o: &Opts) -> Result<()> {
    let dest_rel = m.destination();
    if !dest_rel.is_absolute() {
        return Err(Error::Config(format!(
            "mount destination {} must be absolute",
            p(dest_rel)
        )));
    }
    let dest = resolve_in_root(sys, o.rootfs, dest_rel)?;
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
    let typ = m.typ().as_deref().unwrap_or("");
    let bind = typ == "bind" || opts.flags.contains(MsFlags::MS_BIND);
    let data = (!opts.data.is_empty()).then(|| opts.data.join(","));
    if bind {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| Error::Config(format!("bind mount on {} has no source", p(dest_rel))))?;
        let src = if src.is_absolute() {
            src.clone()
        } else {
            o.bundle.join(src)
        };
        match sys.kind(&src) {
            Some(Kind::Dir) => sys.mkdir_all(&dest)?,
            Some(_) => {
                if let Some(parent) = dest.parent() {
                    sys.mkdir_all(parent)?;
                }
                sys.touch(&dest)?;
            }
            None => {
                return Err(Error::Config(format!(
                    "bind mount source {} does not exist",
                    p(&src)
                )))
            }
        }
        let rec = opts.flags & MsFlags::MS_REC;
        sys.mount(Some(&src), &dest, None, MsFlags::MS_BIND | rec, None)?;
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let flags = extra | sys.locked_flags(&dest) | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
            sys.mount(None, &dest, None, flags, None)?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        sys.mkdir_all(&dest)?;
        mount_cgroup(sys, &dest, &opts, o)?;
    } else {
        sys.mkdir_all(&dest)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let fstype = (!typ.is_empty()).then_some(typ);
        let r = sys.mount(Some(&src), &dest, fstype, opts.flags, data.as_deref());
        match (r, typ) {
            (Ok(()), _) => {}
            // No sysfs/mqueue of our own without owning the net/ipc ns:
            // fall back to a recursive bind of the host's.
            (Err(e), "sysfs" | "mqueue") if e.errno() == Some(nix::Error::EPERM) => {
                let host = if typ == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                sys.mount(
                    Some(Path::new(host)),
                    &dest,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                let flags = (opts.flags & !MsFlags::MS_REMOUNT)
                    | sys.locked_flags(&dest)
                    | MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT;
                sys.mount(None, &dest, None, flags, None)?;
            }
            (Err(e), _) => return Err(e),
        }
    }
    for prop in &opts.propagation {
        sys.mount(None, &dest, None, *prop, None)?;
    }
    Ok(())
}

/// A `cgroup` mount: the container's own cgroup directories, read-only by
/// default, as a tmpfs of per-hierarchy binds (v1) or one bind (v2).
fn mount_cgroup(sys: &dyn Sys, dest: &Path, opts: &MountOpts, o: &Opts) -> Result<()> {
    let cg = o
        .cgroup
        .ok_or_else(|| Error::Config("a cgroup mount needs a cgroup".into()))?;
    let ro = opts.flags & MsFlags::MS_RDONLY;
    let bind_ro = |src: &Path, dst: &Path| -> Result<()> {
        sys.mkdir_all(dst)?;
        sys.mount(
            Some(src),
            dst,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let f = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | ro;
        sys.mount(None, dst, None, f, None)
    };
    match &cg.layout {
        Layout::V2 { root } => bind_ro(&root.join(&cg.rel), dest),
        Layout::V1 {
            hierarchies,
            unified,
        } => {
            let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            sys.mount(
                Some(Path::new("tmpfs")),
                dest,
                Some("tmpfs"),
                nosuid,
                Some("mode=755"),
            )?;
            for (ctrls, mnt) in hierarchies {
                let name = mnt
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(ctrls.join(",")));
                bind_ro(&mnt.join(&cg.rel), &dest.join(&name))?;
                if ctrls.len() > 1 {
                    for c in ctrls {
                        if Path::new(c) != name {
                            sys.symlink(&name, &dest.join(c))?;
                        }
                    }
                }
            }
            if let Some(u) = unified {
                bind_ro(&u.join(&cg.rel), &dest.join("unified"))?;
            }
            if ro.contains(MsFlags::MS_RDONLY) {
                sys.mount(
                    None,
                    dest,
                    None,
                    nosuid | MsFlags::MS_REMOUNT | ro,
                    Some("mode=755"),
                )?;
            }
            Ok(())
        }
    }
}

/// The devices every container gets (runc's list).
pub fn default_devices() -> Vec<(&'static str, u64, u64)> {
    vec![
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
}

fn devices(sys: &dyn Sys, spec: &Spec, o: &Opts) -> Result<()> {
    let mut list: Vec<LinuxDevice> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for (path, major, minor) in default_devices() {
        if !list.iter().any(|d| d.path() == Path::new(path)) {
            let d: LinuxDevice = serde_json::from_value(serde_json::json!({
                "path": path, "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
                "uid": 0, "gid": 0
            }))
            .map_err(|e| Error::Config(e.to_string()))?;
            list.push(d);
        }
    }
    for d in &list {
        if !d.path().starts_with("/dev") {
            return Err(Error::Config(format!(
                "device {} is outside /dev",
                p(d.path())
            )));
        }
        let dest = resolve_in_root(sys, o.rootfs, d.path())?;
        if let Some(parent) = dest.parent() {
            sys.mkdir_all(parent)?;
        }
        if o.userns {
            sys.touch(&dest)?;
            sys.mount(Some(d.path()), &dest, None, MsFlags::MS_BIND, None)?;
            continue;
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(Error::Config(format!("device {} has type a", p(d.path()))))
            }
        };
        let (maj, min) = (
            u64::try_from(d.major()).map_err(|_| Error::Config("negative device major".into()))?,
            u64::try_from(d.minor()).map_err(|_| Error::Config("negative device minor".into()))?,
        );
        let dev = nix::sys::stat::makedev(maj, min);
        sys.mknod(&dest, kind, d.file_mode().unwrap_or(0o666) & 0o7777, dev)?;
        sys.chown(&dest, d.uid().unwrap_or(0), d.gid().unwrap_or(0))?;
    }
    let dev = o.rootfs.join("dev");
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        sys.symlink(Path::new(target), &dev.join(link))?;
    }
    if sys.kind(&dev.join("ptmx")).is_none() {
        sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    }
    Ok(())
}

/// pivot_root (or chroot with `--no-pivot`) into the rootfs.
pub fn enter(sys: &dyn Sys, o: &Opts) -> Result<()> {
    if o.no_pivot {
        sys.move_chroot(o.rootfs)
    } else {
        sys.pivot(o.rootfs)
    }
}

/// After pivot_root: masked paths, readonly paths, readonly root and the
/// root's propagation.
pub fn finish(sys: &dyn Sys, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    for m in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let path = Path::new(m);
        match sys.kind(path) {
            None => continue,
            Some(Kind::Dir) => sys.mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            Some(_) => sys.mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    for r in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let path = Path::new(r);
        if sys.kind(path).is_none() {
            continue;
        }
        sys.mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        let f = sys.locked_flags(path)
            | MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_REC;
        sys.mount(None, path, None, f, None)?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let f = sys.locked_flags(Path::new("/"))
            | MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY;
        sys.mount(None, Path::new("/"), None, f, None)?;
    }
    if let Some(s) = linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        if let Some(f) = propagation(s) {
            sys.mount(None, Path::new("/"), None, f, None)?;
        }
    }
    Ok(())
}

/// Unmount helper used on error paths.
pub fn detach(sys: &dyn Sys, path: &Path) {
    let _ = sys.umount(path, MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests;

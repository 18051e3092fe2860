//! Loading and validating config.json before anything is created.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};

use crate::error::{p, Error, Result};
use crate::{caps, seccomp};

/// Loads `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        ctx: format!("reading {}", p(&path)),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p(&path))))
}

/// The rootfs, absolute.
pub fn rootfs(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::Config("root is missing".into()))?;
    let r = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !r.is_dir() {
        return Err(Error::Config(format!(
            "root.path {} is not a directory",
            p(&r)
        )));
    }
    Ok(r)
}

/// Namespaces the spec lists, as a set of types.
pub fn ns_types(spec: &Spec) -> HashSet<LinuxNamespaceType> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .map(|n| n.typ())
        .collect()
}

/// Maps an rlimit type to the resource number.
pub fn rlimit_resource(t: PosixRlimitType) -> Option<i32> {
    use PosixRlimitType as R;
    Some(match t {
        R::RlimitCpu => libc::RLIMIT_CPU as i32,
        R::RlimitFsize => libc::RLIMIT_FSIZE as i32,
        R::RlimitData => libc::RLIMIT_DATA as i32,
        R::RlimitStack => libc::RLIMIT_STACK as i32,
        R::RlimitCore => libc::RLIMIT_CORE as i32,
        R::RlimitRss => libc::RLIMIT_RSS as i32,
        R::RlimitNproc => libc::RLIMIT_NPROC as i32,
        R::RlimitNofile => libc::RLIMIT_NOFILE as i32,
        R::RlimitMemlock => libc::RLIMIT_MEMLOCK as i32,
        R::RlimitAs => libc::RLIMIT_AS as i32,
        R::RlimitLocks => libc::RLIMIT_LOCKS as i32,
        R::RlimitSigpending => libc::RLIMIT_SIGPENDING as i32,
        R::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE as i32,
        R::RlimitNice => libc::RLIMIT_NICE as i32,
        R::RlimitRtprio => libc::RLIMIT_RTPRIO as i32,
        R::RlimitRttime => libc::RLIMIT_RTTIME as i32,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Host facts the validation depends on (substitutable in tests).
pub struct Host {
    /// AppArmor is enabled.
    pub apparmor: bool,
    /// SELinux is enabled.
    pub selinux: bool,
    /// CAP_SYS_RESOURCE is in our effective set.
    pub sys_resource: bool,
    /// Current hard limit of a resource.
    pub hard_limit: fn(i32) -> u64,
}

impl Host {
    /// The running host.
    pub fn current() -> Host {
        let eff = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(0);
        Host {
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|s| s.trim() == "Y"),
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
            sys_resource: eff & (1 << 24) != 0,
            hard_limit: |res| {
                let mut r = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes into the local struct.
                let rc = unsafe { libc::getrlimit(res as _, &mut r) };
                if rc == 0 {
                    r.rlim_max
                } else {
                    u64::MAX
                }
            },
        }
    }
}

/// Checks everything that can be checked before creating anything.
pub fn validate(spec: &Spec, bundle: &Path, host: &Host) -> Result<()> {
    let v = spec.version();
    if !v.starts_with("1.") {
        return Err(Error::Config(format!("unsupported ociVersion {v:?}")));
    }
    rootfs(spec, bundle)?;
    let proc_ = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("process is missing".into()))?;
    validate_process(proc_, host)?;
    let Some(linux) = spec.linux() else {
        return Err(Error::Config("linux section is missing".into()));
    };
    let mut seen = HashSet::new();
    for ns in linux.namespaces().iter().flatten() {
        if !seen.insert(ns.typ()) {
            return Err(Error::Config(format!(
                "namespace {:?} listed twice",
                ns.typ()
            )));
        }
        if let Some(path) = ns.path() {
            if !path.exists() {
                return Err(Error::Config(format!(
                    "namespace path {} does not exist",
                    p(path)
                )));
            }
        }
    }
    let has = |t| seen.contains(&t);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let new_user = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    if maps && !has(LinuxNamespaceType::User) {
        return Err(Error::Config(
            "uid/gid mappings need a user namespace".into(),
        ));
    }
    if new_user && !maps {
        return Err(Error::Config(
            "a new user namespace needs uidMappings and gidMappings".into(),
        ));
    }
    if spec.hostname().is_some() && !has(LinuxNamespaceType::Uts) {
        return Err(Error::Config("hostname needs a uts namespace".into()));
    }
    if spec.domainname().is_some() && !has(LinuxNamespaceType::Uts) {
        return Err(Error::Config("domainname needs a uts namespace".into()));
    }
    for (k, _) in linux.sysctl().iter().flatten() {
        let ipc = k.starts_with("fs.mqueue.")
            || [
                "kernel.msgmax",
                "kernel.msgmnb",
                "kernel.msgmni",
                "kernel.sem",
                "kernel.shmall",
                "kernel.shmmax",
                "kernel.shmmni",
                "kernel.shm_rmid_forced",
            ]
            .contains(&k.as_str());
        let ok = if ipc {
            has(LinuxNamespaceType::Ipc)
        } else if k.starts_with("net.") {
            has(LinuxNamespaceType::Network)
        } else if k == "kernel.hostname" || k == "kernel.domainname" {
            has(LinuxNamespaceType::Uts)
        } else {
            false
        };
        if !ok || k.contains('/') || k.contains("..") {
            return Err(Error::Config(format!(
                "sysctl {k} is not namespaced by this container's namespaces"
            )));
        }
    }
    if linux.time_offsets().is_some() && !has(LinuxNamespaceType::Time) {
        return Err(Error::Config("timeOffsets need a time namespace".into()));
    }
    if let Some(label) = linux.mount_label() {
        if !host.selinux {
            return Err(Error::Unsupported(format!(
                "mountLabel {label:?}: SELinux is not enabled on this host"
            )));
        }
    }
    if linux.intel_rdt().is_some() {
        return Err(Error::Unsupported("intelRdt".into()));
    }
    if linux.personality().is_some() {
        return Err(Error::Unsupported("linux.personality".into()));
    }
    if linux.memory_policy().is_some() {
        return Err(Error::Unsupported("linux.memoryPolicy".into()));
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(Error::Unsupported("linux.netDevices".into()));
    }
    if let Some(s) = linux.seccomp() {
        let arch = seccomp::Arch::native()
            .ok_or_else(|| Error::Unsupported("seccomp on this architecture".into()))?;
        seccomp::compile(s, arch)?;
    }
    if let Some(r) = linux.rootfs_propagation() {
        if crate::rootfs::propagation(r).is_none() {
            return Err(Error::Config(format!("rootfsPropagation {r:?}")));
        }
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(Error::Config(format!(
                "mount destination {} must be absolute",
                p(m.destination())
            )));
        }
    }
    Ok(())
}

/// Checks the process section (also used by `exec --process`).
pub fn validate_process(proc_: &oci_spec::runtime::Process, host: &Host) -> Result<()> {
    if proc_.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Config("process.args must not be empty".into()));
    }
    if !proc_.cwd().is_absolute() {
        return Err(Error::Config(format!(
            "process.cwd {} must be absolute",
            p(proc_.cwd())
        )));
    }
    if let Some(prof) = proc_.apparmor_profile().as_ref().filter(|s| !s.is_empty()) {
        if !host.apparmor {
            return Err(Error::Unsupported(format!(
                "apparmorProfile {prof:?}: AppArmor is not enabled on this host"
            )));
        }
        return Err(Error::Unsupported(
            "apparmorProfile (not implemented yet)".into(),
        ));
    }
    if let Some(l) = proc_.selinux_label().as_ref().filter(|s| !s.is_empty()) {
        if !host.selinux {
            return Err(Error::Unsupported(format!(
                "selinuxLabel {l:?}: SELinux is not enabled on this host"
            )));
        }
        return Err(Error::Unsupported(
            "selinuxLabel (not implemented yet)".into(),
        ));
    }
    if let Some(c) = proc_.capabilities() {
        caps::CapSets::from_oci(c)?;
    }
    let mut seen = HashSet::new();
    for r in proc_.rlimits().iter().flatten() {
        let res = rlimit_resource(r.typ())
            .ok_or_else(|| Error::Unsupported(format!("rlimit {:?}", r.typ())))?;
        if !seen.insert(res) {
            return Err(Error::Config(format!("rlimit {:?} listed twice", r.typ())));
        }
        if r.soft() > r.hard() {
            return Err(Error::Config(format!(
                "rlimit {:?}: soft {} exceeds hard {}",
                r.typ(),
                r.soft(),
                r.hard()
            )));
        }
        let cur = (host.hard_limit)(res);
        if r.hard() > cur && !host.sys_resource {
            return Err(Error::Unsupported(format!(
                "rlimit {:?}: hard limit {} exceeds the host's {} and CAP_SYS_RESOURCE is not available to raise it",
                r.typ(),
                r.hard(),
                cur
            )));
        }
    }
    if proc_.io_priority().is_some() {
        return Err(Error::Unsupported("process.ioPriority".into()));
    }
    if proc_.scheduler().is_some() {
        return Err(Error::Unsupported("process.scheduler".into()));
    }
    if proc_.exec_cpu_affinity().is_some() {
        return Err(Error::Unsupported("process.execCPUAffinity".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

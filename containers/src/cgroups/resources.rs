//! OCI `linux.resources` to cgroup file writes, for v1 and v2.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::Cgroup;
use crate::error::{p, Context, Error, Result};

/// One write: `value` into `file` of `controller`'s directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    /// v1 controller (on v2 only used to pick nothing: one directory).
    pub controller: &'static str,
    /// File name inside the cgroup directory.
    pub file: String,
    /// Value to write.
    pub value: String,
    /// Skip silently when the file does not exist (optional kernel features).
    pub optional: bool,
}

fn w(controller: &'static str, file: impl Into<String>, value: impl ToString) -> FileWrite {
    FileWrite {
        controller,
        file: file.into(),
        value: value.to_string(),
        optional: false,
    }
}

fn opt(mut f: FileWrite) -> FileWrite {
    f.optional = true;
    f
}

/// A device cgroup rule in the kernel's v1 syntax: `c 1:3 rwm`.
pub fn device_rule(d: &LinuxDeviceCgroup) -> Result<String> {
    let t = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::P => {
            return Err(Error::Config(
                "device cgroup rules cannot name fifos (type p)".into(),
            ))
        }
    };
    let num = |v: Option<i64>| v.map_or("*".to_string(), |n| n.to_string());
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(Error::Config(format!(
            "device cgroup access {access:?} must be made of r, w, m"
        )));
    }
    Ok(format!(
        "{t} {}:{} {access}",
        num(d.major()),
        num(d.minor())
    ))
}

/// Translates resources into writes (pure: unit-tested without root).
pub fn plan(r: &LinuxResources, v2: bool) -> Result<Vec<FileWrite>> {
    if v2 {
        plan_v2(r)
    } else {
        plan_v1(r)
    }
}

fn plan_v1(r: &LinuxResources) -> Result<Vec<FileWrite>> {
    let mut out = Vec::new();
    if let Some(devs) = r.devices() {
        for d in devs {
            let rule = device_rule(d)?;
            let file = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            out.push(w("devices", file, rule));
        }
    }
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            out.push(w("memory", "memory.limit_in_bytes", l));
        }
        if let Some(s) = m.swap() {
            out.push(w("memory", "memory.memsw.limit_in_bytes", s));
        }
        if let Some(v) = m.reservation() {
            out.push(w("memory", "memory.soft_limit_in_bytes", v));
        }
        if let Some(v) = m.swappiness() {
            if v > 100 {
                return Err(Error::Config(format!("memory swappiness {v} exceeds 100")));
            }
            out.push(w("memory", "memory.swappiness", v));
        }
        if m.disable_oom_killer() == Some(true) {
            out.push(w("memory", "memory.oom_control", 1));
        }
        if m.kernel().is_some() || m.kernel_tcp().is_some() {
            tracing::warn!("kernel memory limits do not exist on this kernel; ignored");
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(v) = c.shares() {
            out.push(w("cpu", "cpu.shares", v));
        }
        if let Some(v) = c.period() {
            out.push(w("cpu", "cpu.cfs_period_us", v));
        }
        if let Some(v) = c.quota() {
            out.push(w("cpu", "cpu.cfs_quota_us", v));
        }
        if let Some(v) = c.realtime_period() {
            out.push(w("cpu", "cpu.rt_period_us", v));
        }
        if let Some(v) = c.realtime_runtime() {
            out.push(w("cpu", "cpu.rt_runtime_us", v));
        }
        if let Some(v) = c.cpus() {
            out.push(w("cpuset", "cpuset.cpus", v));
        }
        if let Some(v) = c.mems() {
            out.push(w("cpuset", "cpuset.mems", v));
        }
    }
    if let Some(pids) = r.pids() {
        let l = pids.limit();
        out.push(w(
            "pids",
            "pids.max",
            if l > 0 { l.to_string() } else { "max".into() },
        ));
    }
    if let Some(b) = r.block_io() {
        if let Some(v) = b.weight() {
            out.push(w("blkio", "blkio.weight", v));
        }
        if let Some(v) = b.leaf_weight() {
            out.push(w("blkio", "blkio.leaf_weight", v));
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(wt) = d.weight() {
                out.push(w(
                    "blkio",
                    "blkio.weight_device",
                    format!("{}:{} {wt}", d.major(), d.minor()),
                ));
            }
        }
        let th = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
            ),
        ];
        for (list, file) in th {
            for d in list.iter().flatten() {
                out.push(w(
                    "blkio",
                    file,
                    format!("{}:{} {}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.limit_in_bytes", h.page_size()),
            h.limit(),
        ));
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            out.push(w("net_cls", "net_cls.classid", id));
        }
        for pr in n.priorities().iter().flatten() {
            out.push(w(
                "net_prio",
                "net_prio.ifpriomap",
                format!("{} {}", pr.name(), pr.priority()),
            ));
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(Error::Unsupported(
            "linux.resources.unified needs cgroup v2; this host's controllers are v1".into(),
        ));
    }
    Ok(out)
}

fn plan_v2(r: &LinuxResources) -> Result<Vec<FileWrite>> {
    // Device rules become an eBPF program, not file writes (Cgroup::apply).
    let mut out = Vec::new();
    let max = |v: i64| {
        if v < 0 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit() {
            out.push(w("memory", "memory.max", max(l)));
        }
        if let Some(s) = m.swap() {
            // OCI swap is memory+swap; v2 limits swap alone.
            let v = match (s, m.limit()) {
                (s, _) if s < 0 => "max".into(),
                (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            out.push(w("memory", "memory.swap.max", v));
        }
        if let Some(v) = m.reservation() {
            out.push(w("memory", "memory.low", max(v)));
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(Error::Unsupported(
                "disableOOMKiller does not exist on cgroup v2".into(),
            ));
        }
        if m.swappiness().is_some() {
            tracing::warn!("memory swappiness does not exist on cgroup v2; ignored");
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(s) = c.shares().filter(|s| *s > 0) {
            let weight = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
            out.push(w("cpu", "cpu.weight", weight));
        }
        if c.quota().is_some() || c.period().is_some() {
            let q = c
                .quota()
                .filter(|q| *q > 0)
                .map_or("max".into(), |q| q.to_string());
            out.push(w(
                "cpu",
                "cpu.max",
                format!("{q} {}", c.period().unwrap_or(100_000)),
            ));
        }
        if c.realtime_period().is_some() || c.realtime_runtime().is_some() {
            return Err(Error::Unsupported(
                "realtime cpu limits do not exist on cgroup v2".into(),
            ));
        }
        if let Some(v) = c.cpus() {
            out.push(w("cpuset", "cpuset.cpus", v));
        }
        if let Some(v) = c.mems() {
            out.push(w("cpuset", "cpuset.mems", v));
        }
        if let Some(v) = c.idle() {
            out.push(w("cpu", "cpu.idle", v));
        }
    }
    if let Some(pids) = r.pids() {
        out.push(w(
            "pids",
            "pids.max",
            max(if pids.limit() > 0 { pids.limit() } else { -1 }),
        ));
    }
    if let Some(b) = r.block_io() {
        if let Some(v) = b.weight() {
            out.push(opt(w("io", "io.bfq.weight", format!("default {v}"))));
            out.push(opt(w("io", "io.weight", format!("default {v}"))));
        }
        let th = [
            (b.throttle_read_bps_device(), "rbps"),
            (b.throttle_write_bps_device(), "wbps"),
            (b.throttle_read_iops_device(), "riops"),
            (b.throttle_write_iops_device(), "wiops"),
        ];
        for (list, key) in th {
            for d in list.iter().flatten() {
                out.push(w(
                    "io",
                    "io.max",
                    format!("{}:{} {key}={}", d.major(), d.minor(), d.rate()),
                ));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        out.push(w(
            "hugetlb",
            format!("hugetlb.{}.max", h.page_size()),
            h.limit(),
        ));
    }
    if r.network().is_some() {
        return Err(Error::Unsupported(
            "network class/priority resources do not exist on cgroup v2".into(),
        ));
    }
    if let Some(u) = r.unified() {
        let mut keys: Vec<_> = u.iter().collect();
        keys.sort();
        for (k, v) in keys {
            if k.contains('/') || k.starts_with('.') || !k.contains('.') {
                return Err(Error::Config(format!("invalid unified cgroup key {k:?}")));
            }
            out.push(w("unified", k.clone(), v));
        }
    }
    Ok(out)
}

/// Performs the writes. On v1, memory limit and memsw are written in the
/// order the kernel accepts (memsw must stay >= limit).
pub fn apply(cg: &Cgroup, writes: &[FileWrite]) -> Result<()> {
    let mut i = 0;
    while i < writes.len() {
        let cur = &writes[i];
        let next = writes.get(i + 1);
        if cur.file == "memory.limit_in_bytes"
            && next.is_some_and(|n| n.file == "memory.memsw.limit_in_bytes")
        {
            let next = next.unwrap_or(cur);
            if one(cg, cur).and_then(|_| one(cg, next)).is_err() {
                one(cg, next)?;
                one(cg, cur)?;
            }
            i += 2;
            continue;
        }
        one(cg, cur)?;
        i += 1;
    }
    Ok(())
}

fn one(cg: &Cgroup, fw: &FileWrite) -> Result<()> {
    let dir = cg.controller_dir(fw.controller)?;
    let path = dir.join(&fw.file);
    if !path.exists() {
        if fw.optional {
            return Ok(());
        }
        return Err(Error::Unsupported(format!(
            "cgroup file {} does not exist on this host",
            p(&path)
        )));
    }
    std::fs::write(&path, &fw.value).ctx(|| format!("writing {:?} to {}", fw.value, p(&path)))
}

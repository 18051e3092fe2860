//! Our own small cgroupfs layer: v1, v2 and the v1 + v2 "unified" hybrid,
//! detected at run time from /proc/self/mountinfo.
//!
//! Why not cgroups-rs: on the hybrid layout of this host we need exact
//! control over which hierarchies a container joins (every v1 hierarchy
//! plus membership in the unified one), over cleanup after an interrupted
//! create, and over the file writes for unit tests on a temporary directory
//! (no root needed). Translating OCI resources into file writes is a pure
//! function ([`resources::plan`]), which keeps this layer small.

pub mod bpf;
pub mod resources;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::error::{p, Context, Error, Result};
pub use resources::{plan, FileWrite};

/// Environment variable naming a cgroup2 mount point to manage as pure
/// cgroup v2 (see [`Layout::detect`]).
pub const V2_ROOT_ENV: &str = "ZVISOR_CGROUP2_ROOT";

/// Which cgroup hierarchies the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1 hierarchies, and possibly a v2 `unified` mount beside them.
    V1 {
        /// (controllers of the hierarchy, mount point).
        hierarchies: Vec<(Vec<String>, PathBuf)>,
        /// The cgroup2 mount of a hybrid layout.
        unified: Option<PathBuf>,
    },
    /// Pure cgroup v2.
    V2 {
        /// The cgroup2 mount point.
        root: PathBuf,
    },
}

impl Layout {
    /// Detects the layout of the calling process's mount namespace.
    ///
    /// With [`V2_ROOT_ENV`] set to a cgroup2 mount point, that mount is
    /// used as a pure v2 hierarchy even on a hybrid host (the tests use
    /// this to run the v2 path, eBPF device filter included, on this
    /// hybrid host; nothing else should need it).
    pub fn detect() -> Result<Layout> {
        let mi = fs::read_to_string("/proc/self/mountinfo").ctx(|| "reading mountinfo")?;
        let l = Self::from_mountinfo(&mi)?;
        match std::env::var_os(V2_ROOT_ENV) {
            Some(root) if !root.is_empty() => l.forced_v2(Path::new(&root)),
            _ => Ok(l),
        }
    }

    /// This layout's cgroup2 mount `root` as a pure v2 layout.
    pub fn forced_v2(self, root: &Path) -> Result<Layout> {
        let v2 = match &self {
            Layout::V2 { root } => Some(root),
            Layout::V1 { unified, .. } => unified.as_ref(),
        };
        if v2.map(|r| r.as_path()) != Some(root) {
            return Err(Error::Config(format!(
                "{V2_ROOT_ENV}={} is not this host's cgroup2 mount point ({})",
                p(root),
                v2.map_or("none".into(), |r| p(r))
            )));
        }
        Ok(Layout::V2 {
            root: root.to_path_buf(),
        })
    }

    /// Parses /proc/self/mountinfo text.
    pub fn from_mountinfo(text: &str) -> Result<Layout> {
        let mut v1 = Vec::new();
        let mut v2: Vec<PathBuf> = Vec::new();
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mnt) = pre.split(' ').nth(4) else {
                continue;
            };
            let mut post = post.split(' ');
            let (fstype, _src, opts) = (post.next(), post.next(), post.next().unwrap_or(""));
            let mnt = PathBuf::from(unescape(mnt));
            match fstype {
                Some("cgroup2") => v2.push(mnt),
                Some("cgroup") => {
                    let ctrls: Vec<String> = opts
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .filter(|o| {
                            !matches!(
                                *o,
                                "nosuid"
                                    | "nodev"
                                    | "noexec"
                                    | "relatime"
                                    | "clone_children"
                                    | "noprefix"
                                    | "xattr"
                                    | "cpuset_v2_mode"
                            )
                        })
                        .map(str::to_string)
                        .collect();
                    if !ctrls.is_empty() {
                        v1.push((ctrls, mnt));
                    }
                }
                _ => {}
            }
        }
        if v1.is_empty() {
            let root = v2
                .into_iter()
                .next()
                .ok_or_else(|| Error::Unsupported("no cgroup filesystem is mounted".into()))?;
            return Ok(Layout::V2 { root });
        }
        Ok(Layout::V1 {
            hierarchies: v1,
            unified: v2.into_iter().next(),
        })
    }

    /// True for pure cgroup v2.
    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// One container's cgroup across all hierarchies.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// The host layout.
    pub layout: Layout,
    /// Path relative to each hierarchy's root.
    pub rel: PathBuf,
}

/// Normalises an OCI cgroupsPath to a path relative to hierarchy roots.
pub fn rel_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let raw = match cgroups_path {
        Some(c) => c.to_path_buf(),
        None => Path::new("zvisor-runc").join(id),
    };
    let s = raw.to_string_lossy();
    if s.contains(':') {
        return Err(Error::Unsupported(format!(
            "cgroupsPath {s:?} is in systemd slice:prefix:name form; only cgroupfs paths are supported"
        )));
    }
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::RootDir | std::path::Component::CurDir => {}
            _ => {
                return Err(Error::Config(format!(
                    "cgroupsPath {s:?} must not contain '..'"
                )))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::Config(
            "cgroupsPath must not be the root cgroup".into(),
        ));
    }
    Ok(out)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).ctx(|| format!("writing {value:?} to {}", p(path)))
}

impl Cgroup {
    /// A handle; nothing is created yet.
    pub fn new(layout: Layout, rel: PathBuf) -> Cgroup {
        Cgroup { layout, rel }
    }

    /// All directories of this cgroup (one per hierarchy).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => vec![root.join(&self.rel)],
            Layout::V1 {
                hierarchies,
                unified,
            } => hierarchies
                .iter()
                .map(|(_, m)| m.join(&self.rel))
                .chain(unified.iter().map(|u| u.join(&self.rel)))
                .collect(),
        }
    }

    /// The directory holding `controller`'s files.
    pub fn controller_dir(&self, controller: &str) -> Result<PathBuf> {
        match &self.layout {
            Layout::V2 { root } => Ok(root.join(&self.rel)),
            Layout::V1 { hierarchies, .. } => hierarchies
                .iter()
                .find(|(c, _)| c.iter().any(|x| x == controller))
                .map(|(_, m)| m.join(&self.rel))
                .ok_or_else(|| {
                    Error::Unsupported(format!(
                        "the {controller} cgroup controller is not mounted on this host"
                    ))
                }),
        }
    }

    /// The v1 hierarchy mount points with their controllers.
    pub fn v1_hierarchies(&self) -> Vec<(Vec<String>, PathBuf)> {
        match &self.layout {
            Layout::V1 { hierarchies, .. } => hierarchies.clone(),
            Layout::V2 { .. } => Vec::new(),
        }
    }

    /// Creates the directories (v1 cpuset: inherits cpus/mems level by level;
    /// v2: enables the parent's controllers level by level).
    pub fn create(&self) -> Result<()> {
        match &self.layout {
            Layout::V1 {
                hierarchies,
                unified,
            } => {
                for (ctrls, mnt) in hierarchies {
                    let cpuset = ctrls.iter().any(|c| c == "cpuset");
                    self.mkdirs(mnt, |parent, child| {
                        if cpuset {
                            for f in ["cpuset.cpus", "cpuset.mems"] {
                                let cur = fs::read_to_string(child.join(f)).unwrap_or_default();
                                if cur.trim().is_empty() {
                                    let v = fs::read_to_string(parent.join(f))
                                        .ctx(|| format!("reading {}", p(&parent.join(f))))?;
                                    write(&child.join(f), v.trim())?;
                                }
                            }
                        }
                        Ok(())
                    })?;
                }
                if let Some(u) = unified {
                    self.mkdirs(u, |_, _| Ok(()))?;
                }
            }
            Layout::V2 { root } => {
                self.mkdirs(root, |parent, _| {
                    let avail =
                        fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
                    let want: Vec<String> = avail
                        .split_whitespace()
                        .filter(|c| {
                            matches!(*c, "cpu" | "cpuset" | "memory" | "pids" | "io" | "hugetlb")
                        })
                        .map(|c| format!("+{c}"))
                        .collect();
                    if !want.is_empty() {
                        // Best effort: a parent with processes cannot delegate.
                        let _ = fs::write(parent.join("cgroup.subtree_control"), want.join(" "));
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn mkdirs(&self, base: &Path, mut each: impl FnMut(&Path, &Path) -> Result<()>) -> Result<()> {
        let mut cur = base.to_path_buf();
        for c in self.rel.components() {
            let parent = cur.clone();
            cur.push(c);
            if !cur.exists() || cur == base.join(&self.rel) {
                each_mkdir(&cur)?;
                each(&parent, &cur)?;
            }
        }
        Ok(())
    }

    /// Moves a process into every hierarchy.
    pub fn add(&self, pid: i32) -> Result<()> {
        for d in self.dirs() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Applies resources (create or update). On v2, non-empty device rules
    /// replace the cgroup's eBPF device program (see [`bpf`]); without
    /// device rules the program stays as it is.
    pub fn apply(&self, res: &LinuxResources) -> Result<()> {
        let writes = plan(res, self.layout.is_v2())?;
        if let Layout::V2 { root } = &self.layout {
            let rules = res
                .devices()
                .iter()
                .flatten()
                .map(bpf::DevRule::from_oci)
                .collect::<Result<Vec<_>>>()?;
            if !rules.is_empty() {
                let ids = bpf::install(&root.join(&self.rel), &rules)?;
                tracing::debug!("device cgroup eBPF program(s) {ids:?} attached");
            }
        }
        resources::apply(self, &writes)
    }

    /// Pids in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        let d = self.member_dir();
        let s = match fs::read_to_string(d.join("cgroup.procs")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).ctx(|| format!("reading {}", p(&d.join("cgroup.procs")))),
        };
        Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn member_dir(&self) -> PathBuf {
        for c in ["pids", "freezer", "memory"] {
            if let Ok(d) = self.controller_dir(c) {
                if d.exists() {
                    return d;
                }
            }
        }
        self.dirs()
            .into_iter()
            .find(|d| d.exists())
            .unwrap_or_default()
    }

    /// Freezes (`true`) or thaws the cgroup and waits until it settles.
    pub fn set_frozen(&self, frozen: bool) -> Result<()> {
        let (file, val, done) = match &self.layout {
            Layout::V2 { .. } => ("cgroup.freeze", if frozen { "1" } else { "0" }, ""),
            Layout::V1 { .. } => (
                "freezer.state",
                if frozen { "FROZEN" } else { "THAWED" },
                if frozen { "FROZEN" } else { "THAWED" },
            ),
        };
        let d = self.controller_dir("freezer")?;
        write(&d.join(file), val)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.is_frozen()? == frozen || (done.is_empty() && !frozen) {
                return Ok(());
            }
            if !done.is_empty() {
                // v1 needs the write repeated while it is FREEZING.
                write(&d.join(file), val)?;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(Error::State(format!(
            "cgroup {} did not reach {val}",
            p(&self.rel)
        )))
    }

    /// True when the cgroup is frozen.
    pub fn is_frozen(&self) -> Result<bool> {
        let Ok(d) = self.controller_dir("freezer") else {
            return Ok(false);
        };
        Ok(match &self.layout {
            Layout::V2 { .. } => fs::read_to_string(d.join("cgroup.events"))
                .map(|s| s.lines().any(|l| l.trim() == "frozen 1"))
                .unwrap_or(false),
            Layout::V1 { .. } => fs::read_to_string(d.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .unwrap_or(false),
        })
    }

    /// SIGKILLs every process in the cgroup until it is empty.
    pub fn kill_all(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = self.procs()?;
            if procs.is_empty() {
                return Ok(());
            }
            let frozen = self.set_frozen(true).is_ok();
            for pid in &procs {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            if frozen {
                let _ = self.set_frozen(false);
            }
            if Instant::now() > deadline {
                return Err(Error::State(format!(
                    "processes {procs:?} survive SIGKILL in cgroup {}",
                    p(&self.rel)
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills what is left, detaches the v2 device programs and removes
    /// every directory.
    pub fn destroy(&self) -> Result<()> {
        self.kill_all()?;
        if let Layout::V2 { root } = &self.layout {
            let d = root.join(&self.rel);
            if d.exists() {
                if let Err(e) = bpf::remove_all(&d) {
                    // rmdir below releases them too, only later.
                    tracing::warn!("{e}");
                }
            }
        }
        for d in self.dirs() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e).ctx(|| format!("removing cgroup {}", p(&d))),
                }
            }
        }
        Ok(())
    }

    /// True when any of the directories exists.
    pub fn exists(&self) -> bool {
        self.dirs().iter().any(|d| d.exists())
    }
}

fn each_mkdir(d: &Path) -> Result<()> {
    match fs::create_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).ctx(|| format!("creating cgroup {}", p(d))),
    }
}

#[cfg(test)]
mod tests;

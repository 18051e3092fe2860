//! What runs inside the container's process (stage 1) before execve.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, setsid, Gid, Uid};
use oci_spec::runtime::{Process, Spec};

use crate::caps::{self, CapSets};
use crate::cgroups::Cgroup;
use crate::config::rlimit_resource;
use crate::error::{Context, Error, Result};
use crate::rootfs;
use crate::spawn::{Chan, Msg};
use crate::sys::RealSys;
use crate::{console, hooks, seccomp};

/// Inputs of the container's init.
pub struct InitCtx<'a> {
    /// The config.
    pub spec: &'a Spec,
    /// Absolute rootfs.
    pub rootfs: &'a Path,
    /// Absolute bundle.
    pub bundle: &'a Path,
    /// chroot instead of pivot_root.
    pub no_pivot: bool,
    /// New user namespace.
    pub userns: bool,
    /// New mount namespace.
    pub mntns: bool,
    /// New uts namespace.
    pub utsns: bool,
    /// The cgroup (for cgroup mounts).
    pub cgroup: Option<&'a Cgroup>,
    /// O_PATH fd of the exec fifo.
    pub fifo: RawFd,
    /// Connected console socket, for a terminal.
    pub console: Option<OwnedFd>,
    /// Extra fds (3..3+n) passed through.
    pub preserve_fds: i32,
}

fn report(chan: &Chan, e: Error) -> i32 {
    let _ = chan.send(&Msg::Error(e.chain()));
    1
}

/// Stage 1 of `create`. Never returns on success (it execs).
pub fn container_init(chan: Chan, ctx: &InitCtx) -> i32 {
    let r = container_setup(&chan, ctx);
    match r {
        Ok(state) => {
            drop(chan);
            match after_start(ctx, &state) {
                Ok(never) => match never {},
                Err(e) => {
                    eprintln!("zvisor-runc init: {}", e.chain());
                    127
                }
            }
        }
        Err(e) => report(&chan, e),
    }
}

fn container_setup(chan: &Chan, ctx: &InitCtx) -> Result<String> {
    let spec = ctx.spec;
    let proc_ = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("no process".into()))?;
    setsid().ctx(|| "setsid")?;
    umask(Mode::empty());
    let sys = RealSys;
    let ropts = rootfs::Opts {
        rootfs: ctx.rootfs,
        bundle: ctx.bundle,
        no_pivot: ctx.no_pivot,
        userns: ctx.userns,
        cgroup: ctx.cgroup,
    };
    if ctx.mntns {
        rootfs::prepare(&sys, spec, &ropts)?;
    }
    chan.send(&Msg::Hooks)?;
    let state = match chan.expect("the runtime hooks")? {
        Msg::HooksDone(s) => s,
        m => return Err(Error::Child(format!("unexpected sync message {m:?}"))),
    };
    if let Some(h) = spec.hooks() {
        hooks::run(
            "createContainer",
            h.create_container().as_deref().unwrap_or(&[]),
            &state,
        )?;
    }
    if ctx.mntns {
        rootfs::enter(&sys, &ropts)?;
        // sysctls go in before /proc/sys turns read-only.
        if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
            for (k, v) in sysctl {
                let path = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
                std::fs::write(&path, v).ctx(|| format!("setting sysctl {k}={v}"))?;
            }
        }
        rootfs::finish(&sys, spec)?;
    } else {
        return Err(Error::Config("a mount namespace is required".into()));
    }
    if ctx.utsns {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).ctx(|| format!("sethostname {h}"))?;
        }
        if let Some(d) = spec.domainname() {
            let c = CString::new(d.as_str()).unwrap_or_default();
            // SAFETY: pointer and length of a live C string.
            let rc = unsafe { libc::setdomainname(c.as_ptr(), d.len()) };
            if rc < 0 {
                return Err(nix::Error::last()).ctx(|| format!("setdomainname {d}"));
            }
        }
    }
    common_setup(proc_, ctx.console.as_ref())?;
    resolve_exe(proc_)?;
    chan.send(&Msg::Ready)?;
    Ok(state)
}

/// Setup shared by create and exec: oom score, rlimits, the terminal.
fn common_setup(proc_: &Process, console_sock: Option<&OwnedFd>) -> Result<()> {
    if let Some(adj) = proc_.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("setting oom_score_adj {adj}"))?;
    }
    for r in proc_.rlimits().iter().flatten() {
        let res = rlimit_resource(r.typ())
            .ok_or_else(|| Error::Unsupported(format!("rlimit {:?}", r.typ())))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: setrlimit reads the local struct.
        let rc = unsafe { libc::setrlimit(res as _, &lim) };
        if rc < 0 {
            return Err(nix::Error::last()).ctx(|| {
                format!(
                    "setting rlimit {:?} to {}:{} (raising a hard limit needs CAP_SYS_RESOURCE)",
                    r.typ(),
                    r.soft(),
                    r.hard()
                )
            });
        }
    }
    if proc_.terminal() == Some(true) {
        let s = console_sock
            .ok_or_else(|| Error::Config("process.terminal needs --console-socket".into()))?;
        console::setup(s)?;
    }
    Ok(())
}

fn after_start(ctx: &InitCtx, state: &str) -> Result<std::convert::Infallible> {
    let path = format!("/proc/self/fd/{}", ctx.fifo);
    let fd = open(
        path.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "opening the exec fifo")?;
    // Kept open until execve, so move it above the preserved fds, which
    // `finalize` hands to the user process.
    let min = 3i32.saturating_add(ctx.preserve_fds.max(0));
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; integer arguments only.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if high < 0 {
        return Err(nix::Error::last()).ctx(|| "moving the exec fifo fd");
    }
    let _ = nix::unistd::close(fd);
    let fd = high;
    // The open returned, so `start` was called: startContainer hooks run
    // now, before `start` is told to go on. `fd` stays open (O_CLOEXEC)
    // until the user process is exec'd; `start` waits for that before its
    // poststart hooks, which the spec orders after the user process starts.
    let spec = ctx.spec;
    if let Some(h) = spec.hooks() {
        hooks::run(
            "startContainer",
            h.start_container().as_deref().unwrap_or(&[]),
            state,
        )?;
    }
    // SAFETY: fd was just opened; write one byte from a static buffer.
    let rc = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if rc < 0 {
        return Err(nix::Error::last()).ctx(|| "writing the exec fifo");
    }
    let _ = nix::unistd::close(ctx.fifo);
    let proc_ = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Config("no process".into()))?;
    finalize(proc_, spec, ctx.preserve_fds)
}

/// Stage 1 of `exec`: already in the container's namespaces.
pub fn exec_init(
    chan: Chan,
    proc_: &Process,
    spec: &Spec,
    console_sock: Option<OwnedFd>,
    preserve_fds: i32,
) -> i32 {
    let r = (|| -> Result<std::convert::Infallible> {
        setsid().ctx(|| "setsid")?;
        common_setup(proc_, console_sock.as_ref())?;
        drop(console_sock);
        resolve_exe(proc_)?;
        chan.send(&Msg::Ready)?;
        finalize(proc_, spec, preserve_fds)
    })();
    match r {
        Ok(never) => match never {},
        Err(e) => report(&chan, e),
    }
}

/// Finds the executable like execvp would, with the container's PATH.
fn resolve_exe(proc_: &Process) -> Result<PathBuf> {
    let args = proc_
        .args()
        .as_ref()
        .ok_or_else(|| Error::Config("no args".into()))?;
    let a0 = &args[0];
    let is_exe =
        |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && !p.is_dir();
    if a0.contains('/') {
        let p = if Path::new(a0).is_absolute() {
            PathBuf::from(a0)
        } else {
            proc_.cwd().join(a0)
        };
        return if is_exe(&p) {
            Ok(p)
        } else {
            Err(Error::Config(format!(
                "exec {a0}: not found or not executable in the container"
            )))
        };
    }
    let path = proc_
        .env()
        .iter()
        .flatten()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    path.split(':')
        .map(|d| Path::new(d).join(a0))
        .find(|p| is_exe(p))
        .ok_or_else(|| Error::Config(format!("exec {a0}: executable file not found in $PATH")))
}

fn close_extra_fds(keep_below: i32) {
    let Ok(rd) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd >= keep_below {
            // SAFETY: setting FD_CLOEXEC on an fd number; harmless if stale.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        } else if fd >= 3 {
            // SAFETY: clearing FD_CLOEXEC on a preserved fd.
            unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        }
    }
}

/// User, capabilities, no_new_privs, seccomp, then execve.
fn finalize(proc_: &Process, spec: &Spec, preserve_fds: i32) -> Result<std::convert::Infallible> {
    let exe = resolve_exe(proc_)?;
    chdir(proc_.cwd()).ctx(|| format!("chdir {}", proc_.cwd().display()))?;
    let nnp = proc_.no_new_privileges() == Some(true);
    let filter = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some(seccomp::compile(
            s,
            seccomp::Arch::native().ok_or_else(|| Error::Unsupported("seccomp arch".into()))?,
        )?),
        None => None,
    };
    let sets = proc_
        .capabilities()
        .as_ref()
        .map(CapSets::from_oci)
        .transpose()?;
    if let (Some(f), false) = (&filter, nnp) {
        seccomp::install(f)?;
    }
    if let Some(s) = &sets {
        caps::drop_bounding(s.bounding)?;
    }
    let user = proc_.user();
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids) {
        if !gids.is_empty() {
            return Err(e).ctx(|| "setgroups");
        }
    }
    let (uid, gid) = (Uid::from_raw(user.uid()), Gid::from_raw(user.gid()));
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setresgid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setresuid {uid}"))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(s) = &sets {
        caps::apply(s)?;
    }
    umask(Mode::from_bits_truncate(user.umask().unwrap_or(0o022)));
    if nnp {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc < 0 {
            return Err(nix::Error::last()).ctx(|| "setting no_new_privs");
        }
        if let Some(f) = &filter {
            seccomp::install(f)?;
        }
    }
    close_extra_fds(3 + preserve_fds);
    let cstr = |s: &str| CString::new(s).map_err(|_| Error::Config(format!("NUL in {s:?}")));
    let args: Vec<CString> = proc_
        .args()
        .iter()
        .flatten()
        .map(|a| cstr(a))
        .collect::<Result<_>>()?;
    let env: Vec<CString> = proc_
        .env()
        .iter()
        .flatten()
        .map(|a| cstr(a))
        .collect::<Result<_>>()?;
    let exe_c = cstr(&exe.to_string_lossy())?;
    let e = nix::unistd::execve(&exe_c, &args, &env).unwrap_err();
    Err(e).ctx(|| format!("exec {}", exe.display()))
}

/// Keeps the raw fd type in the public signature readable.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

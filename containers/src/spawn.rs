//! Creating the container's processes.
//!
//! The runtime forks stage 0, puts it into the cgroup, and lets it go.
//! Stage 0 joins namespaces given by path (the user namespace first),
//! unshares the new ones (the parent writes the uid/gid maps of a new user
//! namespace), then forks stage 1, which is PID 1 of a new pid namespace and
//! becomes the container's process. Stage 0 reports stage 1's pid and exits.
//! All messages travel over one SOCK_SEQPACKET socket pair.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{p, Context, Error, Result};

/// A sync message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Parent → stage 0: you are in the cgroup, go on.
    Go,
    /// Stage 0 → parent: write my uid/gid maps.
    MapUser,
    /// Parent → stage 0: maps written.
    Mapped,
    /// Stage 0 → parent: stage 1's pid.
    Pid(i32),
    /// Init → parent: run the prestart/createRuntime hooks now.
    Hooks,
    /// Parent → init: hooks done; the state JSON for the container hooks.
    HooksDone(String),
    /// Init → parent: created, now waiting for `start` (or exec: about to exec).
    Ready,
    /// Any stage → parent: failure.
    Error(String),
}

/// One end of the sync socket.
pub struct Chan(pub OwnedFd);

impl Chan {
    /// Sends a message.
    pub fn send(&self, m: &Msg) -> Result<()> {
        let b = serde_json::to_vec(m).map_err(|e| Error::Child(e.to_string()))?;
        send(self.0.as_raw_fd(), &b, MsgFlags::empty()).ctx(|| "sync socket send")?;
        Ok(())
    }

    /// Receives a message; `None` at end of file.
    pub fn recv(&self) -> Result<Option<Msg>> {
        let fd = self.0.as_raw_fd();
        let recv = |buf: &mut [u8], flags: MsgFlags| loop {
            match recv(fd, buf, flags) {
                Err(nix::Error::EINTR) => continue,
                r => break r.ctx(|| "sync socket receive"),
            }
        };
        // The message's length first (MSG_TRUNC reports it whole), so the
        // buffer is its size: a fixed 64 KiB one cost 16 zeroed pages in
        // every process of the runtime.
        let len = recv(&mut [], MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC)?;
        let mut buf = vec![0u8; len];
        let n = recv(&mut buf, MsgFlags::empty())?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n])
            .map(Some)
            .map_err(|e| Error::Child(format!("bad sync message: {e}")))
    }

    /// Receives a message and fails on EOF or an error report.
    pub fn expect(&self, what: &str) -> Result<Msg> {
        match self.recv()? {
            None => Err(Error::Child(format!(
                "container process exited before {what}"
            ))),
            Some(Msg::Error(e)) => Err(Error::Child(e)),
            Some(m) => Ok(m),
        }
    }
}

/// How to create the processes.
pub struct Opts<'a> {
    /// Namespaces to join by path, in order (user first).
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Namespaces to create.
    pub new: CloneFlags,
    /// uid_map and gid_map contents for a new user namespace.
    pub maps: Option<(String, String)>,
    /// Cgroup to put stage 0 into before it goes on.
    pub cgroup: Option<&'a Cgroup>,
    /// Contents for /proc/self/timens_offsets of a new time namespace.
    pub timens_offsets: Option<String>,
    /// Fds the container must not inherit (the state lock).
    pub close: Vec<std::os::fd::RawFd>,
}

/// Forks the stages; `init` runs in stage 1 and returns its exit code on
/// failure. Returns stage 1's pid and the parent's end of the socket.
pub fn spawn(o: &Opts, init: impl FnOnce(Chan) -> i32) -> Result<(i32, Chan)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .ctx(|| "creating the sync socket")?;
    // SAFETY: the runtime is single-threaded here, so the child may use
    // the allocator and anything else of the parent's state.
    match unsafe { fork() }.ctx(|| "fork")? {
        ForkResult::Child => {
            drop(a);
            for fd in &o.close {
                let _ = nix::unistd::close(*fd);
            }
            let chan = Chan(b);
            let code = match stage0(o, &chan) {
                Ok(Some(())) => init(chan),
                Ok(None) => 0,
                Err(e) => {
                    let _ = chan.send(&Msg::Error(e.chain()));
                    1
                }
            };
            // SAFETY: _exit ends this forked process without running the
            // parent's atexit handlers or destructors twice.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(b);
            let chan = Chan(a);
            let r = parent(o, &chan, child);
            let _ = waitpid(child, None);
            r.map(|pid| (pid, chan))
        }
    }
}

fn parent(o: &Opts, chan: &Chan, c0: Pid) -> Result<i32> {
    if let Some(cg) = o.cgroup {
        if let Err(e) = cg.add(c0.as_raw()) {
            let _ = nix::sys::signal::kill(c0, nix::sys::signal::Signal::SIGKILL);
            return Err(e);
        }
    }
    chan.send(&Msg::Go)?;
    loop {
        match chan.expect("reporting its pid")? {
            Msg::MapUser => {
                let (u, g) = o.maps.clone().unwrap_or_default();
                let base = PathBuf::from(format!("/proc/{}", c0.as_raw()));
                std::fs::write(base.join("uid_map"), &u)
                    .ctx(|| format!("writing uid_map {u:?}"))?;
                std::fs::write(base.join("gid_map"), &g)
                    .ctx(|| format!("writing gid_map {g:?}"))?;
                chan.send(&Msg::Mapped)?;
            }
            Msg::Pid(pid) => return Ok(pid),
            m => return Err(Error::Child(format!("unexpected sync message {m:?}"))),
        }
    }
}

/// Stage 0; `Some(())` in stage 1, `None` in stage 0 when done.
fn stage0(o: &Opts, chan: &Chan) -> Result<Option<()>> {
    if chan.expect("the go signal")? != Msg::Go {
        return Err(Error::Child("expected go".into()));
    }
    for (flag, path) in &o.join {
        let f = File::open(path).ctx(|| format!("opening namespace {}", p(path)))?;
        setns(f, *flag).ctx(|| format!("joining namespace {}", p(path)))?;
    }
    if o.new.contains(CloneFlags::CLONE_NEWUSER) {
        unshare(CloneFlags::CLONE_NEWUSER).ctx(|| "creating the user namespace")?;
        chan.send(&Msg::MapUser)?;
        if chan.expect("the uid maps")? != Msg::Mapped {
            return Err(Error::Child("expected mapped".into()));
        }
        // Root of the new namespace, if root is mapped.
        let _ = nix::unistd::setresgid(0.into(), 0.into(), 0.into());
        let _ = nix::unistd::setresuid(0.into(), 0.into(), 0.into());
    }
    let rest = o.new - CloneFlags::CLONE_NEWUSER;
    if !rest.is_empty() {
        unshare(rest).ctx(|| format!("creating namespaces {rest:?}"))?;
    }
    if let Some(off) = &o.timens_offsets {
        // Allowed only before any process lives in the new time namespace.
        std::fs::write("/proc/self/timens_offsets", off)
            .ctx(|| format!("writing time namespace offsets {off:?}"))?;
    }
    // Stage 1 waits on this pipe until its pid went out first, so the
    // parent sees Pid before anything stage 1 says.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx(|| "pipe")?;
    // SAFETY: stage 0 is single-threaded (a fork of a single-threaded process).
    match unsafe { fork() }.ctx(|| "fork of the container process")? {
        ForkResult::Child => {
            drop(wr);
            let mut b = [0u8; 1];
            loop {
                match nix::unistd::read(rd.as_raw_fd(), &mut b) {
                    Err(nix::Error::EINTR) => continue,
                    Ok(1) => break,
                    _ => return Err(Error::Child("stage 0 died".into())),
                }
            }
            Ok(Some(()))
        }
        ForkResult::Parent { child } => {
            drop(rd);
            chan.send(&Msg::Pid(child.as_raw()))?;
            nix::unistd::write(&wr, b"1").ctx(|| "releasing stage 1")?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_any_size_then_eof() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (a, b) = (Chan(a), Chan(b));
        let big = "x".repeat(100_000);
        a.send(&Msg::Pid(42)).unwrap();
        a.send(&Msg::HooksDone(big.clone())).unwrap();
        a.send(&Msg::Ready).unwrap();
        assert_eq!(b.recv().unwrap(), Some(Msg::Pid(42)));
        assert_eq!(b.recv().unwrap(), Some(Msg::HooksDone(big)));
        assert_eq!(b.expect("ready").unwrap(), Msg::Ready);
        a.send(&Msg::Error("boom".into())).unwrap();
        assert!(matches!(b.expect("x"), Err(Error::Child(e)) if e == "boom"));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
        assert!(b.expect("more").is_err());
    }
}

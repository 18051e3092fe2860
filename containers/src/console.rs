//! The terminal: a pty whose master goes to the caller's console socket.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;
use nix::unistd::dup2;

use crate::error::{Context, Result};

/// Opens a pty (in the container's /dev/ptmx), sends the master over
/// `socket`, and makes the slave our stdio and controlling terminal.
pub fn setup(socket: &OwnedFd) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "opening /dev/ptmx")?;
    grantpt(&master).ctx(|| "grantpt")?;
    unlockpt(&master).ctx(|| "unlockpt")?;
    let name = ptsname_r(&master).ctx(|| "ptsname")?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .ctx(|| format!("opening {name}"))?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .ctx(|| "sending the pty master to the console socket")?;
    drop(master);
    for fd in 0..3 {
        dup2(slave.as_raw_fd(), fd).ctx(|| "dup2 of the pty slave")?;
    }
    // SAFETY: TIOCSCTTY on our stdin (the pty slave), integer argument.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) };
    if rc < 0 {
        return Err(nix::Error::last()).ctx(|| "setting the controlling terminal");
    }
    Ok(())
}

//! `zvisor run` device options: `--disk`, `--net`, `--vsock`, `--console`,
//! `--rng`, turned into transport-neutral virtio device models.
//!
//! Every option is parsed before anything is opened, so a typo creates
//! nothing. Devices are then opened in an order where a later failure leaves
//! nothing behind: disks and the rng have no host-visible side effect, taps
//! opened by name are non-persistent (they vanish when their fd closes), and
//! the vsock socket comes last and is removed by [`SocketGuard`] on every way
//! out of `zvisor run`.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use zvisor_vmm::virtio::block::Block;
use zvisor_vmm::virtio::config::{
    parse_console, parse_disk, parse_net, parse_vsock, ConsoleKind, NetOptions, TapSpec,
    VsockOptions,
};
use zvisor_vmm::virtio::console::{Console, ConsoleBackend};
use zvisor_vmm::virtio::net::Net;
use zvisor_vmm::virtio::rng::Rng;
use zvisor_vmm::virtio::tap::Tap;
use zvisor_vmm::virtio::vsock::Vsock;
use zvisor_vmm::virtio::VirtioDevice;

/// The device options as given on the command line.
#[derive(Debug, Default)]
pub struct DeviceArgs {
    /// `--disk` values, in order (the first is `/dev/vda`).
    pub disks: Vec<String>,
    /// `--net` values, in order.
    pub nets: Vec<String>,
    /// `--vsock` value.
    pub vsock: Option<String>,
    /// `--console` value.
    pub console: Option<String>,
    /// `--rng`.
    pub rng: bool,
}

/// Removes the vsock listening socket when dropped.
#[derive(Debug, Default)]
pub struct SocketGuard(Option<PathBuf>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The opened devices and what must be cleaned up after the VM.
pub struct Devices {
    /// Device models, in guest order.
    pub devices: Vec<Box<dyn VirtioDevice>>,
    /// Whether the guest console is virtio (the serial port is then off).
    pub virtio_console: bool,
    /// Removes the vsock socket on drop.
    pub socket: SocketGuard,
}

/// Parses every option, then opens the devices.
pub fn open(args: &DeviceArgs) -> Result<Devices> {
    let disks = args
        .disks
        .iter()
        .map(|d| parse_disk(d))
        .collect::<Result<Vec<_>, _>>()?;
    let nets = args
        .nets
        .iter()
        .map(|n| parse_net(n))
        .collect::<Result<Vec<_>, _>>()?;
    let vsock = args.vsock.as_deref().map(parse_vsock).transpose()?;
    let console = args.console.as_deref().map(parse_console).transpose()?;
    let virtio_console = console == Some(ConsoleKind::Virtio);
    if let Some(v) = &vsock {
        // Refuse before anything is created; never replace someone's file.
        if v.socket.symlink_metadata().is_ok() {
            anyhow::bail!("--vsock: {} already exists", v.socket.display());
        }
    }

    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for d in &disks {
        devices.push(Box::new(Block::new(d).map_err(|e| anyhow!("--disk: {e}"))?));
    }
    for n in &nets {
        devices.push(Box::new(open_net(n)?));
    }
    if args.rng {
        devices.push(Box::new(Rng::new()));
    }
    if virtio_console {
        devices.push(Box::new(stdio_console()?));
    }
    let mut socket = SocketGuard::default();
    if let Some(VsockOptions { cid, socket: path }) = &vsock {
        let dev = Vsock::new(*cid, path).map_err(|e| anyhow!("--vsock: {e}"))?;
        socket.0 = Some(path.clone());
        devices.push(Box::new(dev));
    }
    Ok(Devices {
        devices,
        virtio_console,
        socket,
    })
}

fn open_net(n: &NetOptions) -> Result<Net> {
    let tap = match &n.tap {
        TapSpec::Name(name) => Tap::open(name).map_err(|e| anyhow!("--net: {e}"))?,
        TapSpec::Fd(fd) => {
            // Take a duplicate: the caller keeps its own descriptor.
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any integer is safe; it fails
            // with EBADF when `fd` is not open.
            let dup = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if dup < 0 {
                anyhow::bail!("--net: fd {fd}: {}", std::io::Error::last_os_error());
            }
            // SAFETY: `dup` is a fresh descriptor that nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(dup) };
            Tap::from_fd(owned).map_err(|e| anyhow!("--net: {e}"))?
        }
    };
    Net::new(tap, n.mac).map_err(|e| anyhow!("--net: {e}"))
}

/// Reopens fd `n` through /proc so that making it non-blocking does not
/// affect the terminal or pipe that the shell shares; falls back to a dup.
fn reopen(n: i32, write: bool) -> Result<OwnedFd> {
    let path = format!("/proc/self/fd/{n}");
    let f = if write {
        std::fs::OpenOptions::new().write(true).open(&path)
    } else {
        File::open(&path)
    };
    match f {
        Ok(f) => Ok(f.into()),
        Err(_) => {
            // SAFETY: dup of a standard descriptor; checked below.
            let d = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 3) };
            if d < 0 {
                anyhow::bail!(
                    "--console virtio: fd {n}: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: `d` is a fresh descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(d) })
        }
    }
}

/// Whether `fd` can be watched with epoll (pipes, terminals, sockets: yes;
/// regular files and /dev/null: no).
fn pollable(fd: &OwnedFd) -> bool {
    // SAFETY: plain syscalls on descriptors this function owns or borrows;
    // the event struct is a valid local.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if ep < 0 {
            return false;
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 0,
        };
        let ok = libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) == 0;
        libc::close(ep);
        ok
    }
}

/// A virtio-console on this process's stdin/stdout.
fn stdio_console() -> Result<Console> {
    let input = reopen(0, false)?;
    let input = pollable(&input).then_some(input);
    let output = reopen(1, true)?;
    Console::new(ConsoleBackend { input, output }).map_err(|e| anyhow!("--console virtio: {e}"))
}

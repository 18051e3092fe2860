//! `zvisor run` device options: `--disk`, `--net`, `--vsock`, `--console`,
//! `--channel`, `--rng`, turned into transport-neutral virtio device models.
//!
//! Every option is parsed and every socket path checked before anything is
//! opened, so a typo creates nothing. Devices are then opened in an order
//! where a later failure leaves nothing behind: disks and the rng have no
//! host-visible side effect, taps opened by name are non-persistent (they
//! vanish when their fd closes), the listening sockets (channels, vsock)
//! come next and are removed by [`SocketGuard`] on every way out of `zvisor
//! run`, and channel log files (created or truncated) come last.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use zvisor_vmm::virtio::block::Block;
use zvisor_vmm::virtio::config::{
    parse_channel, parse_console, parse_disk, parse_net, parse_vsock, ChannelHost, ConsoleKind,
    NetOptions, TapSpec, VsockOptions,
};
use zvisor_vmm::virtio::console::{Console, ConsoleBackend, PortHost, PortSpec, MAX_PORTS};
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
    /// `--channel` values, in order (consoles after `hvc0` if `--console virtio`).
    pub channels: Vec<String>,
    /// `--rng`.
    pub rng: bool,
}

/// Removes the listening sockets zvisor created (vsock, channels) when dropped.
#[derive(Debug, Default)]
pub struct SocketGuard(Vec<PathBuf>);

impl SocketGuard {
    /// The socket paths, for a signal handler that must exit early.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.0.clone()
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
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
    /// Removes the vsock and channel sockets on drop.
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
    let channels = args
        .channels
        .iter()
        .map(|c| parse_channel(c))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<&str> = channels.iter().filter_map(|c| c.name.as_deref()).collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            anyhow::bail!("--channel: name {n} given twice");
        }
    }
    if names.len() > MAX_PORTS {
        anyhow::bail!("--channel: at most {MAX_PORTS} named channels");
    }
    // Refuse before anything is created; never replace someone's file.
    let mut sockets: Vec<&Path> = Vec::new();
    for c in &channels {
        if let ChannelHost::Socket(p) = &c.host {
            if sockets.contains(&p.as_path()) {
                anyhow::bail!("--channel: socket {} given twice", p.display());
            }
            check_socket_path(p)?;
            sockets.push(p);
        }
    }
    if let Some(v) = &vsock {
        if sockets.contains(&v.socket.as_path()) {
            anyhow::bail!(
                "--vsock: socket {} is also a --channel socket",
                v.socket.display()
            );
        }
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
    // Sockets, then files: the guard undoes every socket if a later step fails.
    let mut socket = SocketGuard::default();
    let mut hosts: Vec<Option<PortHost>> = Vec::new();
    for c in &channels {
        hosts.push(match &c.host {
            ChannelHost::Socket(p) => Some(PortHost::Listen(listen_channel(p, &mut socket)?)),
            ChannelHost::File(_) => None,
        });
    }
    let mut vsock_dev = None;
    if let Some(VsockOptions { cid, socket: path }) = &vsock {
        let dev = Vsock::new(*cid, path).map_err(|e| anyhow!("--vsock: {e}"))?;
        socket.0.push(path.clone());
        vsock_dev = Some(dev);
    }
    for (c, slot) in channels.iter().zip(hosts.iter_mut()) {
        if let ChannelHost::File(p) = &c.host {
            *slot = Some(PortHost::Fds(file_channel(p)?));
        }
    }
    // Unnamed channels: one hvc console device each, in order; named ones:
    // ports of one multiport device after them.
    let mut ports = Vec::new();
    for (c, host) in channels.iter().zip(hosts) {
        let Some(host) = host else { continue };
        match &c.name {
            Some(name) => ports.push(PortSpec {
                name: name.clone(),
                host,
            }),
            None => {
                let dev = match host {
                    PortHost::Listen(l) => Console::listen(l),
                    PortHost::Fds(b) => Console::new(b),
                };
                devices.push(Box::new(dev.map_err(|e| anyhow!("--channel: {e}"))?));
            }
        }
    }
    if !ports.is_empty() {
        let dev = Console::multiport(ports).map_err(|e| anyhow!("--channel: {e}"))?;
        devices.push(Box::new(dev));
    }
    if let Some(dev) = vsock_dev {
        devices.push(Box::new(dev));
    }
    Ok(Devices {
        devices,
        virtio_console,
        socket,
    })
}

/// A channel socket path may be new, or a stale socket (nobody listens; it
/// is replaced); anything else is refused.
fn check_socket_path(p: &Path) -> Result<()> {
    let meta = match p.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("--channel: {}: {e}", p.display()),
    };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "--channel: {} already exists and is not a socket",
            p.display()
        );
    }
    match UnixStream::connect(p) {
        Ok(_) => anyhow::bail!(
            "--channel: {} is in use (something listens on it)",
            p.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => anyhow::bail!("--channel: {}: {e}", p.display()),
    }
}

/// Binds a channel's listening socket (replacing a stale one checked by
/// [`check_socket_path`]) and hands its removal to `guard`.
fn listen_channel(p: &Path, guard: &mut SocketGuard) -> Result<UnixListener> {
    if p.symlink_metadata().is_ok() {
        std::fs::remove_file(p).map_err(|e| anyhow!("--channel: {}: {e}", p.display()))?;
    }
    let l = UnixListener::bind(p).map_err(|e| anyhow!("--channel: {}: {e}", p.display()))?;
    guard.0.push(p.to_path_buf());
    Ok(l)
}

/// A channel that logs the guest's output to `p` (created or truncated);
/// the guest reads nothing.
fn file_channel(p: &Path) -> Result<ConsoleBackend> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // A FIFO without a reader fails (ENXIO) instead of hanging here.
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| anyhow!("--channel: {}: {e}", p.display()))?;
    Ok(ConsoleBackend {
        input: None,
        output: f.into(),
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

//! The host end of a console port: fixed descriptors (stdin/stdout, a log
//! file), or a listening Unix stream socket that serves one client at a
//! time and takes the next one after it leaves.
//!
//! Socket rules (documented in docs/virtio.md):
//! - No client: guest output is discarded (the buffers complete at once,
//!   like QEMU's `server=on,wait=off`), because Linux's hvc path busy-waits
//!   in the guest kernel for every output buffer to come back.
//! - A client: nothing is lost in either direction; a slow client holds the
//!   guest's output back (backpressure), a guest without receive buffers
//!   holds the client's input back.
//! - While a client is connected the listener is not watched: a second
//!   client waits in the listen backlog until the first leaves.
//! - A client that half-closes (`shutdown(SHUT_WR)`) still gets output; one
//!   that closes completely is dropped (after what it sent is passed on as
//!   far as the guest has receive buffers), then the next is accepted.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use vmm_sys_util::epoll::EventSet;

use super::super::worker::EpollCtl;

/// Epoll tokens of one port are `base + ROLE`: host input is readable
/// (fixed fds).
pub const INPUT: u64 = 0;
/// Host output is writable again (fixed fds).
pub const OUTPUT: u64 = 1;
/// A client is waiting on the listening socket.
pub const LISTEN: u64 = 2;
/// The connected client is readable, writable or gone.
pub const CLIENT: u64 = 3;
/// Tokens one port uses.
pub const ROLES: u64 = 4;

/// Where a port's bytes come from and go to.
pub enum Host {
    /// Fixed descriptors for the whole life of the device.
    Fds(FdHost),
    /// A listening socket and at most one client.
    Socket(SocketHost),
}

/// Fixed descriptors, non-blocking.
pub struct FdHost {
    input: Option<File>,
    output: File,
    input_eof: bool,
    watch_in: bool,
    watch_out: bool,
}

impl FdHost {
    /// A second handle on the output (for emergency writes).
    pub fn output_clone(&self) -> io::Result<File> {
        self.output.try_clone()
    }
}

/// A listening socket, non-blocking.
pub struct SocketHost {
    listener: UnixListener,
    listening: bool,
    client: Option<Client>,
}

struct Client {
    stream: UnixStream,
    /// The client may still send.
    in_open: bool,
    /// The client still takes output.
    out_open: bool,
    /// epoll reported a hang-up or an error.
    gone: bool,
    /// Events registered with epoll (always registered while connected, so
    /// a hang-up is seen even when nothing else is wanted).
    watched: Option<EventSet>,
}

impl Host {
    /// Fixed descriptors (already non-blocking).
    pub fn fds(input: Option<File>, output: File) -> Self {
        Host::Fds(FdHost {
            input,
            output,
            input_eof: false,
            watch_in: false,
            watch_out: false,
        })
    }

    /// A listening socket; made non-blocking here.
    pub fn socket(listener: UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Host::Socket(SocketHost {
            listener,
            listening: false,
            client: None,
        }))
    }

    /// Whether host input may still arrive now.
    pub fn input_open(&self) -> bool {
        match self {
            Host::Fds(f) => f.input.is_some() && !f.input_eof,
            Host::Socket(s) => s.client.as_ref().is_some_and(|c| c.in_open),
        }
    }

    /// Reads host input. `Ok(0)` for a non-empty `buf` means the input
    /// ended (it is then closed); `WouldBlock` means nothing yet.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self {
            Host::Fds(f) => {
                let Some(input) = f.input.as_mut() else {
                    return Ok(0);
                };
                let n = input.read(buf)?;
                if n == 0 {
                    f.input_eof = true;
                }
                Ok(n)
            }
            Host::Socket(s) => {
                let Some(c) = s.client.as_mut().filter(|c| c.in_open) else {
                    return Err(io::ErrorKind::WouldBlock.into());
                };
                match c.stream.read(buf) {
                    Ok(0) => {
                        c.in_open = false;
                        Ok(0)
                    }
                    Ok(n) => Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        Err(e)
                    }
                    Err(e) => {
                        tracing::debug!("virtio-console: client read failed: {e}");
                        c.in_open = false;
                        Ok(0)
                    }
                }
            }
        }
    }

    /// Writes guest output. `WouldBlock` means the host is slow (the caller
    /// keeps the rest); other errors mean this output is lost. Without a
    /// client (or after the client stopped reading) output is discarded.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Host::Fds(f) => f.output.write(buf),
            Host::Socket(s) => {
                let Some(c) = s.client.as_mut().filter(|c| c.out_open) else {
                    return Ok(buf.len());
                };
                match c.stream.write(buf) {
                    Ok(n) => Ok(n),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        Err(e)
                    }
                    Err(e) => {
                        tracing::debug!("virtio-console: client write failed: {e}");
                        c.out_open = false;
                        Ok(buf.len())
                    }
                }
            }
        }
    }

    /// Takes a waiting client if there is none yet.
    pub fn accept(&mut self) -> io::Result<()> {
        let Host::Socket(s) = self else {
            return Ok(());
        };
        if s.client.is_some() {
            return Ok(());
        }
        match s.listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                tracing::debug!("virtio-console: client connected");
                s.client = Some(Client {
                    stream,
                    in_open: true,
                    out_open: true,
                    gone: false,
                    watched: None,
                });
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// epoll reported a hang-up or an error on the client.
    pub fn client_gone(&mut self) {
        if let Host::Socket(SocketHost {
            client: Some(c), ..
        }) = self
        {
            c.gone = true;
        }
    }

    /// Drops the client once it is gone for good; `true` if it was dropped.
    pub fn settle(&mut self, ctl: &EpollCtl<'_>) -> io::Result<bool> {
        let Host::Socket(s) = self else {
            return Ok(false);
        };
        let Some(c) = &s.client else {
            return Ok(false);
        };
        if !(c.gone || (!c.in_open && !c.out_open)) {
            return Ok(false);
        }
        if c.watched.is_some() {
            ctl.delete(c.stream.as_raw_fd())?;
        }
        s.client = None;
        tracing::debug!("virtio-console: client disconnected");
        Ok(true)
    }

    /// Registers with epoll exactly what is wanted now: input while the
    /// guest has receive buffers (`rx_want`), output readiness while a chain
    /// waits (`tx_wait`), and the listener while there is no client.
    pub fn sync(
        &mut self,
        ctl: &EpollCtl<'_>,
        base: u64,
        rx_want: bool,
        tx_wait: bool,
    ) -> io::Result<()> {
        match self {
            Host::Fds(f) => {
                let want_in = f.input.is_some() && !f.input_eof && rx_want;
                if let Some(input) = &f.input {
                    toggle(
                        ctl,
                        input.as_raw_fd(),
                        base + INPUT,
                        EventSet::IN,
                        &mut f.watch_in,
                        want_in,
                    )?;
                }
                toggle(
                    ctl,
                    f.output.as_raw_fd(),
                    base + OUTPUT,
                    EventSet::OUT,
                    &mut f.watch_out,
                    tx_wait,
                )
            }
            Host::Socket(s) => {
                let want_listen = s.client.is_none();
                toggle(
                    ctl,
                    s.listener.as_raw_fd(),
                    base + LISTEN,
                    EventSet::IN,
                    &mut s.listening,
                    want_listen,
                )?;
                let Some(c) = s.client.as_mut() else {
                    return Ok(());
                };
                let mut ev = EventSet::empty();
                if c.in_open && rx_want {
                    ev |= EventSet::IN;
                }
                if c.out_open && tx_wait {
                    ev |= EventSet::OUT;
                }
                let fd = c.stream.as_raw_fd();
                match c.watched {
                    None => ctl.add(fd, base + CLIENT, ev)?,
                    Some(old) if old != ev => ctl.modify(fd, base + CLIENT, ev)?,
                    Some(_) => {}
                }
                c.watched = Some(ev);
                Ok(())
            }
        }
    }

    /// Whether the host end is there: always for fixed fds, while a client
    /// is connected for a socket.
    pub fn connected(&self) -> bool {
        match self {
            Host::Fds(_) => true,
            Host::Socket(s) => s.client.is_some(),
        }
    }

    /// Forgets epoll registrations (the worker's epoll is gone after a
    /// reset; the next worker registers afresh).
    pub fn forget_watches(&mut self) {
        match self {
            Host::Fds(f) => {
                f.watch_in = false;
                f.watch_out = false;
            }
            Host::Socket(s) => {
                s.listening = false;
                if let Some(c) = &mut s.client {
                    c.watched = None;
                }
            }
        }
    }
}

fn toggle(
    ctl: &EpollCtl<'_>,
    fd: RawFd,
    token: u64,
    ev: EventSet,
    state: &mut bool,
    on: bool,
) -> io::Result<()> {
    if *state == on {
        return Ok(());
    }
    if on {
        ctl.add(fd, token, ev)?;
    } else {
        ctl.delete(fd)?;
    }
    *state = on;
    Ok(())
}

//! virtio-console: `hvc0` as an alternative console, host↔guest byte
//! channels (one single-port device each, `hvcN` in the guest), and named
//! ports on one `VIRTIO_CONSOLE_F_MULTIPORT` device (`/dev/vportNpM`, with
//! `/sys/class/virtio-ports/vportNpM/name`), as guest agents use them.
//!
//! A port's host end ([`host::Host`]) is either a pair of fds (`input`: bytes
//! for the guest, must be pollable: a pipe, socket or tty; `output`: bytes
//! from the guest), or a listening Unix stream socket that serves one client
//! at a time and accepts the next one when it leaves. With multiport, the
//! driver learns from `PORT_OPEN` whether a client is connected (Linux then
//! blocks the guest's writes while none is, and reads see end-of-file).
//! `VIRTIO_CONSOLE_F_EMERG_WRITE` is offered so early output works too (to
//! the output fd of a single-port fd console; dropped otherwise).

mod control;
mod handler;
mod host;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use super::worker::{self, Worker};
use super::{features, types, ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt};
use crate::memory::GuestMemory;
pub use control::valid_name;
use handler::{ConsoleHandler, Port};
use host::Host;

/// Multiple ports with a control queue pair.
pub const F_MULTIPORT: u64 = 1 << 1;
/// Emergency write through config space.
pub const F_EMERG_WRITE: u64 = 1 << 2;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Most ports one multiport device takes.
pub const MAX_PORTS: usize = 31;

/// The host end of a console. Both fds are made non-blocking (that flag is
/// shared with every dup of them: pass a reopened fd for a shared terminal).
pub struct ConsoleBackend {
    /// Bytes for the guest (set non-blocking by the device); `None` for output only.
    pub input: Option<OwnedFd>,
    /// Bytes from the guest.
    pub output: OwnedFd,
}

/// The host end of a named port.
pub enum PortHost {
    /// Fixed fds.
    Fds(ConsoleBackend),
    /// Clients of a listening socket, one at a time.
    Listen(UnixListener),
}

/// A named port of a multiport console.
pub struct PortSpec {
    /// The name the guest sees (see [`valid_name`]).
    pub name: String,
    /// Its host end.
    pub host: PortHost,
}

/// A virtio-console device.
pub struct Console {
    /// The ports while no worker owns them.
    ports: Option<Vec<Port>>,
    nr_ports: usize,
    multiport: bool,
    acked: u64,
    queue_sizes: Vec<u16>,
    /// A dup of the output for emergency writes while the worker owns the
    /// host end (`None` on sockets and multiport devices).
    emerg: Option<File>,
    worker: Option<Worker<ConsoleHandler>>,
}

impl Console {
    fn with_ports(ports: Vec<Port>, multiport: bool, emerg: Option<File>) -> Self {
        let nr_ports = ports.len();
        let nq = if multiport { 2 * (nr_ports + 1) } else { 2 };
        Self {
            ports: Some(ports),
            nr_ports,
            multiport,
            acked: 0,
            queue_sizes: vec![QUEUE_SIZE; nq],
            emerg,
            worker: None,
        }
    }

    /// A single-port console on fixed fds.
    pub fn new(backend: ConsoleBackend) -> io::Result<Self> {
        let host = fd_host(backend)?;
        let emerg = match &host {
            Host::Fds(f) => Some(f.output_clone()?),
            Host::Socket(_) => None,
        };
        Ok(Self::with_ports(vec![Port::new(host, None)], false, emerg))
    }

    /// A single-port console whose host end is a client of `listener` (one
    /// at a time; a later client takes over when the previous one has
    /// left). Guest output is discarded while no client is connected.
    pub fn listen(listener: UnixListener) -> io::Result<Self> {
        let host = Host::socket(listener)?;
        Ok(Self::with_ports(vec![Port::new(host, None)], false, None))
    }

    /// A multiport console with named ports `0..`, none of them a console.
    pub fn multiport(specs: Vec<PortSpec>) -> io::Result<Self> {
        if specs.is_empty() || specs.len() > MAX_PORTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a multiport console takes 1 to {MAX_PORTS} ports"),
            ));
        }
        let mut ports = Vec::with_capacity(specs.len());
        for s in specs {
            if !valid_name(&s.name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid port name '{}'", s.name),
                ));
            }
            let host = match s.host {
                PortHost::Fds(b) => fd_host(b)?,
                PortHost::Listen(l) => Host::socket(l)?,
            };
            ports.push(Port::new(host, Some(s.name)));
        }
        Ok(Self::with_ports(ports, true, None))
    }
}

fn fd_host(backend: ConsoleBackend) -> io::Result<Host> {
    if let Some(fd) = &backend.input {
        set_nonblocking(fd)?;
    }
    set_nonblocking(&backend.output)?;
    Ok(Host::fds(
        backend.input.map(File::from),
        File::from(backend.output),
    ))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own; no memory is passed.
    let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        types::CONSOLE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        let multiport = if self.multiport { F_MULTIPORT } else { 0 };
        features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | F_EMERG_WRITE
            | multiport
    }
    fn ack_features(&mut self, value: u64) {
        self.acked = value;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports, emerg_wr.
        let mut cfg = [0u8; 12];
        cfg[4..8].copy_from_slice(&(self.nr_ports as u32).to_le_bytes());
        super::read_config_bytes(&cfg, offset, data);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // emerg_wr: one character at offset 8, as a 32-bit write.
        if offset == 8 && !data.is_empty() {
            if let Some(out) = &mut self.emerg {
                let _ = out.write_all(&data[..1]);
            }
        }
    }
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let (notify, qs) = worker::split_queues(queues, self.queue_sizes.len())?;
        let mut ports = self.ports.take().ok_or(ActivateError::AlreadyActive)?;
        for p in &mut ports {
            // A fresh worker has a fresh epoll set and a fresh driver.
            p.reset();
        }
        let multiport = self.multiport && self.acked & F_MULTIPORT != 0;
        let h = ConsoleHandler::new(ports, multiport, mem, interrupt.clone(), qs);
        worker::start(
            &mut self.worker,
            &mut self.ports,
            "virtio-console",
            notify,
            interrupt,
            h,
            |h| h.ports,
        )
    }
    fn reset(&mut self) -> bool {
        worker::stop(&mut self.worker, &mut self.ports, |h| h.ports)
    }
}

//! virtio-console, single port: `hvc0` as an alternative console, or (as a
//! second device) a host↔guest byte channel.
//!
//! The host end ([`host::Host`]) is either a pair of fds (`input`: bytes for
//! the guest, must be pollable: a pipe, socket or tty; `output`: bytes from
//! the guest), or a listening Unix stream socket that serves one client at a
//! time and accepts the next one when it leaves ([`Console::listen`]).
//! `VIRTIO_CONSOLE_F_EMERG_WRITE` is offered so early output works too (to
//! the output fd; dropped on a socket).

mod host;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;

use virtio_queue::QueueOwnedT;

use super::queue::{add_used, pop_chain, read_segments, signal_used, write_segments, Chain};
use super::worker::{EpollCtl, Handler, Worker};
use super::{
    features, types, ActivateError, ActiveQueue, DeviceError, VirtioDevice, VirtioInterrupt,
};
use crate::memory::GuestMemory;
use host::{Host, CLIENT_TOKEN, LISTEN_TOKEN};

/// Emergency write through config space.
pub const F_EMERG_WRITE: u64 = 1 << 2;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;

/// The host end of a console. Both fds are made non-blocking (that flag is
/// shared with every dup of them: pass a reopened fd for a shared terminal).
pub struct ConsoleBackend {
    /// Bytes for the guest (set non-blocking by the device); `None` for output only.
    pub input: Option<OwnedFd>,
    /// Bytes from the guest.
    pub output: OwnedFd,
}

/// A virtio-console device.
pub struct Console {
    host: Option<Host>,
    /// A dup of the output for emergency writes while the worker owns the
    /// host end (`None` on a socket).
    emerg: Option<File>,
    worker: Option<Worker<ConsoleHandler>>,
}

impl Console {
    /// A console on fixed fds.
    pub fn new(backend: ConsoleBackend) -> io::Result<Self> {
        if let Some(fd) = &backend.input {
            set_nonblocking(fd)?;
        }
        set_nonblocking(&backend.output)?;
        let output = File::from(backend.output);
        Ok(Self {
            emerg: Some(output.try_clone()?),
            host: Some(Host::fds(backend.input.map(File::from), output)),
            worker: None,
        })
    }

    /// A console whose host end is a client of `listener` (one at a time;
    /// a later client takes over when the previous one has left). Guest
    /// output is discarded while no client is connected.
    pub fn listen(listener: UnixListener) -> io::Result<Self> {
        Ok(Self {
            emerg: None,
            host: Some(Host::socket(listener)?),
            worker: None,
        })
    }
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
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_INDIRECT_DESC | F_EMERG_WRITE
    }
    fn ack_features(&mut self, _value: u64) {}
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports (1), emerg_wr.
        let mut cfg = [0u8; 12];
        cfg[4..8].copy_from_slice(&1u32.to_le_bytes());
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
        if queues.len() != 2 {
            return Err(ActivateError::QueueCount {
                need: 2,
                got: queues.len(),
            });
        }
        let mut host = self.host.take().ok_or(ActivateError::AlreadyActive)?;
        // A fresh worker has a fresh epoll set.
        host.forget_watches();
        let mut notify = Vec::new();
        let mut qs = Vec::new();
        for q in queues {
            notify.push(q.notify);
            qs.push(q.queue);
        }
        let h = ConsoleHandler {
            host,
            mem,
            irq: interrupt.clone(),
            queues: qs,
            rx_want: true,
            tx_pending: None,
        };
        match Worker::spawn("virtio-console", notify, interrupt, h) {
            Ok(w) => self.worker = Some(w),
            Err((e, h)) => {
                self.host = Some(h.host);
                return Err(e.into());
            }
        }
        Ok(())
    }
    fn reset(&mut self) -> bool {
        if let Some(mut w) = self.worker.take() {
            match w.stop() {
                Some(h) => self.host = Some(h.host),
                None => return false,
            }
        }
        true
    }
}

struct ConsoleHandler {
    host: Host,
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    queues: Vec<Queue>,
    /// The guest had receive buffers the last time input was wanted.
    rx_want: bool,
    /// A TX chain the output could not take completely yet.
    tx_pending: Option<PendingTx>,
}

impl ConsoleHandler {
    /// Moves host input into the guest's receive buffers while both last.
    fn pump_rx(&mut self) -> Result<(), DeviceError> {
        let mut any = false;
        let mut buf = [0u8; 4096];
        while self.host.input_open() {
            let Some(chain) = pop_chain(&mut self.queues[RX], &self.mem)? else {
                // No buffers: stop polling input until the driver adds some.
                self.rx_want = false;
                break;
            };
            let want = usize::try_from(chain.writable_len())
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match self.host.read(&mut buf[..want]) {
                Ok(n) if n > 0 || want == 0 => n,
                Ok(_) => {
                    // The input ended (the host closed it).
                    self.queues[RX].go_to_previous_position();
                    break;
                }
                Err(e) => {
                    self.queues[RX].go_to_previous_position();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.rx_want = true;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e.into()),
                    }
                }
            };
            let w = write_segments(&self.mem, &chain.writable, 0, &buf[..n]);
            add_used(&mut self.queues[RX], &self.mem, chain.head, w as u32)?;
            any = true;
        }
        if any {
            signal_used(
                &mut self.queues[RX],
                &self.mem,
                self.irq.as_ref(),
                RX as u16,
            )?;
        }
        Ok(())
    }

    /// Writes guest output to the host. The output is non-blocking: when the
    /// host stops reading, the current chain stays unfinished (the guest
    /// sees backpressure) and the device waits for the output to drain.
    fn drain_tx(&mut self) -> Result<(), DeviceError> {
        let mut any = false;
        loop {
            let mut p = match self.tx_pending.take() {
                Some(p) => p,
                None => match pop_chain(&mut self.queues[TX], &self.mem)? {
                    Some(chain) => PendingTx { chain, off: 0 },
                    None => break,
                },
            };
            if !self.write_chain(&mut p) {
                self.tx_pending = Some(p);
                break;
            }
            add_used(&mut self.queues[TX], &self.mem, p.chain.head, 0)?;
            any = true;
        }
        if any {
            signal_used(
                &mut self.queues[TX],
                &self.mem,
                self.irq.as_ref(),
                TX as u16,
            )?;
        }
        Ok(())
    }

    /// Writes the rest of `p`; `false` if the output would block.
    fn write_chain(&mut self, p: &mut PendingTx) -> bool {
        let total = p.chain.readable_len();
        let mut buf = [0u8; 4096];
        while p.off < total {
            let n = read_segments(&self.mem, &p.chain.readable, p.off, &mut buf);
            if n == 0 {
                break;
            }
            match self.host.write(&buf[..n]) {
                Ok(w) => p.off += w as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("virtio-console: output dropped: {e}");
                    p.off = total;
                }
            }
        }
        true
    }

    /// Drops a departed client (and what it can no longer take), then
    /// registers what the device waits for now.
    fn settle(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        if self.host.settle(ctl)? {
            // Without a client, a chain stuck on the old one completes.
            self.drain_tx()?;
            // A waiting client may be accepted right away.
            self.rx_want = true;
        }
        self.host
            .sync(ctl, self.rx_want, self.tx_pending.is_some())?;
        Ok(())
    }
}

struct PendingTx {
    chain: Chain,
    off: u64,
}

impl Handler for ConsoleHandler {
    fn init(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        self.settle(ctl)
    }
    fn queue_notified(&mut self, ctl: &EpollCtl<'_>, q: usize) -> Result<(), DeviceError> {
        match q {
            RX => self.pump_rx()?,
            _ => self.drain_tx()?,
        }
        self.settle(ctl)
    }
    fn backend_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        token: u64,
        events: EventSet,
    ) -> Result<(), DeviceError> {
        match token {
            LISTEN_TOKEN => {
                self.host.accept()?;
                self.rx_want = true;
            }
            CLIENT_TOKEN if events.intersects(EventSet::HANG_UP | EventSet::ERROR) => {
                // Pass on what it sent (as far as buffers allow), then drop it.
                self.pump_rx()?;
                self.host.client_gone();
            }
            _ => {}
        }
        self.pump_rx()?;
        self.drain_tx()?;
        self.settle(ctl)
    }
}

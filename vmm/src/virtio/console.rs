//! virtio-console, single port: `hvc0` as an alternative console, or (as a
//! second device) a plain host↔guest byte channel.
//!
//! The host side is a pair of fds: `input` (bytes for the guest; must be
//! pollable: a pipe, socket or tty) and `output` (bytes from the guest).
//! `VIRTIO_CONSOLE_F_EMERG_WRITE` is offered so early output works too.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;

use virtio_queue::QueueOwnedT;

use super::queue::{add_used, pop_chain, read_segments, rearm, signal_used, write_segments, Chain};
use super::worker::{EpollCtl, Handler, Worker, BACKEND_TOKEN_BASE};
use super::{
    features, types, ActivateError, ActiveQueue, DeviceError, VirtioDevice, VirtioInterrupt,
};
use crate::memory::GuestMemory;

/// Emergency write through config space.
pub const F_EMERG_WRITE: u64 = 1 << 2;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
const INPUT_TOKEN: u64 = BACKEND_TOKEN_BASE;
const OUTPUT_TOKEN: u64 = BACKEND_TOKEN_BASE + 1;

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
    io: Option<ConsoleIo>,
    /// A dup of the output for emergency writes while the worker owns `io`.
    emerg: File,
    worker: Option<Worker<ConsoleHandler>>,
}

struct ConsoleIo {
    input: Option<File>,
    output: File,
}

impl Console {
    /// A console on `backend`.
    pub fn new(backend: ConsoleBackend) -> io::Result<Self> {
        if let Some(fd) = &backend.input {
            set_nonblocking(fd)?;
        }
        set_nonblocking(&backend.output)?;
        let output = File::from(backend.output);
        Ok(Self {
            emerg: output.try_clone()?,
            io: Some(ConsoleIo {
                input: backend.input.map(File::from),
                output,
            }),
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
        features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | F_EMERG_WRITE
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
            let _ = self.emerg.write_all(&data[..1]);
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
        let io = self.io.take().ok_or(ActivateError::AlreadyActive)?;
        let mut notify = Vec::new();
        let mut qs = Vec::new();
        for q in queues {
            notify.push(q.notify);
            qs.push(q.queue);
        }
        let h = ConsoleHandler {
            io,
            mem,
            irq: interrupt.clone(),
            queues: qs,
            input_watched: false,
            input_eof: false,
            output_watched: false,
            tx_pending: None,
        };
        match Worker::spawn("virtio-console", notify, interrupt, h) {
            Ok(w) => self.worker = Some(w),
            Err((e, h)) => {
                self.io = Some(h.io);
                return Err(e.into());
            }
        }
        Ok(())
    }
    fn reset(&mut self) -> bool {
        if let Some(mut w) = self.worker.take() {
            match w.stop() {
                Some(h) => self.io = Some(h.io),
                None => return false,
            }
        }
        true
    }
}

struct ConsoleHandler {
    io: ConsoleIo,
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    queues: Vec<Queue>,
    input_watched: bool,
    input_eof: bool,
    output_watched: bool,
    /// A TX chain the output could not take completely yet.
    tx_pending: Option<PendingTx>,
}

impl ConsoleHandler {
    fn watch_input(&mut self, ctl: &EpollCtl<'_>, on: bool) -> Result<(), DeviceError> {
        let Some(input) = &self.io.input else {
            return Ok(());
        };
        if on == self.input_watched || self.input_eof {
            return Ok(());
        }
        if on {
            ctl.add(input.as_raw_fd(), INPUT_TOKEN, EventSet::IN)?;
        } else {
            ctl.delete(input.as_raw_fd())?;
        }
        self.input_watched = on;
        Ok(())
    }

    /// Moves host input into the guest's receive buffers while both last.
    fn pump_rx(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let mut any = false;
        let mut buf = [0u8; 4096];
        while self.io.input.is_some() && !self.input_eof {
            let Some(chain) = pop_chain(&mut self.queues[RX], &self.mem)? else {
                if rearm(&mut self.queues[RX], &self.mem)? {
                    continue;
                }
                // No buffers: stop polling input until the driver adds some.
                self.watch_input(ctl, false)?;
                break;
            };
            let want = usize::try_from(chain.writable_len())
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let Some(input) = self.io.input.as_mut() else {
                break;
            };
            let r = input.read(&mut buf[..want]);
            let n = match r {
                Ok(n) if n > 0 || want == 0 => n,
                Ok(_) => {
                    self.queues[RX].go_to_previous_position();
                    self.watch_input(ctl, false)?;
                    self.input_eof = true;
                    break;
                }
                Err(e) => {
                    self.queues[RX].go_to_previous_position();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.watch_input(ctl, true)?;
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
    fn drain_tx(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let mut any = false;
        loop {
            let mut p = match self.tx_pending.take() {
                Some(p) => p,
                None => match pop_chain(&mut self.queues[TX], &self.mem)? {
                    Some(chain) => PendingTx { chain, off: 0 },
                    None if rearm(&mut self.queues[TX], &self.mem)? => continue,
                    None => break,
                },
            };
            if !self.write_chain(&mut p) {
                self.tx_pending = Some(p);
                if !self.output_watched {
                    ctl.add(self.io.output.as_raw_fd(), OUTPUT_TOKEN, EventSet::OUT)?;
                    self.output_watched = true;
                }
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
            match self.io.output.write(&buf[..n]) {
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
}

struct PendingTx {
    chain: Chain,
    off: u64,
}

impl Handler for ConsoleHandler {
    fn init(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        self.watch_input(ctl, true)
    }
    fn queue_notified(&mut self, ctl: &EpollCtl<'_>, q: usize) -> Result<(), DeviceError> {
        match q {
            RX => self.pump_rx(ctl),
            _ => self.drain_tx(ctl),
        }
    }
    fn backend_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        token: u64,
        _: EventSet,
    ) -> Result<(), DeviceError> {
        if token == OUTPUT_TOKEN {
            ctl.delete(self.io.output.as_raw_fd())?;
            self.output_watched = false;
            return self.drain_tx(ctl);
        }
        self.pump_rx(ctl)
    }
}

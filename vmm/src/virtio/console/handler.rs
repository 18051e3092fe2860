//! The console worker: moves bytes between each port's queues and its host
//! end, and (with multiport) speaks the control protocol.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;

use super::super::queue::{
    add_used, pop_chain, read_segments, rearm, signal_used, write_segments, Chain,
};
use super::super::worker::{EpollCtl, Handler, BACKEND_TOKEN_BASE};
use super::super::{DeviceError, VirtioInterrupt};
use super::control::{self, port_queues, queue_role, Control, QueueRole};
use super::host::{self, Host};
use crate::memory::GuestMemory;

/// Control messages the device holds for a driver that posts no buffers;
/// more are dropped (a hostile driver repeating `DEVICE_READY`).
const MAX_CTRL_PENDING: usize = 1024;

/// One port: its host end and transfer state.
pub struct Port {
    /// The host end.
    pub host: Host,
    /// The port's name (multiport).
    pub name: Option<String>,
    /// The guest had receive buffers the last time input was wanted.
    rx_want: bool,
    /// A TX chain the host could not take completely yet.
    tx_pending: Option<PendingTx>,
    /// The driver reported the port ready (multiport).
    ready: bool,
    /// The host connection state last told to the driver (multiport).
    told_open: Option<bool>,
    /// A guest program has the port open (multiport; Linux discards what
    /// arrives on a closed port, so input waits for this).
    guest_open: bool,
}

impl Port {
    /// A port on `host`.
    pub fn new(host: Host, name: Option<String>) -> Self {
        Self {
            host,
            name,
            rx_want: true,
            tx_pending: None,
            ready: false,
            told_open: None,
            guest_open: false,
        }
    }

    /// Forgets what belonged to the last activation (queues, epoll, driver).
    pub fn reset(&mut self) {
        self.host.forget_watches();
        self.rx_want = true;
        self.tx_pending = None;
        self.ready = false;
        self.told_open = None;
        self.guest_open = false;
    }
}

struct PendingTx {
    chain: Chain,
    off: u64,
}

/// The worker's state.
pub struct ConsoleHandler {
    /// The ports, in id order.
    pub ports: Vec<Port>,
    /// Served ports: all with multiport, else port 0 only.
    active: usize,
    multiport: bool,
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    queues: Vec<Queue>,
    ctrl_out: VecDeque<Vec<u8>>,
}

fn token_base(p: usize) -> u64 {
    BACKEND_TOKEN_BASE + p as u64 * host::ROLES
}

impl ConsoleHandler {
    /// A handler for `ports` on `queues` (all of the device's queues).
    pub fn new(
        ports: Vec<Port>,
        multiport: bool,
        mem: GuestMemory,
        irq: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Self {
        let active = if multiport { ports.len() } else { 1 };
        Self {
            ports,
            active,
            multiport,
            mem,
            irq,
            queues,
            ctrl_out: VecDeque::new(),
        }
    }

    fn signal(&mut self, q: usize) -> Result<(), DeviceError> {
        signal_used(&mut self.queues[q], &self.mem, self.irq.as_ref(), q as u16)?;
        Ok(())
    }

    /// Moves host input into port `p`'s receive buffers while both last.
    fn pump_rx(&mut self, p: usize) -> Result<(), DeviceError> {
        let (rxq, _) = port_queues(p);
        let mut any = false;
        let mut buf = [0u8; 4096];
        let port = &mut self.ports[p];
        if self.multiport && !port.guest_open {
            port.rx_want = false;
            return Ok(());
        }
        while port.host.input_open() {
            let Some(chain) = pop_chain(&mut self.queues[rxq], &self.mem)? else {
                if rearm(&mut self.queues[rxq], &self.mem)? {
                    continue;
                }
                // No buffers: stop polling input until the driver adds some.
                port.rx_want = false;
                break;
            };
            let want = usize::try_from(chain.writable_len())
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match port.host.read(&mut buf[..want]) {
                Ok(n) if n > 0 || want == 0 => n,
                Ok(_) => {
                    // The input ended (the host closed it).
                    self.queues[rxq].go_to_previous_position();
                    break;
                }
                Err(e) => {
                    self.queues[rxq].go_to_previous_position();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            port.rx_want = true;
                            break;
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e.into()),
                    }
                }
            };
            let w = write_segments(&self.mem, &chain.writable, 0, &buf[..n]);
            add_used(&mut self.queues[rxq], &self.mem, chain.head, w as u32)?;
            any = true;
        }
        if any {
            self.signal(rxq)?;
        }
        Ok(())
    }

    /// Writes port `p`'s guest output to the host. The host end is
    /// non-blocking: when it stops reading, the current chain stays
    /// unfinished (the guest sees backpressure) until it drains.
    fn drain_tx(&mut self, p: usize) -> Result<(), DeviceError> {
        let (_, txq) = port_queues(p);
        let mut any = false;
        loop {
            let mut t = match self.ports[p].tx_pending.take() {
                Some(t) => t,
                None => match pop_chain(&mut self.queues[txq], &self.mem)? {
                    Some(chain) => PendingTx { chain, off: 0 },
                    None if rearm(&mut self.queues[txq], &self.mem)? => continue,
                    None => break,
                },
            };
            if !write_chain(&self.mem, &mut self.ports[p].host, &mut t) {
                self.ports[p].tx_pending = Some(t);
                break;
            }
            add_used(&mut self.queues[txq], &self.mem, t.chain.head, 0)?;
            any = true;
        }
        if any {
            self.signal(txq)?;
        }
        Ok(())
    }

    /// Drops a departed client (and what it can no longer take), tells the
    /// driver about connection changes, then registers what port `p` waits
    /// for now.
    fn settle(&mut self, ctl: &EpollCtl<'_>, p: usize) -> Result<(), DeviceError> {
        if self.ports[p].host.settle(ctl)? {
            // Without a client, a chain stuck on the old one completes.
            self.drain_tx(p)?;
            // A waiting client may be accepted right away.
            self.ports[p].rx_want = true;
        }
        self.tell_open(p)?;
        let port = &mut self.ports[p];
        port.host
            .sync(ctl, token_base(p), port.rx_want, port.tx_pending.is_some())?;
        Ok(())
    }

    /// Multiport: sends `PORT_OPEN` when the host end came or went.
    fn tell_open(&mut self, p: usize) -> Result<(), DeviceError> {
        let port = &mut self.ports[p];
        if !self.multiport || !port.ready {
            return Ok(());
        }
        let open = port.host.connected();
        if port.told_open != Some(open) {
            port.told_open = Some(open);
            self.send(p as u32, control::PORT_OPEN, u16::from(open), &[]);
            self.flush_ctrl()?;
        }
        Ok(())
    }

    fn send(&mut self, id: u32, event: u16, value: u16, tail: &[u8]) {
        if self.ctrl_out.len() >= MAX_CTRL_PENDING {
            tracing::debug!("virtio-console: control message dropped, driver posts no buffers");
            return;
        }
        self.ctrl_out
            .push_back(Control { id, event, value }.encode(tail));
    }

    /// Moves pending control messages into the driver's control buffers.
    fn flush_ctrl(&mut self) -> Result<(), DeviceError> {
        let q = 2;
        let mut any = false;
        while let Some(msg) = self.ctrl_out.front() {
            let Some(chain) = pop_chain(&mut self.queues[q], &self.mem)? else {
                if rearm(&mut self.queues[q], &self.mem)? {
                    continue;
                }
                break;
            };
            // A buffer too small for the message gets what fits.
            let w = write_segments(&self.mem, &chain.writable, 0, msg);
            add_used(&mut self.queues[q], &self.mem, chain.head, w as u32)?;
            self.ctrl_out.pop_front();
            any = true;
        }
        if any {
            self.signal(q)?;
        }
        Ok(())
    }

    /// Reads the driver's control messages and answers them.
    fn handle_ctrl_tx(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let q = 3;
        let mut any = false;
        let mut opened = Vec::new();
        loop {
            let Some(chain) = pop_chain(&mut self.queues[q], &self.mem)? else {
                if rearm(&mut self.queues[q], &self.mem)? {
                    continue;
                }
                break;
            };
            let mut b = [0u8; control::HEADER_LEN];
            let n = read_segments(&self.mem, &chain.readable, 0, &mut b);
            add_used(&mut self.queues[q], &self.mem, chain.head, 0)?;
            any = true;
            match Control::decode(&b[..n]) {
                Some(c) => {
                    if let Some(p) = self.on_control(c) {
                        if !opened.contains(&p) {
                            opened.push(p);
                        }
                    }
                }
                None => tracing::debug!("virtio-console: short control message ({n} bytes)"),
            }
        }
        if any {
            self.signal(q)?;
        }
        self.flush_ctrl()?;
        for p in opened {
            self.service(ctl, p)?;
        }
        Ok(())
    }

    /// Acts on one driver message; returns a port whose guest side opened
    /// or closed (it needs serving).
    fn on_control(&mut self, c: Control) -> Option<usize> {
        let port = usize::try_from(c.id).ok().filter(|&p| p < self.ports.len());
        match (c.event, port) {
            (control::DEVICE_READY, _) if c.value == 1 => {
                for id in 0..self.ports.len() as u32 {
                    self.send(id, control::DEVICE_ADD, 1, &[]);
                }
            }
            (control::PORT_READY, Some(p)) if c.value == 1 => {
                self.ports[p].ready = true;
                if let Some(name) = self.ports[p].name.clone() {
                    let mut tail = name.into_bytes();
                    tail.push(0);
                    self.send(c.id, control::PORT_NAME, 1, &tail);
                }
                let open = self.ports[p].host.connected();
                self.ports[p].told_open = Some(open);
                self.send(c.id, control::PORT_OPEN, u16::from(open), &[]);
            }
            (control::PORT_OPEN, Some(p)) => {
                self.ports[p].guest_open = c.value == 1;
                return Some(p);
            }
            _ => tracing::debug!("virtio-console: control message {c:?} ignored"),
        }
        None
    }

    /// Serves port `p` after anything happened to it.
    fn service(&mut self, ctl: &EpollCtl<'_>, p: usize) -> Result<(), DeviceError> {
        self.pump_rx(p)?;
        self.drain_tx(p)?;
        self.settle(ctl, p)
    }
}

/// Writes the rest of `t` to `host`; `false` if the host would block.
fn write_chain(mem: &GuestMemory, host: &mut Host, t: &mut PendingTx) -> bool {
    let total = t.chain.readable_len();
    let mut buf = [0u8; 4096];
    while t.off < total {
        let n = read_segments(mem, &t.chain.readable, t.off, &mut buf);
        if n == 0 {
            break;
        }
        match host.write(&buf[..n]) {
            Ok(w) => t.off += w as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("virtio-console: output dropped: {e}");
                t.off = total;
            }
        }
    }
    true
}

impl Handler for ConsoleHandler {
    fn init(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        for p in 0..self.active {
            self.settle(ctl, p)?;
        }
        Ok(())
    }

    fn queue_notified(&mut self, ctl: &EpollCtl<'_>, q: usize) -> Result<(), DeviceError> {
        // A queue the driver did not enable (at DRIVER_OK every queue is
        // looked at once) has nothing to serve.
        if !self.queues.get(q).is_some_and(|x| x.ready()) {
            return Ok(());
        }
        let p = match queue_role(q) {
            QueueRole::Rx(p) if p < self.active => {
                self.pump_rx(p)?;
                p
            }
            QueueRole::Tx(p) if p < self.active => {
                self.drain_tx(p)?;
                p
            }
            QueueRole::CtrlRx if self.multiport => return self.flush_ctrl(),
            QueueRole::CtrlTx if self.multiport => return self.handle_ctrl_tx(ctl),
            _ => return Ok(()),
        };
        self.settle(ctl, p)
    }

    fn backend_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        token: u64,
        events: EventSet,
    ) -> Result<(), DeviceError> {
        let Some(off) = token.checked_sub(BACKEND_TOKEN_BASE) else {
            return Ok(());
        };
        let p = usize::try_from(off / host::ROLES).unwrap_or(usize::MAX);
        if p >= self.active {
            return Ok(());
        }
        match off % host::ROLES {
            host::LISTEN => {
                self.ports[p].host.accept()?;
                self.ports[p].rx_want = true;
            }
            host::CLIENT if events.intersects(EventSet::HANG_UP | EventSet::ERROR) => {
                // Pass on what it sent (as far as buffers allow), then drop it.
                self.pump_rx(p)?;
                self.ports[p].host.client_gone();
            }
            _ => {}
        }
        self.service(ctl, p)
    }
}

//! virtio-vsock with the host side on Unix sockets (the Firecracker model;
//! no vhost-vsock).
//!
//! - Host to guest: connect to the device's socket, write `CONNECT <port>\n`,
//!   read `OK <hostport>\n`, then stream bytes.
//! - Guest to host: a guest connection to CID 2 port `P` becomes a connection
//!   to the Unix socket `<socket>_P`.
//!
//! Credit-based flow control follows the spec: the device never sends more
//! than the guest's advertised buffer allows, and a guest that overruns the
//! device's buffer gets its connection reset.

pub mod conn;
pub mod packet;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT};
use vmm_sys_util::epoll::EventSet;

use self::conn::{rst_for, Conn, State};
use self::packet::{check_tx, op, Header, HDR_LEN, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::queue::{add_used, pop_chain, read_segments, rearm, signal_used, write_segments};
use super::queue::{quiesce, Chain};
use super::worker::{self, EpollCtl, Handler, Worker, BACKEND_TOKEN_BASE};
use super::{
    features, types, ActivateError, ActiveQueue, DeviceError, VirtioDevice, VirtioInterrupt,
};
use crate::memory::GuestMemory;

/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Control replies the device holds for the guest before it stops taking
/// TX packets (a guest that posts no RX buffers cannot grow host memory).
pub const MAX_PENDING_CTRL: usize = 2 * QUEUE_SIZE as usize;
const RX: usize = 0;
const TX: usize = 1;
const LISTENER_TOKEN: u64 = BACKEND_TOKEN_BASE;
const MAX_CONNECT_LINE: usize = 32;
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Errors creating the device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0-2 and u32::MAX are reserved.
    #[error("invalid guest cid {0} (must be 3 to 4294967294)")]
    Cid(u64),
    /// The socket path is taken or cannot be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A virtio-vsock device.
pub struct Vsock {
    cid: u64,
    path: PathBuf,
    listener: Option<UnixListener>,
    worker: Option<Worker<VsockHandler>>,
}

impl Vsock {
    /// Listens on `path` for host connections to a guest with `cid`.
    pub fn new(cid: u64, path: &Path) -> Result<Self, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&cid) {
            return Err(VsockError::Cid(cid));
        }
        let bind_err = |source| VsockError::Bind {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Self {
            cid,
            path: path.to_path_buf(),
            listener: Some(listener),
            worker: None,
        })
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        types::VSOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_INDIRECT_DESC | features::RING_EVENT_IDX
    }
    fn ack_features(&mut self, _value: u64) {}
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let (notify, mut qs) = worker::split_queues(queues, 3)?;
        let listener = self.listener.take().ok_or(ActivateError::AlreadyActive)?;
        qs.truncate(2); // the event queue carries nothing zvisor sends
        let tx = qs.pop().unwrap_or_default();
        let rx = qs.pop().unwrap_or_default();
        let h = VsockHandler {
            cid: self.cid,
            path: self.path.clone(),
            listener,
            mem,
            irq: interrupt.clone(),
            rx,
            tx,
            conns: HashMap::new(),
            by_key: HashMap::new(),
            accepting: HashMap::new(),
            ctrl: VecDeque::new(),
            next_token: LISTENER_TOKEN + 1,
            next_port: FIRST_LOCAL_PORT,
            buf: vec![0; MAX_PAYLOAD as usize],
        };
        let (w, l) = (&mut self.worker, &mut self.listener);
        worker::start(w, l, "virtio-vsock", notify, interrupt, h, |h| h.listener)
    }
    fn reset(&mut self) -> bool {
        // Dropping the handler closes every connection; the listener stays.
        worker::stop(&mut self.worker, &mut self.listener, |h| h.listener)
    }
}

/// A host connection that has not sent its `CONNECT` line yet.
struct Accepting {
    stream: UnixStream,
    line: Vec<u8>,
}

struct VsockHandler {
    cid: u64,
    path: PathBuf,
    listener: UnixListener,
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
    /// Connections by epoll token.
    conns: HashMap<u64, Conn>,
    /// (host port, guest port) -> token.
    by_key: HashMap<(u32, u32), u64>,
    accepting: HashMap<u64, Accepting>,
    /// Control packets waiting for an RX buffer.
    ctrl: VecDeque<Header>,
    next_token: u64,
    next_port: u32,
    buf: Vec<u8>,
}

/// Parses `CONNECT <port>`.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?;
    let port = s.trim_end_matches(['\n', '\r']).strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

impl VsockHandler {
    fn stream_events() -> EventSet {
        EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED | EventSet::READ_HANG_UP
    }

    fn add_conn(&mut self, ctl: &EpollCtl<'_>, conn: Conn, token: Option<u64>) -> io::Result<u64> {
        let token = match token {
            Some(t) => t,
            None => {
                let t = self.next_token;
                self.next_token += 1;
                ctl.add(conn.stream.as_raw_fd(), t, Self::stream_events())?;
                t
            }
        };
        self.by_key.insert((conn.local_port, conn.peer_port), token);
        self.conns.insert(token, conn);
        Ok(token)
    }

    fn remove_conn(&mut self, ctl: &EpollCtl<'_>, token: u64) {
        if let Some(c) = self.conns.remove(&token) {
            let _ = ctl.delete(c.stream.as_raw_fd());
            self.by_key.remove(&(c.local_port, c.peer_port));
        }
    }

    /// Resets connection `token` towards the guest and forgets it.
    fn reset_conn(&mut self, ctl: &EpollCtl<'_>, token: u64) {
        if let Some(c) = self.conns.get_mut(&token) {
            let h = c.header(self.cid, op::RST, 0, 0);
            self.ctrl.push_back(h);
        }
        self.remove_conn(ctl, token);
    }

    fn alloc_port(&mut self) -> u32 {
        loop {
            let p = self.next_port;
            self.next_port = self.next_port.wrapping_add(1).max(FIRST_LOCAL_PORT);
            if !self.by_key.keys().any(|(l, _)| *l == p) {
                return p;
            }
        }
    }

    fn accept(&mut self, ctl: &EpollCtl<'_>) -> io::Result<()> {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            stream.set_nonblocking(true)?;
            let t = self.next_token;
            self.next_token += 1;
            ctl.add(stream.as_raw_fd(), t, Self::stream_events())?;
            self.accepting.insert(
                t,
                Accepting {
                    stream,
                    line: Vec::new(),
                },
            );
        }
    }

    /// Reads a `CONNECT` line byte by byte (so no payload is consumed).
    fn read_connect(&mut self, ctl: &EpollCtl<'_>, token: u64) -> io::Result<()> {
        let Some(a) = self.accepting.get_mut(&token) else {
            return Ok(());
        };
        let mut b = [0u8; 1];
        let done = loop {
            match a.stream.read(&mut b) {
                Ok(0) => break false,
                Ok(_) => {
                    a.line.push(b[0]);
                    if b[0] == b'\n' {
                        break true;
                    }
                    if a.line.len() > MAX_CONNECT_LINE {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        let Some(a) = self.accepting.remove(&token) else {
            return Ok(());
        };
        let port = if done { parse_connect(&a.line) } else { None };
        let Some(port) = port else {
            tracing::debug!(
                "vsock: bad CONNECT line {:?}",
                String::from_utf8_lossy(&a.line)
            );
            let _ = ctl.delete(a.stream.as_raw_fd());
            return Ok(());
        };
        let local = self.alloc_port();
        let mut c = Conn::new(a.stream, local, port, State::Connecting);
        let h = c.header(self.cid, op::REQUEST, 0, 0);
        self.ctrl.push_back(h);
        self.add_conn(ctl, c, Some(token))?;
        Ok(())
    }

    fn process_tx(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let mut any = false;
        quiesce(&mut self.tx, &self.mem)?;
        while self.ctrl.len() < MAX_PENDING_CTRL {
            let Some(chain) = pop_chain(&mut self.tx, &self.mem)? else {
                if rearm(&mut self.tx, &self.mem)? {
                    continue;
                }
                break;
            };
            self.handle_packet(ctl, &chain)?;
            add_used(&mut self.tx, &self.mem, chain.head, 0)?;
            any = true;
        }
        if any {
            signal_used(&mut self.tx, &self.mem, self.irq.as_ref(), TX as u16)?;
        }
        self.process_rx(ctl)
    }

    fn handle_packet(&mut self, ctl: &EpollCtl<'_>, chain: &Chain) -> Result<(), DeviceError> {
        let mut hb = [0u8; HDR_LEN];
        let got = read_segments(&self.mem, &chain.readable, 0, &mut hb);
        let total = chain.readable_len();
        let h = Header::decode(&hb);
        if got < HDR_LEN {
            tracing::debug!("vsock: short packet dropped");
            return Ok(());
        }
        if let Err(e) = check_tx(&h, total, self.cid) {
            tracing::debug!("vsock: packet dropped: {e}");
            return Ok(());
        }
        if h.type_ != packet::TYPE_STREAM {
            self.ctrl.push_back(rst_for(&h));
            return Ok(());
        }
        let key = (h.dst_port, h.src_port);
        if h.op == op::REQUEST {
            if self.by_key.contains_key(&key) {
                self.ctrl.push_back(rst_for(&h));
                return Ok(());
            }
            let target = format!("{}_{}", self.path.display(), h.dst_port);
            match UnixStream::connect(&target).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
                Ok(s) => {
                    let mut c = Conn::new(s, h.dst_port, h.src_port, State::Established);
                    c.peer_buf_alloc = h.buf_alloc;
                    c.peer_fwd_cnt = h.fwd_cnt;
                    let resp = c.header(self.cid, op::RESPONSE, 0, 0);
                    self.add_conn(ctl, c, None)?;
                    self.ctrl.push_back(resp);
                }
                Err(e) => {
                    tracing::debug!("vsock: guest connect to {target} failed: {e}");
                    self.ctrl.push_back(rst_for(&h));
                }
            }
            return Ok(());
        }
        let Some(&token) = self.by_key.get(&key) else {
            if h.op != op::RST {
                self.ctrl.push_back(rst_for(&h));
            }
            return Ok(());
        };
        let cid = self.cid;
        let Some(c) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        match h.op {
            op::RESPONSE => {
                if c.state != State::Connecting {
                    self.reset_conn(ctl, token);
                    return Ok(());
                }
                c.state = State::Established;
                let line = format!("OK {}\n", c.local_port);
                if c.push_line(line.as_bytes()).is_err() {
                    self.reset_conn(ctl, token);
                } else {
                    c.readable = true;
                }
            }
            op::RST => self.remove_conn(ctl, token),
            op::SHUTDOWN => {
                c.guest_shut_rcv |= h.flags & SHUTDOWN_RCV != 0;
                c.guest_shut_send |= h.flags & SHUTDOWN_SEND != 0;
                if c.guest_shut_rcv && c.guest_shut_send {
                    let _ = c.flush();
                    self.reset_conn(ctl, token);
                } else {
                    let _ = c.flush();
                }
            }
            op::RW => {
                if c.state != State::Established || c.guest_shut_send {
                    self.reset_conn(ctl, token);
                    return Ok(());
                }
                let n = h.len as usize;
                let got = read_segments(
                    &self.mem,
                    &chain.readable,
                    HDR_LEN as u64,
                    &mut self.buf[..n],
                );
                match c.push_to_host(&self.buf[..got]) {
                    Ok(true) => {
                        if c.wants_credit_update() {
                            let u = c.header(cid, op::CREDIT_UPDATE, 0, 0);
                            self.ctrl.push_back(u);
                        }
                    }
                    Ok(false) => {
                        tracing::debug!("vsock: guest overran its credit; resetting");
                        self.reset_conn(ctl, token);
                    }
                    Err(_) => self.reset_conn(ctl, token),
                }
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                let u = c.header(cid, op::CREDIT_UPDATE, 0, 0);
                self.ctrl.push_back(u);
            }
            _ => {}
        }
        Ok(())
    }

    fn stream_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        token: u64,
        ev: EventSet,
    ) -> Result<(), DeviceError> {
        if self.accepting.contains_key(&token) {
            self.read_connect(ctl, token)?;
            return self.process_rx(ctl);
        }
        let cid = self.cid;
        let Some(c) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        if ev.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
            c.readable = true;
        }
        if ev.contains(EventSet::OUT) {
            let before = c.fwd_cnt;
            if c.flush().is_err() {
                self.reset_conn(ctl, token);
            } else if c.fwd_cnt != before && c.wants_credit_update() {
                let u = c.header(cid, op::CREDIT_UPDATE, 0, 0);
                self.ctrl.push_back(u);
            }
        }
        self.process_rx(ctl)
    }

    /// Sends control packets, then host data as credit and buffers allow.
    fn process_rx(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let mut any = false;
        'outer: loop {
            while let Some(h) = self.ctrl.front().copied() {
                let Some(chain) = pop_chain(&mut self.rx, &self.mem)? else {
                    if rearm(&mut self.rx, &self.mem)? {
                        continue;
                    }
                    break 'outer;
                };
                let w = write_segments(&self.mem, &chain.writable, 0, &h.encode());
                add_used(&mut self.rx, &self.mem, chain.head, w as u32)?;
                self.ctrl.pop_front();
                any = true;
            }
            let ready: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.state == State::Established
                        && c.readable
                        && !c.host_eof
                        && !c.guest_shut_rcv
                        && c.peer_credit() > 0
                })
                .map(|(t, _)| *t)
                .collect();
            if ready.is_empty() {
                break;
            }
            let mut progress = false;
            for token in ready {
                let Some(chain) = pop_chain(&mut self.rx, &self.mem)? else {
                    if rearm(&mut self.rx, &self.mem)? {
                        continue 'outer;
                    }
                    break 'outer;
                };
                let room = chain.writable_len().saturating_sub(HDR_LEN as u64);
                let Some(c) = self.conns.get_mut(&token) else {
                    self.rx.go_to_previous_position();
                    continue;
                };
                let max = room
                    .min(u64::from(c.peer_credit()))
                    .min(u64::from(MAX_PAYLOAD)) as usize;
                if max == 0 {
                    // A receive buffer too small for any payload: the guest's problem.
                    self.rx.go_to_previous_position();
                    continue;
                }
                let hdr = match c.stream.read(&mut self.buf[..max]) {
                    Ok(0) => {
                        c.host_eof = true;
                        c.header(self.cid, op::SHUTDOWN, 0, SHUTDOWN_SEND)
                    }
                    Ok(n) => {
                        c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                        c.header(self.cid, op::RW, n as u32, 0)
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted =>
                    {
                        c.readable = e.kind() == io::ErrorKind::Interrupted;
                        self.rx.go_to_previous_position();
                        continue;
                    }
                    Err(_) => {
                        self.rx.go_to_previous_position();
                        self.reset_conn(ctl, token);
                        progress = true;
                        continue;
                    }
                };
                let mut w = write_segments(&self.mem, &chain.writable, 0, &hdr.encode());
                w += write_segments(
                    &self.mem,
                    &chain.writable,
                    HDR_LEN as u64,
                    &self.buf[..hdr.len as usize],
                );
                add_used(&mut self.rx, &self.mem, chain.head, w as u32)?;
                any = true;
                progress = true;
            }
            if !progress {
                break;
            }
        }
        if any {
            signal_used(&mut self.rx, &self.mem, self.irq.as_ref(), RX as u16)?;
        }
        Ok(())
    }
}

impl Handler for VsockHandler {
    fn init(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        ctl.add(self.listener.as_raw_fd(), LISTENER_TOKEN, EventSet::IN)?;
        Ok(())
    }
    fn queue_notified(&mut self, ctl: &EpollCtl<'_>, q: usize) -> Result<(), DeviceError> {
        match q {
            RX => {
                self.process_rx(ctl)?;
                // TX may have stopped on a full control backlog; new RX
                // buffers drained it, so pick TX up again.
                if self.ctrl.len() < MAX_PENDING_CTRL {
                    self.process_tx(ctl)
                } else {
                    Ok(())
                }
            }
            TX => self.process_tx(ctl),
            _ => Ok(()),
        }
    }
    fn backend_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        token: u64,
        ev: EventSet,
    ) -> Result<(), DeviceError> {
        if token == LISTENER_TOKEN {
            self.accept(ctl)?;
            return self.process_rx(ctl);
        }
        self.stream_event(ctl, token, ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect(b"CONNECT 52\n"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\n"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT -1\n"), None);
        assert_eq!(parse_connect(b"connect 52\n"), None);
        assert_eq!(parse_connect(b"CONNECT \n"), None);
        assert_eq!(parse_connect(&[0xff, b'\n']), None);
    }
}

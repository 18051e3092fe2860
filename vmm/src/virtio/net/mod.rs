//! virtio-net on a tap device, in userspace (no vhost-net).
//!
//! Offloads (checksum, TSO4/6, ECN, UFO where the kernel still has it) are
//! negotiated with the guest and mirrored onto the tap with `TUNSETOFFLOAD`;
//! frames carry the virtio-net header straight through (the tap is put in
//! little-endian vnet-header mode, so this also holds on s390x). RX uses
//! mergeable buffers when the driver accepts them.

pub mod header;

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT};
use vmm_sys_util::epoll::EventSet;

use super::queue::{
    add_used, iovecs_range, pop_chain, pop_chain_into, quiesce, read_segments, rearm,
};
use super::queue::{signal_used, write_segments, Chain};
use super::tap::{offload, Tap, TapError, VNET_HDR_LEN};
use super::worker::{self, EpollCtl, Handler, Worker, BACKEND_TOKEN_BASE};
use super::{
    features, types, ActivateError, ActiveQueue, DeviceError, VirtioDevice, VirtioInterrupt,
};
use crate::memory::GuestMemory;

/// Feature bits (virtio 1.2, 5.1.3).
pub mod feature_bits {
    /// Device handles partial checksums (guest TX).
    pub const CSUM: u64 = 1 << 0;
    /// Driver handles partial checksums (guest RX).
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// `mac` in config space.
    pub const MAC: u64 = 1 << 5;
    /// Guest receives TSOv4.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// Guest receives TSOv6.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// Guest receives TSO with ECN.
    pub const GUEST_ECN: u64 = 1 << 9;
    /// Guest receives UFO.
    pub const GUEST_UFO: u64 = 1 << 10;
    /// Device takes TSOv4.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// Device takes TSOv6.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// Device takes TSO with ECN.
    pub const HOST_ECN: u64 = 1 << 13;
    /// Device takes UFO.
    pub const HOST_UFO: u64 = 1 << 14;
    /// Mergeable receive buffers.
    pub const MRG_RXBUF: u64 = 1 << 15;
}
use feature_bits as f;

/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Largest frame: 64 KiB GSO plus Ethernet/VLAN headers, plus the vnet header.
pub const MAX_FRAME: usize = 65_562 + VNET_HDR_LEN;
const RX: usize = 0;
const TX: usize = 1;
const TAP_TOKEN: u64 = BACKEND_TOKEN_BASE;

/// A virtio-net device.
pub struct Net {
    tap: Option<Tap>,
    mac: [u8; 6],
    avail: u64,
    acked: u64,
    worker: Option<Worker<NetHandler>>,
}

/// Errors creating a NIC.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Tap problem.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// Could not generate a MAC address.
    #[error("cannot generate a MAC address: {0}")]
    Mac(io::Error),
}

impl Net {
    /// A NIC on `tap` with `mac` (a random locally administered one if `None`).
    pub fn new(tap: Tap, mac: Option<[u8; 6]>) -> Result<Self, NetError> {
        let mac = match mac {
            Some(m) => m,
            None => {
                let mut m = [0u8; 6];
                super::rng::fill_random(&mut m).map_err(NetError::Mac)?;
                m[0] = (m[0] & 0xfe) | 0x02;
                m
            }
        };
        let mut avail = features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | f::CSUM
            | f::GUEST_CSUM
            | f::MAC
            | f::GUEST_TSO4
            | f::GUEST_TSO6
            | f::GUEST_ECN
            | f::HOST_TSO4
            | f::HOST_TSO6
            | f::HOST_ECN
            | f::MRG_RXBUF;
        // UFO only where this kernel's tap still accepts it.
        let all = offload::CSUM | offload::TSO4 | offload::TSO6 | offload::UFO;
        if tap.set_offload(all).is_ok() {
            avail |= f::GUEST_UFO | f::HOST_UFO;
        }
        tap.set_offload(0)?;
        Ok(Self {
            tap: Some(tap),
            mac,
            avail,
            acked: 0,
            worker: None,
        })
    }

    /// The guest-visible MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
}

/// Tap offload flags for the features the driver accepted.
pub fn tap_offloads(acked: u64) -> u32 {
    let mut o = 0;
    if acked & f::GUEST_CSUM != 0 {
        o |= offload::CSUM;
        if acked & f::GUEST_TSO4 != 0 {
            o |= offload::TSO4;
        }
        if acked & f::GUEST_TSO6 != 0 {
            o |= offload::TSO6;
        }
        if acked & f::GUEST_ECN != 0 {
            o |= offload::TSO_ECN;
        }
        if acked & f::GUEST_UFO != 0 {
            o |= offload::UFO;
        }
    }
    o
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        types::NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.avail
    }
    fn ack_features(&mut self, value: u64) {
        self.acked = value & self.avail;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac, status (unused: no VIRTIO_NET_F_STATUS), max_virtqueue_pairs.
        let mut cfg = [0u8; 10];
        cfg[..6].copy_from_slice(&self.mac);
        cfg[8..10].copy_from_slice(&1u16.to_le_bytes());
        super::read_config_bytes(&cfg, offset, data);
    }
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let (notify, mut qs) = worker::split_queues(queues, 2)?;
        let tap = self.tap.take().ok_or(ActivateError::AlreadyActive)?;
        if let Err(e) = tap.set_offload(tap_offloads(self.acked)) {
            self.tap = Some(tap);
            return Err(io::Error::other(e.to_string()).into());
        }
        let tx = qs.pop().unwrap_or_default();
        let rx = qs.pop().unwrap_or_default();
        let h = NetHandler {
            tap,
            mem,
            irq: interrupt.clone(),
            rx,
            tx,
            acked: self.acked,
            frame: vec![0; MAX_FRAME],
            pending: None,
            tap_watched: false,
            iov: Vec::new(),
            chains: Vec::new(),
        };
        worker::start(
            &mut self.worker,
            &mut self.tap,
            "virtio-net",
            notify,
            interrupt,
            h,
            |h| h.tap,
        )
    }
    fn reset(&mut self) -> bool {
        self.acked = 0;
        worker::stop(&mut self.worker, &mut self.tap, |h| h.tap)
    }
}

struct NetHandler {
    tap: Tap,
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
    acked: u64,
    frame: Vec<u8>,
    /// Length of a frame read from the tap and not yet delivered.
    pending: Option<usize>,
    tap_watched: bool,
    /// TX iovecs, reused from frame to frame.
    iov: Vec<libc::iovec>,
    /// RX chains of the frame being delivered, reused from frame to frame.
    chains: Vec<Chain>,
}

// SAFETY: `iov` is rebuilt before every use and points only into guest RAM
// (which outlives the handler) or the current frame's header copy; it is
// never dereferenced across threads.
unsafe impl Send for NetHandler {}

impl NetHandler {
    fn watch_tap(&mut self, ctl: &EpollCtl<'_>, on: bool) -> Result<(), DeviceError> {
        if on != self.tap_watched {
            let fd = self.tap.file().as_raw_fd();
            if on {
                ctl.add(fd, TAP_TOKEN, EventSet::IN)?;
            } else {
                ctl.delete(fd)?;
            }
            self.tap_watched = on;
        }
        Ok(())
    }

    fn process_rx(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        let mut any = false;
        // The driver need not kick RX while the device has buffers; the
        // device re-arms (rearm in `deliver`) when it runs out.
        quiesce(&mut self.rx, &self.mem)?;
        loop {
            let len = match self.pending {
                Some(l) => l,
                None => match self.tap.file().read(&mut self.frame) {
                    Ok(n) if n >= VNET_HDR_LEN => n,
                    Ok(0) => return Err(io::Error::other("tap read: end of file").into()),
                    Ok(_) => continue, // shorter than a vnet header: drop
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.watch_tap(ctl, true)?;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Not a transient condition (EIO/EBADFD: the tap
                        // was deleted or detached): it would come back on
                        // every wake-up, as the fd stays readable. Stop
                        // here; the device goes to NEEDS_RESET.
                        return Err(io::Error::new(e.kind(), format!("tap read: {e}")).into());
                    }
                },
            };
            self.pending = Some(len);
            match self.deliver(len)? {
                Delivery::Done => {
                    self.pending = None;
                    any = true;
                }
                Delivery::Dropped => {
                    self.pending = None;
                }
                Delivery::Retry => {}
                Delivery::NoBuffers => {
                    // Wait for the driver to post buffers (RX notify).
                    self.watch_tap(ctl, false)?;
                    break;
                }
            }
        }
        if any {
            signal_used(&mut self.rx, &self.mem, self.irq.as_ref(), RX as u16)?;
        }
        Ok(())
    }

    fn deliver(&mut self, len: usize) -> Result<Delivery, DeviceError> {
        // The chains' buffers are reused from frame to frame.
        let mut chains = std::mem::take(&mut self.chains);
        let r = self.deliver_into(&mut chains, len);
        self.chains = chains;
        r
    }

    fn deliver_into(
        &mut self,
        chains: &mut Vec<Chain>,
        len: usize,
    ) -> Result<Delivery, DeviceError> {
        let mrg = self.acked & f::MRG_RXBUF != 0;
        let mut n = 0;
        let mut room = 0u64;
        while room < len as u64 {
            if chains.len() == n {
                chains.push(Chain::default());
            }
            if !pop_chain_into(&mut self.rx, &self.mem, &mut chains[n])? {
                // Out of buffers: ask for a kick when the driver adds one
                // past those seen (before rewinding the chains popped for
                // this frame), and catch a refill that raced.
                let more = rearm(&mut self.rx, &self.mem)?;
                for _ in 0..n {
                    self.rx.go_to_previous_position();
                }
                return Ok(if more {
                    Delivery::Retry
                } else {
                    Delivery::NoBuffers
                });
            }
            room += chains[n].writable_len();
            n += 1;
            if !mrg {
                break;
            }
        }
        let chains = &chains[..n];
        if room < len as u64 {
            // Without mergeable buffers one chain must hold the frame.
            for _ in 0..n {
                self.rx.go_to_previous_position();
            }
            return Ok(Delivery::Dropped);
        }
        let nbufs = chains
            .iter()
            .filter(|c| c.writable_len() > 0)
            .count()
            .max(1) as u16;
        self.frame[10..12].copy_from_slice(&nbufs.to_le_bytes());
        let mut off = 0usize;
        for c in chains {
            let w = write_segments(&self.mem, &c.writable, 0, &self.frame[off..len]);
            add_used(&mut self.rx, &self.mem, c.head, w as u32)?;
            off += w;
        }
        Ok(Delivery::Done)
    }

    fn process_tx(&mut self) -> Result<(), DeviceError> {
        let mut any = false;
        loop {
            // No kicks while the device is draining the ring.
            quiesce(&mut self.tx, &self.mem)?;
            while let Some(chain) = pop_chain(&mut self.tx, &self.mem)? {
                if let Err(why) = self.send(&chain) {
                    tracing::debug!("virtio-net: tx frame dropped: {why}");
                }
                add_used(&mut self.tx, &self.mem, chain.head, 0)?;
                any = true;
            }
            if !rearm(&mut self.tx, &self.mem)? {
                break;
            }
        }
        if any {
            signal_used(&mut self.tx, &self.mem, self.irq.as_ref(), TX as u16)?;
        }
        Ok(())
    }

    fn send(&mut self, chain: &Chain) -> Result<(), String> {
        let total = chain.readable_len();
        if total < VNET_HDR_LEN as u64 || total > MAX_FRAME as u64 {
            return Err(format!("frame of {total} bytes"));
        }
        // Validate a private copy of the header; the guest cannot change it
        // between the check and the write.
        let mut hdr = [0u8; VNET_HDR_LEN];
        read_segments(&self.mem, &chain.readable, 0, &mut hdr);
        let frame_len = total as usize - VNET_HDR_LEN;
        header::parse_tx(&hdr, frame_len, self.acked).map_err(|e| e.to_string())?;
        let iov = &mut self.iov;
        iov.clear();
        iov.push(libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        });
        let body = VNET_HDR_LEN as u64;
        iovecs_range(&self.mem, &chain.readable, body, u64::MAX, iov).ok_or("buffer not in RAM")?;
        if iov.len() > 1024 {
            return Err("too many buffers".into());
        }
        // SAFETY: `hdr` lives to the end of this function and the other
        // iovecs point into guest RAM checked by pop_chain; writev only reads.
        let n =
            unsafe { libc::writev(self.tap.file().as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
        if n < 0 {
            return Err(io::Error::last_os_error().to_string());
        }
        Ok(())
    }
}

enum Delivery {
    Done,
    Dropped,
    /// Out of buffers, but the driver added some meanwhile: try again.
    Retry,
    NoBuffers,
}

impl Handler for NetHandler {
    fn init(&mut self, ctl: &EpollCtl<'_>) -> Result<(), DeviceError> {
        self.watch_tap(ctl, true)
    }
    fn queue_notified(&mut self, ctl: &EpollCtl<'_>, q: usize) -> Result<(), DeviceError> {
        match q {
            RX => self.process_rx(ctl),
            _ => self.process_tx(),
        }
    }
    fn backend_event(
        &mut self,
        ctl: &EpollCtl<'_>,
        _: u64,
        _: EventSet,
    ) -> Result<(), DeviceError> {
        self.process_rx(ctl)
    }
}

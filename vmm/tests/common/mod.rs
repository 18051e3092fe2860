//! An in-process virtio-mmio driver that does what Linux's virtio_mmio.c and
//! the virtio core do, step by step, against zvisor's MMIO transport on the
//! core's MMIO bus, with rings in real guest memory.
#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use zvisor_vmm::bus::Bus;
use zvisor_vmm::interrupt::EventFdLine;
use zvisor_vmm::memory::{self, GuestMemory};
use zvisor_vmm::virtio::mmio::{regs, MmioTransport, MAGIC, MMIO_SIZE};
use zvisor_vmm::virtio::{features, status, VirtioDevice};

pub const MMIO_BASE: u64 = 0xd000_0000;
pub const RAM_SIZE: usize = 16 << 20;
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;

/// Guest memory plus a bump allocator for buffers.
pub struct Guest {
    pub mem: GuestMemory,
    pub bus: Bus,
    next: u64,
}

impl Guest {
    pub fn new() -> Self {
        Self {
            mem: memory::create(&[(GuestAddress(0), RAM_SIZE)]).unwrap(),
            bus: Bus::new(),
            next: 0x10_0000,
        }
    }
    /// Allocates `len` bytes aligned to 4 KiB.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next;
        self.next = (a + len + 0xfff) & !0xfff;
        assert!(self.next <= RAM_SIZE as u64, "test guest out of memory");
        a
    }
    /// Places `dev` behind an MMIO window at slot `slot`; returns its driver.
    pub fn attach(&mut self, dev: Box<dyn VirtioDevice>, slot: u64) -> Driver {
        let line = Arc::new(EventFdLine::new().unwrap());
        let t = MmioTransport::new(dev, self.mem.clone(), line.clone()).unwrap();
        let t = Arc::new(Mutex::new(t));
        let base = MMIO_BASE + slot * MMIO_SIZE;
        self.bus.insert(base, MMIO_SIZE, t.clone()).unwrap();
        Driver {
            bus: self.bus.clone(),
            mem: self.mem.clone(),
            base,
            line,
            transport: t,
            queues: Vec::new(),
            features: 0,
        }
    }
    pub fn write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub next_desc: u16,
    pub avail_idx: u16,
    pub last_used: u16,
    /// VIRTIO_F_EVENT_IDX negotiated: used_event/avail_event are live.
    pub event_idx: bool,
    /// Chains published since the last kick decision (Linux's num_added).
    pub num_added: u16,
}

impl DriverQueue {
    /// used_event: the driver's "interrupt me after this used index".
    pub fn used_event_addr(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }
    /// avail_event: the device's "kick me after this avail index".
    pub fn avail_event_addr(&self) -> u64 {
        self.used + 4 + 8 * u64::from(self.size)
    }
}

/// Linux's vring_need_event: has the index moved from `old` to `new` past `event`?
pub fn vring_need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

pub struct Driver {
    pub bus: Bus,
    pub mem: GuestMemory,
    pub base: u64,
    pub line: Arc<EventFdLine>,
    pub transport: Arc<Mutex<MmioTransport>>,
    pub queues: Vec<DriverQueue>,
    pub features: u64,
}

/// One buffer of a chain: (guest address, length, device-writable).
pub type Buf = (u64, u32, bool);

impl Driver {
    pub fn readl(&self, off: u64) -> u32 {
        let mut d = [0u8; 4];
        assert!(self.bus.read(self.base + off, &mut d));
        u32::from_le_bytes(d)
    }
    pub fn writel(&self, off: u64, v: u32) {
        assert!(self.bus.write(self.base + off, &v.to_le_bytes()));
    }
    pub fn status(&self) -> u32 {
        self.readl(regs::STATUS)
    }
    fn add_status(&self, s: u32) {
        self.writel(regs::STATUS, self.status() | s);
    }
    pub fn config(&self, off: u64, len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len];
        assert!(self.bus.read(self.base + regs::CONFIG + off, &mut d));
        d
    }
    /// virtio_cread with the generation-count loop Linux uses for >4-byte fields.
    pub fn config_u64(&self, off: u64) -> u64 {
        loop {
            let g = self.readl(regs::CONFIG_GENERATION);
            let lo = u32::from_le_bytes(self.config(off, 4).try_into().unwrap());
            let hi = u32::from_le_bytes(self.config(off + 4, 4).try_into().unwrap());
            if g == self.readl(regs::CONFIG_GENERATION) {
                return u64::from(lo) | (u64::from(hi) << 32);
            }
        }
    }

    /// vm_probe + register_virtio_device + virtio_dev_probe up to FEATURES_OK.
    /// Returns the device features; `Err` with the status if FEATURES_OK was refused.
    pub fn probe(&mut self, want_id: u32, driver_features: u64) -> Result<u64, u32> {
        assert_eq!(self.readl(regs::MAGIC_VALUE), MAGIC, "bad magic");
        assert_eq!(self.readl(regs::VERSION), 2, "only virtio-mmio v2");
        assert_eq!(self.readl(regs::DEVICE_ID), want_id);
        assert_ne!(self.readl(regs::VENDOR_ID), 0);
        // Reset, and wait for it to complete.
        self.writel(regs::STATUS, 0);
        assert_eq!(self.status(), 0);
        self.add_status(status::ACKNOWLEDGE);
        self.add_status(status::DRIVER);
        self.writel(regs::DEVICE_FEATURES_SEL, 1);
        let mut dev = u64::from(self.readl(regs::DEVICE_FEATURES)) << 32;
        self.writel(regs::DEVICE_FEATURES_SEL, 0);
        dev |= u64::from(self.readl(regs::DEVICE_FEATURES));
        assert!(
            dev & features::VERSION_1 != 0,
            "device must offer VERSION_1"
        );
        let acked = dev & driver_features;
        self.writel(regs::DRIVER_FEATURES_SEL, 1);
        self.writel(regs::DRIVER_FEATURES, (acked >> 32) as u32);
        self.writel(regs::DRIVER_FEATURES_SEL, 0);
        self.writel(regs::DRIVER_FEATURES, acked as u32);
        self.add_status(status::FEATURES_OK);
        let s = self.status();
        if s & status::FEATURES_OK == 0 {
            return Err(s);
        }
        self.features = acked;
        Ok(dev)
    }

    /// vm_setup_vq for queue `index` with `size` entries (0 = QueueNumMax).
    pub fn setup_queue(&mut self, g: &mut Guest, index: u32, size: u16) {
        self.writel(regs::QUEUE_SEL, index);
        assert_eq!(self.readl(regs::QUEUE_READY), 0, "queue already live");
        let max = self.readl(regs::QUEUE_NUM_MAX);
        assert!(max > 0, "queue {index} not available");
        let size = if size == 0 { max as u16 } else { size };
        let n = u64::from(size);
        let desc = g.alloc(16 * n);
        let avail = g.alloc(6 + 2 * n);
        let used = g.alloc(6 + 8 * n);
        self.writel(regs::QUEUE_NUM, u32::from(size));
        self.writel(regs::QUEUE_DESC_LOW, desc as u32);
        self.writel(regs::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.writel(regs::QUEUE_AVAIL_LOW, avail as u32);
        self.writel(regs::QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
        self.writel(regs::QUEUE_USED_LOW, used as u32);
        self.writel(regs::QUEUE_USED_HIGH, (used >> 32) as u32);
        self.writel(regs::QUEUE_READY, 1);
        assert_eq!(self.readl(regs::QUEUE_READY), 1);
        while self.queues.len() <= index as usize {
            self.queues.push(DriverQueue {
                size: 0,
                desc: 0,
                avail: 0,
                used: 0,
                next_desc: 0,
                avail_idx: 0,
                last_used: 0,
                event_idx: false,
                num_added: 0,
            });
        }
        self.queues[index as usize] = DriverQueue {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
            event_idx: self.features & features::RING_EVENT_IDX != 0,
            num_added: 0,
        };
    }

    pub fn driver_ok(&self) {
        self.add_status(status::DRIVER_OK);
    }

    /// Full Linux-style bring-up: probe, all queues, DRIVER_OK.
    pub fn init(&mut self, g: &mut Guest, id: u32, feats: u64, nqueues: u32) -> u64 {
        let dev = self.probe(id, feats).expect("FEATURES_OK refused");
        for i in 0..nqueues {
            self.setup_queue(g, i, 0);
        }
        self.driver_ok();
        assert_eq!(self.status() & status::NEEDS_RESET, 0);
        dev
    }

    /// Writes a raw descriptor.
    pub fn write_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let dq = &self.queues[q];
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        let a = dq.desc + 16 * u64::from(i % dq.size);
        self.mem.write_slice(&d, GuestAddress(a)).unwrap();
    }

    /// Puts head `head` in the avail ring and publishes it (no notify).
    pub fn publish(&mut self, q: usize, head: u16) {
        let dq = &mut self.queues[q];
        let slot = dq.avail + 4 + 2 * u64::from(dq.avail_idx % dq.size);
        self.mem
            .write_slice(&head.to_le_bytes(), GuestAddress(slot))
            .unwrap();
        dq.avail_idx = dq.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_slice(&dq.avail_idx.to_le_bytes(), GuestAddress(dq.avail + 2))
            .unwrap();
    }

    /// Sets the avail ring's idx field directly (hostile tests).
    pub fn set_avail_idx(&mut self, q: usize, idx: u16) {
        let dq = &mut self.queues[q];
        self.mem
            .write_slice(&idx.to_le_bytes(), GuestAddress(dq.avail + 2))
            .unwrap();
        dq.avail_idx = idx;
    }

    pub fn notify(&self, q: u32) {
        self.writel(regs::QUEUE_NOTIFY, q);
    }

    pub fn read16(&self, addr: u64) -> u16 {
        let mut b = [0u8; 2];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        u16::from_le_bytes(b)
    }
    fn write16(&self, addr: u64, v: u16) {
        self.mem
            .write_slice(&v.to_le_bytes(), GuestAddress(addr))
            .unwrap();
    }

    /// virtqueue_kick_prepare + virtqueue_notify: with event idx, kick only
    /// if the chains published since the last kick crossed the device's
    /// avail_event; without it, unless the device set VRING_USED_F_NO_NOTIFY.
    /// Returns whether the device was notified.
    pub fn kick(&mut self, q: usize) -> bool {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let dq = &self.queues[q];
        let new = dq.avail_idx;
        let old = new.wrapping_sub(dq.num_added);
        let needed = if dq.event_idx {
            vring_need_event(self.read16(dq.avail_event_addr()), new, old)
        } else {
            self.read16(dq.used) & 1 == 0
        };
        self.queues[q].num_added = 0;
        if needed {
            self.notify(q as u32);
        }
        needed
    }

    /// virtqueue_disable_cb: no used-buffer interrupts for now. With event
    /// idx used_event goes just behind the used index (Linux writes a
    /// similar "far away" value), else VRING_AVAIL_F_NO_INTERRUPT.
    pub fn disable_cb(&self, q: usize) {
        let dq = &self.queues[q];
        if dq.event_idx {
            self.write16(dq.used_event_addr(), dq.last_used.wrapping_sub(1));
        } else {
            self.write16(dq.avail, 1);
        }
    }

    /// virtqueue_enable_cb_prepare + virtqueue_poll: interrupt on the next
    /// used buffer (used_event = last seen used index); `true` if nothing is
    /// pending, i.e. the driver may sleep.
    pub fn enable_cb(&self, q: usize) -> bool {
        let dq = &self.queues[q];
        if dq.event_idx {
            self.write16(dq.used_event_addr(), dq.last_used);
        } else {
            self.write16(dq.avail, 0);
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.used_idx(q) == dq.last_used
    }

    /// virtqueue_enable_cb_delayed's idea: interrupt only once `n` more
    /// buffers are used (event idx only).
    pub fn enable_cb_after(&self, q: usize, n: u16) {
        let dq = &self.queues[q];
        assert!(dq.event_idx);
        self.write16(dq.used_event_addr(), dq.last_used.wrapping_add(n - 1));
    }

    /// Whether an interrupt arrives within `t` (acked if so).
    pub fn irq_within(&self, t: Duration) -> bool {
        self.wait_irq(t).is_some()
    }

    /// virtqueue_add_sgs + virtqueue_kick: one chain, consecutive descriptors.
    pub fn submit(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let head = self.add_chain(q, bufs);
        self.kick(q);
        head
    }

    /// Adds a chain without notifying.
    pub fn add_chain(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let size = self.queues[q].size;
        let head = self.queues[q].next_desc % size;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = (head + k as u16) % size;
            let last = k + 1 == bufs.len();
            let flags = if w { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            self.write_desc(q, i, addr, len, flags, (i + 1) % size);
        }
        self.queues[q].next_desc = (head + bufs.len() as u16) % size;
        self.publish(q, head);
        self.queues[q].num_added = self.queues[q].num_added.wrapping_add(1);
        head
    }

    pub fn used_idx(&self, q: usize) -> u16 {
        let mut b = [0u8; 2];
        self.mem
            .read_slice(&mut b, GuestAddress(self.queues[q].used + 2))
            .unwrap();
        u16::from_le_bytes(b)
    }

    /// Waits for the interrupt, acks it like vm_interrupt, and returns the status bits.
    pub fn wait_irq(&self, timeout: Duration) -> Option<u32> {
        let mut p = libc::pollfd {
            fd: self.line.eventfd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
        if r <= 0 {
            return None;
        }
        self.line.take();
        let st = self.readl(regs::INTERRUPT_STATUS);
        self.writel(regs::INTERRUPT_ACK, st);
        Some(st)
    }

    /// Next used element (id, len), waiting up to 5 s (interrupt-driven).
    pub fn wait_used(&mut self, q: usize) -> (u32, u32) {
        self.try_wait_used(q, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no used buffer on queue {q} (status {:#x})", self.status()))
    }

    /// Like Linux's NAPI/callback loop: take a used buffer if there is one,
    /// else re-enable interrupts (used_event) and sleep until one comes.
    pub fn try_wait_used(&mut self, q: usize, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(u) = self.poll_used(q) {
                return Some(u);
            }
            if !self.enable_cb(q) {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let _ = self.wait_irq((deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Next used element without waiting and without touching interrupt
    /// suppression (virtqueue_get_buf).
    pub fn poll_used(&mut self, q: usize) -> Option<(u32, u32)> {
        if self.used_idx(q) == self.queues[q].last_used {
            return None;
        }
        // virtio_rmb: the entry is read after the index.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let dq = &mut self.queues[q];
        let slot = dq.used + 4 + 8 * u64::from(dq.last_used % dq.size);
        let mut e = [0u8; 8];
        self.mem.read_slice(&mut e, GuestAddress(slot)).unwrap();
        dq.last_used = dq.last_used.wrapping_add(1);
        Some((
            u32::from_le_bytes(e[0..4].try_into().unwrap()),
            u32::from_le_bytes(e[4..8].try_into().unwrap()),
        ))
    }

    /// Waits until the device reports NEEDS_RESET (and a config interrupt).
    pub fn wait_needs_reset(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.status() & status::NEEDS_RESET != 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("zvisor-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The EVENT_IDX contract on queue `q` of a negotiated device, for requests
/// the device completes on its own (`add` publishes one, without a kick):
/// (c) every kick the device needs comes: after each completion the device
/// re-armed avail_event, so a Linux-style conditional kick fires;
/// (b) with used_event parked behind, completions raise no interrupt, and
/// `enable_cb_after(n)` gets exactly the n-th one;
/// (a) every request is served throughout.
pub fn check_event_idx(
    d: &mut Driver,
    g: &mut Guest,
    q: usize,
    add: &mut dyn FnMut(&mut Driver, &mut Guest) -> u16,
) {
    assert!(d.features & features::RING_EVENT_IDX != 0, "not negotiated");
    let t = Duration::from_secs(5);
    // (c) Idle device, one request at a time: each kick is needed and sent.
    assert!(wait_rearmed(d, q), "avail_event not published");
    for i in 0..4 {
        assert!(d.enable_cb(q));
        let head = add(d, g);
        assert!(d.kick(q), "round {i}: device did not re-arm avail_event");
        assert!(d.irq_within(t), "round {i}: no interrupt");
        assert_eq!(d.poll_used(q).map(|u| u.0), Some(u32::from(head)));
        // The device publishes avail_event before it sleeps.
        assert!(wait_rearmed(d, q), "round {i}: avail_event not published");
    }
    // (b) Interrupts off: a burst is served silently.
    d.disable_cb(q);
    let mut heads = Vec::new();
    for _ in 0..6 {
        heads.push(u32::from(add(d, g)));
        d.kick(q);
    }
    let deadline = Instant::now() + t;
    let mut got = Vec::new();
    while got.len() < heads.len() {
        assert!(Instant::now() < deadline, "burst not served: {got:?}");
        match d.poll_used(q) {
            Some(u) => got.push(u.0),
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    assert_eq!(got, heads, "served in order");
    assert!(
        !d.irq_within(Duration::from_millis(200)),
        "interrupt despite used_event"
    );
    // Interrupt only on the 3rd of the next 3 completions.
    d.enable_cb_after(q, 3);
    for k in 0..3 {
        add(d, g);
        d.kick(q);
        if k < 2 {
            let deadline = Instant::now() + t;
            while d.used_idx(q) != d.queues[q].last_used.wrapping_add(k + 1) {
                assert!(Instant::now() < deadline, "request {k} not served");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(
                !d.irq_within(Duration::from_millis(100)),
                "interrupt before used_event was crossed"
            );
        }
    }
    assert!(d.irq_within(t), "no interrupt when used_event was crossed");
    for _ in 0..3 {
        assert!(d.poll_used(q).is_some());
    }
}

/// Waits (up to 5 s) until the device has published avail_event = the
/// driver's current avail index, i.e. it wants a kick for the next chain.
pub fn wait_rearmed(d: &Driver, q: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let dq = &d.queues[q];
    while Instant::now() < deadline {
        if d.read16(dq.avail_event_addr()) == dq.avail_idx {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

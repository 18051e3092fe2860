//! The virtio-mmio transport (virtio 1.2, 4.2; "version 2", no legacy).
//!
//! [`MmioTransport`] wraps any [`VirtioDevice`] and sits on the core's MMIO
//! [`Bus`](crate::bus::Bus). Queue notifications arrive either as writes to
//! `QueueNotify` or directly on the per-queue [`EventFd`]s the arch can
//! register as KVM ioeventfds at [`NOTIFY_OFFSET`] (datamatch = queue index);
//! interrupts go out through an [`InterruptLine`] (a KVM irqfd).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::{features, status, ActiveQueue, InterruptReason, VirtioDevice, VirtioInterrupt};
use crate::bus::BusDevice;
use crate::interrupt::InterruptLine;
use crate::memory::GuestMemory;

/// Size of one virtio-mmio window (registers + config space).
pub const MMIO_SIZE: u64 = 0x200;
/// Offset of `QueueNotify`, where an ioeventfd may be registered.
pub const NOTIFY_OFFSET: u64 = 0x50;
/// "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Vendor id reported to the guest ("ZVSR").
pub const VENDOR_ID: u32 = 0x5253_565a;

/// Register offsets.
#[allow(missing_docs)]
pub mod regs {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// `InterruptStatus` bit: used buffers.
pub const INT_VRING: u32 = 1;
/// `InterruptStatus` bit: configuration change.
pub const INT_CONFIG: u32 = 2;

/// State shared between the transport and the device's worker thread.
struct Shared {
    interrupt_status: AtomicU32,
    needs_reset: AtomicBool,
    config_generation: AtomicU32,
    line: Arc<dyn InterruptLine>,
}

impl VirtioInterrupt for Shared {
    fn trigger(&self, reason: InterruptReason) -> std::io::Result<()> {
        let bit = match reason {
            InterruptReason::Queue(_) => INT_VRING,
            InterruptReason::Config => {
                self.config_generation.fetch_add(1, Ordering::SeqCst);
                INT_CONFIG
            }
        };
        self.interrupt_status.fetch_or(bit, Ordering::SeqCst);
        self.line.trigger()
    }

    fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
        self.interrupt_status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        if let Err(e) = self.line.trigger() {
            tracing::error!("cannot raise virtio config interrupt: {e}");
        }
    }
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    shared: Arc<Shared>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    /// The driver wrote an invalid value (size, alignment) to this queue.
    queue_bad: Vec<bool>,
    notify: Vec<EventFd>,
    status: u32,
    active: bool,
}

impl MmioTransport {
    /// Wraps `device`; `line` is the interrupt line wired to this window.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        line: Arc<dyn InterruptLine>,
    ) -> std::io::Result<Self> {
        let sizes = device.queue_max_sizes().to_vec();
        let mut queues = Vec::with_capacity(sizes.len());
        let mut notify = Vec::with_capacity(sizes.len());
        for &max in &sizes {
            queues.push(new_queue(max)?);
            notify.push(EventFd::new(libc::EFD_NONBLOCK)?);
        }
        Ok(Self {
            device,
            mem,
            shared: Arc::new(Shared {
                interrupt_status: AtomicU32::new(0),
                needs_reset: AtomicBool::new(false),
                config_generation: AtomicU32::new(0),
                line,
            }),
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queue_bad: vec![false; sizes.len()],
            queues,
            notify,
            status: 0,
            active: false,
        })
    }

    /// Per-queue notification eventfds with their datamatch value (the queue
    /// index), to register as ioeventfds at `base + NOTIFY_OFFSET`.
    pub fn queue_notifiers(&self) -> impl Iterator<Item = (u32, &EventFd)> {
        self.notify.iter().enumerate().map(|(i, e)| (i as u32, e))
    }

    /// Whether the device is running (`DRIVER_OK` accepted).
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn device_status(&self) -> u32 {
        let mut s = self.status;
        if self.shared.needs_reset.load(Ordering::SeqCst) {
            s |= status::NEEDS_RESET;
        }
        s
    }

    fn reset(&mut self) {
        if self.active && !self.device.reset() {
            tracing::error!("virtio device cannot be reset; marking it failed");
            self.status = status::FAILED;
            return;
        }
        self.active = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for (q, bad) in self.queues.iter_mut().zip(self.queue_bad.iter_mut()) {
            q.reset();
            *bad = false;
        }
        for e in &self.notify {
            let _ = e.read();
        }
        self.shared.interrupt_status.store(0, Ordering::SeqCst);
        self.shared.needs_reset.store(false, Ordering::SeqCst);
    }

    fn fail(&self, why: &str) {
        tracing::warn!("virtio-mmio: {why}; device needs reset");
        self.shared.set_needs_reset();
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        if v & old != old {
            tracing::debug!("virtio-mmio: driver cleared status bits {old:#x} -> {v:#x}; ignored");
            return;
        }
        let mut v = v & !status::NEEDS_RESET;
        let newly = v & !old;
        if newly & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let acked = self.driver_features;
            if acked & !offered != 0 || acked & features::VERSION_1 == 0 {
                tracing::warn!(
                    "virtio-mmio: driver features {acked:#x} not acceptable (offered {offered:#x}, VERSION_1 required)"
                );
                v &= !status::FEATURES_OK;
            } else {
                self.device.ack_features(acked);
            }
        }
        self.status = v;
        if newly & status::DRIVER_OK != 0 && !self.active {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & status::FEATURES_OK == 0 {
            return self.fail("DRIVER_OK without FEATURES_OK");
        }
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        for (i, q) in self.queues.iter().enumerate() {
            if self.queue_bad[i] || !q.ready() || !q.is_valid(&self.mem) {
                return self.fail(&format!("queue {i} is not set up validly at DRIVER_OK"));
            }
        }
        let mut active = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter_mut().enumerate() {
            let notify = match self.notify[i].try_clone() {
                Ok(e) => e,
                Err(e) => return self.fail(&format!("cannot clone notify eventfd: {e}")),
            };
            // Notifications before DRIVER_OK are not served one by one; the
            // device looks at every queue once right after activation.
            let _ = self.notify[i].read();
            let max = q.max_size();
            let mut queue = std::mem::replace(q, new_queue(max).unwrap_or_default());
            queue.set_event_idx(event_idx);
            // Keep the driver's configuration visible for register reads.
            copy_config(&queue, q);
            active.push(ActiveQueue {
                index: i as u16,
                queue,
                notify,
            });
        }
        let irq: Arc<dyn VirtioInterrupt> = self.shared.clone();
        match self.device.activate(self.mem.clone(), irq, active) {
            Ok(()) => {
                self.active = true;
                // Linux's virtio-rng (and others) post a buffer and kick
                // during probe, before DRIVER_OK, and then wait for it. Look
                // at every queue once now, as QEMU does at DRIVER_OK; an empty
                // ring costs the device one wakeup.
                for n in &self.notify {
                    if let Err(e) = n.write(1) {
                        tracing::warn!("virtio-mmio: cannot signal queue at DRIVER_OK: {e}");
                    }
                }
            }
            Err(e) => self.fail(&format!("activation failed: {e}")),
        }
    }

    fn queue_mut(&mut self) -> Option<&mut Queue> {
        if self.status & status::DRIVER_OK != 0 {
            tracing::debug!("virtio-mmio: queue register written after DRIVER_OK; ignored");
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn set_queue_addr(&mut self, which: u64, v: u32) {
        let sel = self.queue_sel as usize;
        let Some(q) = self.queue_mut() else { return };
        let old = match which {
            regs::QUEUE_DESC_LOW | regs::QUEUE_DESC_HIGH => q.desc_table(),
            regs::QUEUE_AVAIL_LOW | regs::QUEUE_AVAIL_HIGH => q.avail_ring(),
            _ => q.used_ring(),
        };
        let new = if which & 4 == 0 {
            (old & !0xffff_ffff) | u64::from(v)
        } else {
            (old & 0xffff_ffff) | (u64::from(v) << 32)
        };
        let r = match which {
            regs::QUEUE_DESC_LOW | regs::QUEUE_DESC_HIGH => {
                q.try_set_desc_table_address(GuestAddress(new))
            }
            regs::QUEUE_AVAIL_LOW | regs::QUEUE_AVAIL_HIGH => {
                q.try_set_avail_ring_address(GuestAddress(new))
            }
            _ => q.try_set_used_ring_address(GuestAddress(new)),
        };
        // Alignment lives in the low half, so a refusal here is final.
        if r.is_err() {
            tracing::debug!("virtio-mmio: misaligned ring address {new:#x} for queue {sel}");
            self.queue_bad[sel] = true;
        }
    }

    fn read_reg(&self, off: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match off {
            regs::MAGIC_VALUE => MAGIC,
            regs::VERSION => 2,
            regs::DEVICE_ID => self.device.device_type(),
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            regs::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            regs::INTERRUPT_STATUS => self.shared.interrupt_status.load(Ordering::SeqCst),
            regs::STATUS => self.device_status(),
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                u32::MAX
            }
            regs::CONFIG_GENERATION => self.shared.config_generation.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u64, v: u32) {
        match off {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            regs::DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK != 0 {
                    tracing::debug!("virtio-mmio: features written after FEATURES_OK; ignored");
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {
                        if v != 0 {
                            tracing::debug!("virtio-mmio: driver acked unknown feature word");
                            self.driver_features |= 1 << 63; // never offered: fails FEATURES_OK
                        }
                    }
                }
            }
            regs::QUEUE_SEL => self.queue_sel = v,
            regs::QUEUE_NUM => {
                let sel = self.queue_sel as usize;
                let Some(q) = self.queue_mut() else { return };
                let ok = u16::try_from(v)
                    .ok()
                    .is_some_and(|n| q.try_set_size(n).is_ok());
                if !ok {
                    tracing::debug!("virtio-mmio: invalid size {v} for queue {sel}");
                    self.queue_bad[sel] = true;
                }
            }
            regs::QUEUE_READY => {
                if let Some(q) = self.queue_mut() {
                    q.set_ready(v == 1);
                }
            }
            regs::QUEUE_NOTIFY => {
                if !self.active {
                    tracing::debug!("virtio-mmio: queue {v} notified before DRIVER_OK; ignored");
                    return;
                }
                match self.notify.get(v as usize) {
                    Some(e) => {
                        if let Err(e) = e.write(1) {
                            tracing::error!("virtio-mmio: cannot signal queue {v}: {e}");
                        }
                    }
                    None => tracing::debug!("virtio-mmio: notify for nonexistent queue {v}"),
                }
            }
            regs::INTERRUPT_ACK => {
                self.shared.interrupt_status.fetch_and(!v, Ordering::SeqCst);
            }
            regs::STATUS => self.write_status(v),
            regs::QUEUE_DESC_LOW
            | regs::QUEUE_DESC_HIGH
            | regs::QUEUE_AVAIL_LOW
            | regs::QUEUE_AVAIL_HIGH
            | regs::QUEUE_USED_LOW
            | regs::QUEUE_USED_HIGH => self.set_queue_addr(off, v),
            regs::SHM_SEL | regs::QUEUE_RESET => {}
            _ => tracing::debug!("virtio-mmio: write to read-only/unknown register {off:#x}"),
        }
    }
}

fn new_queue(max: u16) -> std::io::Result<Queue> {
    Queue::new(max).map_err(|e| std::io::Error::other(format!("queue size {max}: {e}")))
}

fn copy_config(from: &Queue, to: &mut Queue) {
    let _ = to.try_set_size(from.size());
    let _ = to.try_set_desc_table_address(GuestAddress(from.desc_table()));
    let _ = to.try_set_avail_ring_address(GuestAddress(from.avail_ring()));
    let _ = to.try_set_used_ring_address(GuestAddress(from.used_ring()));
    to.set_ready(from.ready());
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            self.device.read_config(offset - regs::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::debug!("virtio-mmio: bad register read {offset:#x}/{}", data.len());
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            if self.status & status::FAILED == 0 {
                self.device.write_config(offset - regs::CONFIG, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::debug!("virtio-mmio: bad register write {offset:#x}/{}", data.len());
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

//! Split-ring fast path: the descriptor table, avail ring and used ring
//! resolved to host pointers once, when the device starts, instead of a
//! `virtio-queue`/vm-memory region lookup, bounds check and copy for every
//! descriptor, avail entry and used element.
//!
//! [`SplitRing`] mirrors, step by step, what [`super::pop_chain_into`],
//! [`super::add_used`], [`super::quiesce`], [`super::rearm`] and
//! [`super::signal_used`] do through `virtio-queue` 0.18 (the differential
//! test in `queue/fast_tests.rs` and the `blk_request` fuzz target check that
//! on random and malicious rings): the same walk
//! limits (head and every `next` against the table size, at most table-size
//! descriptors, one level of indirect table whose length is a multiple of
//! 16, 4 GiB in total), the same range checks, the same errors, the same
//! `next_avail`/`next_used` in the [`Queue`] and the same bytes in the used
//! ring. It applies only when each of the three rings lies entirely inside
//! one guest RAM region and the queue size is a power of two; otherwise
//! [`FastQueue`] uses the `virtio-queue` path.

use std::num::Wrapping;
use std::ptr;
use std::sync::atomic::{fence, AtomicU16, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::{Chain, ChainError, Segment, AVAIL_F_NO_INTERRUPT};
use crate::memory::GuestMemory;
use crate::virtio::{InterruptReason, VirtioInterrupt};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const USED_F_NO_NOTIFY: u16 = 1;

#[derive(Clone, Copy)]
struct Region {
    start: u64,
    len: u64,
    host: *mut u8,
}

/// Guest RAM's regions as (guest start, length, host address): a range
/// check is a compare per region (zvisor maps one or two) instead of a
/// lookup. Holds a clone of the guest memory so that the host addresses stay
/// mapped while it lives.
pub struct RamMap {
    regions: Vec<Region>,
    mem: GuestMemory,
}

// SAFETY: the host addresses point into mappings owned (through `mem`'s
// reference counts) by this value; nothing here is thread-local.
unsafe impl Send for RamMap {}

impl RamMap {
    /// The regions of `mem`; `None` if a region has no host mapping.
    pub fn new(mem: &GuestMemory) -> Option<Self> {
        let mut regions = Vec::new();
        for r in mem.iter() {
            let host = r.get_host_address(MemoryRegionAddress(0)).ok()?;
            regions.push(Region {
                start: r.start_addr().0,
                len: r.len(),
                host,
            });
        }
        Some(Self {
            regions,
            mem: mem.clone(),
        })
    }

    /// Host address of `[addr, addr+len)` if the range lies inside one region.
    #[inline]
    pub fn host(&self, addr: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            let Some(off) = addr.checked_sub(r.start) else {
                continue;
            };
            if off <= r.len && len <= r.len - off {
                // In bounds of the mapping by the check above.
                return Some(r.host.wrapping_add(off as usize));
            }
        }
        None
    }

    /// Whether `[addr, addr+len)` is guest RAM (also across adjacent regions).
    #[inline]
    pub fn in_ram(&self, addr: u64, len: u32) -> bool {
        self.host(addr, u64::from(len)).is_some()
            || GuestMemoryBackend::check_range(&self.mem, GuestAddress(addr), len as usize)
    }
}

/// Copies of at most this many bytes (headers, status bytes, ids, ranges)
/// are done here byte by byte; longer ones go through vm-memory.
const SMALL_COPY: usize = 64;

impl super::GuestRam for RamMap {
    fn read_at(&self, addr: GuestAddress, buf: &mut [u8]) -> bool {
        if buf.len() <= SMALL_COPY {
            if let Some(p) = self.host(addr.0, buf.len() as u64) {
                for (i, b) in buf.iter_mut().enumerate() {
                    // SAFETY: `host` found the whole range inside one mapped
                    // region; volatile because the guest may write it.
                    *b = unsafe { ptr::read_volatile(p.add(i)) };
                }
                return true;
            }
        }
        super::read_at(&self.mem, addr, buf)
    }
    fn write_at(&self, addr: GuestAddress, buf: &[u8]) -> bool {
        if buf.len() <= SMALL_COPY {
            if let Some(p) = self.host(addr.0, buf.len() as u64) {
                for (i, b) in buf.iter().enumerate() {
                    // SAFETY: as in `read_at`.
                    unsafe { ptr::write_volatile(p.add(i), *b) };
                }
                return true;
            }
        }
        super::write_at(&self.mem, addr, buf)
    }
    fn push_iovecs(&self, addr: GuestAddress, len: u64, out: &mut Vec<libc::iovec>) -> Option<()> {
        match self.host(addr.0, len) {
            Some(p) => {
                out.push(libc::iovec {
                    iov_base: p.cast(),
                    iov_len: usize::try_from(len).ok()?,
                });
                Some(())
            }
            None => self.mem.push_iovecs(addr, len, out),
        }
    }
}

struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn parse_desc(b: [u8; 16]) -> Desc {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[0..8]);
    Desc {
        addr: u64::from_le_bytes(a),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    }
}

/// Where the descriptors of the chain being walked come from.
enum Table {
    /// Host address of a table that lies inside one region.
    Host(*const u8),
    /// An indirect table that does not: read descriptor by descriptor.
    Guest(u64),
}

/// The fast path's view of one split virtqueue (see the module doc).
pub struct SplitRing {
    ram: RamMap,
    size: u16,
    desc: *const u8,
    avail: *const u8,
    used: *mut u8,
    /// Used entries added since the last `signal_used` (virtio-queue's
    /// `num_added`, which is private to its `Queue`).
    num_added: Wrapping<u16>,
}

// SAFETY: the pointers point into guest RAM kept mapped by `ram`; the ring is
// used by one thread at a time (the device's worker).
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// Resolves `q`'s rings in `mem`; `None` when the fast path does not
    /// apply (queue not ready, size not a power of two, a ring outside one
    /// region or misaligned).
    pub fn new(q: &Queue, mem: &GuestMemory) -> Option<Self> {
        let size = q.size();
        if !q.ready() || q.avail_ring() == 0 || size == 0 || !size.is_power_of_two() {
            return None;
        }
        let n = u64::from(size);
        let ram = RamMap::new(mem)?;
        let desc = ram.host(q.desc_table(), 16 * n)?;
        let avail = ram.host(q.avail_ring(), 6 + 2 * n)?;
        let used = ram.host(q.used_ring(), 6 + 8 * n)?;
        // virtio-queue refuses misaligned ring addresses; the host mapping
        // is page-aligned, so this holds, and the atomics below need it.
        if !(avail as usize).is_multiple_of(2) || !(used as usize).is_multiple_of(4) {
            return None;
        }
        Some(Self {
            ram,
            size,
            desc,
            avail,
            used,
            num_added: Wrapping(0),
        })
    }

    /// The region table this ring checks buffers against.
    pub fn ram(&self) -> &RamMap {
        &self.ram
    }

    #[inline]
    fn avail_u16(&self, off: usize, order: Ordering) -> u16 {
        // SAFETY: every caller passes an even `off` < 6 + 2 * size, inside
        // the avail ring that `new` found in RAM and 2-byte aligned.
        let a = unsafe { AtomicU16::from_ptr(self.avail.add(off).cast_mut().cast()) };
        u16::from_le(a.load(order))
    }

    #[inline]
    fn used_u16(&self, off: usize) -> &AtomicU16 {
        // SAFETY: every caller passes `off` 0, 2 or 4 + 8 * size, inside the
        // used ring that `new` found in RAM and 4-byte aligned.
        unsafe { AtomicU16::from_ptr(self.used.add(off).cast()) }
    }

    #[inline]
    fn read_desc(&self, table: &Table, index: u16) -> Option<Desc> {
        let off = u64::from(index) * 16;
        let raw = match *table {
            // SAFETY: `index` is below the table's size (the caller checks),
            // and the whole table lies in one mapped region (`new` for the
            // ring's table, `RamMap::host` for an indirect one). The guest
            // may write it concurrently: a volatile copy of plain bytes.
            Table::Host(p) => unsafe { ptr::read_volatile(p.add(off as usize).cast::<[u8; 16]>()) },
            Table::Guest(base) => self
                .ram
                .mem
                .read_obj::<[u8; 16]>(GuestAddress(base.checked_add(off)?))
                .ok()?,
        };
        Some(parse_desc(raw))
    }

    /// [`super::pop_chain_into`] through the cached pointers.
    pub fn pop_chain_into(&mut self, q: &mut Queue, chain: &mut Chain) -> Result<bool, ChainError> {
        let next_avail = Wrapping(q.next_avail());
        // Acquire: the ring entries and descriptors the driver wrote before
        // publishing this index are visible below.
        let idx = Wrapping(self.avail_u16(2, Ordering::Acquire));
        if (idx - next_avail).0 > self.size {
            return Err(ChainError::Ring(
                virtio_queue::Error::InvalidAvailRingIndex.to_string(),
            ));
        }
        if idx == next_avail {
            return Ok(false);
        }
        let slot = usize::from(next_avail.0 & (self.size - 1));
        let head = self.avail_u16(4 + 2 * slot, Ordering::Acquire);
        q.set_next_avail((next_avail + Wrapping(1)).0);
        self.walk(head, chain)?;
        Ok(true)
    }

    /// Walks and validates the chain at `head` exactly as virtio-queue's
    /// `DescriptorChain` iterator plus `pop_chain_into`'s checks do.
    fn walk(&self, head: u16, chain: &mut Chain) -> Result<(), ChainError> {
        chain.head = head;
        chain.readable.clear();
        chain.writable.clear();
        let mut table = Table::Host(self.desc);
        let mut table_size = self.size;
        let mut next = head;
        let mut ttl = self.size;
        let mut indirect = false;
        let mut total = 0u32;
        let mut count = 0usize;
        let mut last_has_next = false;
        while ttl > 0 && next < table_size {
            let Some(d) = self.read_desc(&table, next) else {
                break;
            };
            if d.flags & F_INDIRECT != 0 {
                // One level only, a whole number of descriptors, at most
                // 65535 of them; the indirect descriptor's own NEXT is ignored.
                if indirect || !d.len.is_multiple_of(16) {
                    break;
                }
                let n = d.len / 16;
                let Ok(n) = u16::try_from(n) else {
                    break;
                };
                table = match self.ram.host(d.addr, u64::from(d.len)) {
                    Some(p) => Table::Host(p),
                    None => Table::Guest(d.addr),
                };
                table_size = n;
                next = 0;
                ttl = n;
                indirect = true;
                continue;
            }
            // The chain may not exceed 4 GiB (virtio 1.2, 2.7.5.2).
            let Some(t) = total.checked_add(d.len) else {
                break;
            };
            total = t;
            let has_next = d.flags & F_NEXT != 0;
            if has_next {
                next = d.next;
                ttl -= 1;
            } else {
                ttl = 0;
            }
            count += 1;
            last_has_next = has_next;
            if d.len > 0 && !self.ram.in_ram(d.addr, d.len) {
                return Err(ChainError::OutsideRam {
                    head,
                    addr: d.addr,
                    len: d.len,
                });
            }
            let seg = Segment {
                addr: GuestAddress(d.addr),
                len: d.len,
            };
            chain.push(seg, d.flags & F_WRITE != 0)?;
        }
        if count == 0 {
            return Err(ChainError::Empty(head));
        }
        if last_has_next {
            return Err(ChainError::Unterminated(head));
        }
        Ok(())
    }

    /// [`super::add_used`] through the cached pointers.
    pub fn add_used(&mut self, q: &mut Queue, head: u16, len: u32) -> Result<(), ChainError> {
        if head >= self.size {
            return Err(ChainError::Ring(
                virtio_queue::Error::InvalidDescriptorIndex.to_string(),
            ));
        }
        let next_used = Wrapping(q.next_used());
        let slot = usize::from(next_used.0 & (self.size - 1));
        // SAFETY: slot < size, so the element lies inside the used ring
        // (`new`: in RAM, 4-byte aligned, 6 + 8 * size bytes).
        unsafe {
            let elem = self.used.add(4 + 8 * slot).cast::<u32>();
            ptr::write_volatile(elem, u32::from(head).to_le());
            ptr::write_volatile(elem.add(1), len.to_le());
        }
        let n = next_used + Wrapping(1);
        q.set_next_used(n.0);
        self.num_added += Wrapping(1);
        // Release: the element is visible before the index that publishes it.
        self.used_u16(2).store(n.0.to_le(), Ordering::Release);
        Ok(())
    }

    /// [`super::quiesce`]: without EVENT_IDX, `VRING_USED_F_NO_NOTIFY`.
    pub fn quiesce(&mut self, q: &Queue) {
        if !q.event_idx_enabled() {
            self.used_u16(0)
                .store(USED_F_NO_NOTIFY.to_le(), Ordering::Relaxed);
        }
    }

    /// [`super::rearm`]: publishes `avail_event` (or clears the flag), then
    /// re-reads the avail index after a full fence.
    pub fn rearm(&mut self, q: &Queue) -> bool {
        if q.event_idx_enabled() {
            let off = 4 + 8 * usize::from(self.size);
            self.used_u16(off)
                .store(q.next_avail().to_le(), Ordering::Relaxed);
        } else {
            self.used_u16(0).store(0, Ordering::Relaxed);
        }
        // The driver writes avail idx then reads avail_event; the device
        // writes avail_event then reads avail idx: one of the two sees the other.
        fence(Ordering::SeqCst);
        self.avail_u16(2, Ordering::Relaxed) != q.next_avail()
    }

    /// [`super::signal_used`]'s decision: whether the driver wants an interrupt.
    pub fn needs_interrupt(&mut self, q: &Queue) -> bool {
        // The used idx stores before, the used_event / flags read after.
        fence(Ordering::SeqCst);
        if q.event_idx_enabled() {
            let used_event =
                Wrapping(self.avail_u16(4 + 2 * usize::from(self.size), Ordering::Relaxed));
            let used_idx = Wrapping(q.next_used());
            let old = used_idx - self.num_added;
            self.num_added = Wrapping(0);
            return used_idx - used_event - Wrapping(1) < used_idx - old;
        }
        self.avail_u16(0, Ordering::Relaxed) & AVAIL_F_NO_INTERRUPT == 0
    }
}

/// A queue served through [`SplitRing`] when it applies, else through
/// `virtio-queue`. The device owns it for as long as it runs; the
/// [`Queue`]'s `next_avail`/`next_used` are kept current either way, so
/// [`FastQueue::into_queue`] hands back a consistent queue (only
/// virtio-queue's private `num_added` is not: call `signal_used` first).
pub struct FastQueue {
    queue: Queue,
    ring: Option<SplitRing>,
}

impl FastQueue {
    /// Uses the fast path if `queue`'s rings allow it.
    pub fn new(queue: Queue, mem: &GuestMemory) -> Self {
        let ring = SplitRing::new(&queue, mem);
        if ring.is_none() {
            tracing::debug!("virtqueue: split-ring fast path does not apply; using virtio-queue");
        }
        Self { queue, ring }
    }

    /// Always the `virtio-queue` path (for comparisons).
    pub fn slow(queue: Queue) -> Self {
        Self { queue, ring: None }
    }

    /// Whether the fast path is in use.
    pub fn is_fast(&self) -> bool {
        self.ring.is_some()
    }

    /// The queue's state.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The queue, with `next_avail` and `next_used` current.
    pub fn into_queue(self) -> Queue {
        self.queue
    }

    /// The fast path's region table, if in use.
    pub fn ram(&self) -> Option<&RamMap> {
        self.ring.as_ref().map(SplitRing::ram)
    }

    /// See [`super::pop_chain_into`].
    #[inline]
    pub fn pop_chain_into(
        &mut self,
        mem: &GuestMemory,
        chain: &mut Chain,
    ) -> Result<bool, ChainError> {
        match &mut self.ring {
            Some(r) => r.pop_chain_into(&mut self.queue, chain),
            None => super::pop_chain_into(&mut self.queue, mem, chain),
        }
    }

    /// See [`super::add_used`].
    #[inline]
    pub fn add_used(&mut self, mem: &GuestMemory, head: u16, len: u32) -> Result<(), ChainError> {
        match &mut self.ring {
            Some(r) => r.add_used(&mut self.queue, head, len),
            None => super::add_used(&mut self.queue, mem, head, len),
        }
    }

    /// See [`super::quiesce`].
    pub fn quiesce(&mut self, mem: &GuestMemory) -> Result<(), ChainError> {
        match &mut self.ring {
            Some(r) => {
                r.quiesce(&self.queue);
                Ok(())
            }
            None => super::quiesce(&mut self.queue, mem),
        }
    }

    /// See [`super::rearm`].
    pub fn rearm(&mut self, mem: &GuestMemory) -> Result<bool, ChainError> {
        match &mut self.ring {
            Some(r) => Ok(r.rearm(&self.queue)),
            None => super::rearm(&mut self.queue, mem),
        }
    }

    /// See [`super::signal_used`].
    pub fn signal_used(
        &mut self,
        mem: &GuestMemory,
        irq: &dyn VirtioInterrupt,
        index: u16,
    ) -> Result<(), crate::virtio::DeviceError> {
        match &mut self.ring {
            Some(r) => {
                if r.needs_interrupt(&self.queue) {
                    irq.trigger(InterruptReason::Queue(index))?;
                }
                Ok(())
            }
            None => super::signal_used(&mut self.queue, mem, irq, index),
        }
    }
}

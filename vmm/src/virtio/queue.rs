//! Hostile-guest-proof access to split virtqueues (on top of `virtio-queue`).
//!
//! [`pop_chain`] turns the next available descriptor chain into a validated
//! [`Chain`]: every buffer lies inside guest RAM, device-readable buffers come
//! before device-writable ones, the chain terminates, and its total length
//! fits the spec's 4 GiB limit. Anything else is a [`ChainError`], which the
//! device turns into `NEEDS_RESET`.
//!
//! These functions go through `virtio-queue` and vm-memory for every ring
//! access. [`fast::FastQueue`] is the same contract through host pointers
//! resolved once at activation ([`fast::SplitRing`]): virtio-blk owns its
//! queue as a `FastQueue` for as long as its worker runs (the other devices
//! stay on the functions here). The fast path keeps the [`Queue`]'s
//! `next_avail`/`next_used` current and keeps its own count of used entries
//! since the last interrupt decision (virtio-queue's `num_added` is private),
//! so a device must not mix the two paths on one queue. A differential test
//! (`fast_tests`) checks both give the same chains, errors, queue state and
//! guest memory on random and malicious rings.

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{InterruptReason, VirtioInterrupt};
use crate::memory::GuestMemory;

pub mod fast;
#[cfg(test)]
mod fast_tests;

/// One guest buffer of a chain, known to lie inside guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A validated descriptor chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// Head descriptor index, returned in the used ring.
    pub head: u16,
    /// Device-readable buffers, in order.
    pub readable: Vec<Segment>,
    /// Device-writable buffers, in order.
    pub writable: Vec<Segment>,
}

/// A broken ring or descriptor chain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The rings themselves are broken (bad avail index, unreadable ring).
    #[error("ring: {0}")]
    Ring(String),
    /// The chain has no descriptors (bad head index or unreadable table).
    #[error("chain {0} is empty or its head is invalid")]
    Empty(u16),
    /// The chain loops, points past the table, or nests indirect tables.
    #[error("chain {0} does not terminate properly")]
    Unterminated(u16),
    /// A buffer lies (partly) outside guest RAM.
    #[error("chain {head}: buffer {addr:#x}+{len:#x} is outside guest RAM")]
    OutsideRam {
        /// Chain head.
        head: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The request has no device-writable byte to answer in.
    #[error("chain {0} has no writable byte for the reply")]
    NoReply(u16),
    /// A device-readable buffer follows a device-writable one.
    #[error("chain {0}: readable buffer after a writable one")]
    Direction(u16),
}

impl Chain {
    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }
    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Appends a descriptor's buffer: device-writable ones go to
    /// `writable`; a readable one after a writable one is a
    /// [`ChainError::Direction`].
    pub(crate) fn push(&mut self, seg: Segment, write: bool) -> Result<(), ChainError> {
        if write {
            self.writable.push(seg);
        } else if !self.writable.is_empty() {
            return Err(ChainError::Direction(self.head));
        } else {
            self.readable.push(seg);
        }
        Ok(())
    }
}

/// Pops and validates the next available chain; `Ok(None)` when the ring is empty.
pub fn pop_chain(q: &mut Queue, mem: &GuestMemory) -> Result<Option<Chain>, ChainError> {
    let mut chain = Chain::default();
    Ok(pop_chain_into(q, mem, &mut chain)?.then_some(chain))
}

/// Like [`pop_chain`], reusing `chain`'s buffers; `Ok(false)` when the ring is empty.
pub fn pop_chain_into(
    q: &mut Queue,
    mem: &GuestMemory,
    chain: &mut Chain,
) -> Result<bool, ChainError> {
    let mut iter = q.iter(mem).map_err(|e| ChainError::Ring(e.to_string()))?;
    let Some(desc_chain) = iter.next() else {
        return Ok(false);
    };
    let head = desc_chain.head_index();
    chain.head = head;
    chain.readable.clear();
    chain.writable.clear();
    let mut last_has_next = false;
    let mut count = 0usize;
    for d in desc_chain {
        count += 1;
        last_has_next = d.has_next();
        let len = d.len();
        if len > 0 && !in_ram(mem, d.addr(), len) {
            return Err(ChainError::OutsideRam {
                head,
                addr: d.addr().0,
                len,
            });
        }
        let seg = Segment {
            addr: d.addr(),
            len,
        };
        chain.push(seg, d.is_write_only())?;
    }
    if count == 0 {
        return Err(ChainError::Empty(head));
    }
    // virtio-queue's iterator stops silently on a loop (its TTL), an index
    // past the table, a bad indirect table, or a descriptor that would take
    // the chain past 4 GiB; the last descriptor then still says "next".
    if last_has_next {
        return Err(ChainError::Unterminated(head));
    }
    Ok(true)
}

/// Whether `[addr, addr+len)` is guest RAM. The common case, a buffer
/// inside one region, costs one region lookup; anything else goes through
/// vm-memory's general (region-by-region) check.
fn in_ram(mem: &GuestMemory, addr: GuestAddress, len: u32) -> bool {
    if let Some(r) = mem.find_region(addr) {
        let off = addr.0 - r.start_addr().0;
        if off
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= r.len())
        {
            return true;
        }
    }
    GuestMemoryBackend::check_range(mem, addr, len as usize)
}

/// Returns a chain to the driver with `len` bytes written.
pub fn add_used(q: &mut Queue, mem: &GuestMemory, head: u16, len: u32) -> Result<(), ChainError> {
    q.add_used(mem, head, len)
        .map_err(|e| ChainError::Ring(e.to_string()))
}

/// Starts a burst of work on `q`: without `VIRTIO_F_EVENT_IDX` sets
/// `VRING_USED_F_NO_NOTIFY` so the driver stops kicking; with it nothing is
/// written (the driver only kicks when it crosses `avail_event`, which moves
/// only in [`rearm`]).
pub fn quiesce(q: &mut Queue, mem: &GuestMemory) -> Result<(), ChainError> {
    q.disable_notification(mem)
        .map_err(|e| ChainError::Ring(e.to_string()))
}

/// Ends a burst on `q` once the device has looked at every chain the
/// driver made available (a pop came back empty) and is about to wait for a
/// notification: publishes `avail_event` = the next index the device will
/// read (or clears `VRING_USED_F_NO_NOTIFY`), then re-reads the avail index.
/// `true` means the driver added chains in between, so the device must go on
/// rather than sleep (the driver may have seen the old `avail_event` and not
/// kicked). Call it before rewinding chains that were popped but not used:
/// the driver must kick for buffers beyond the ones the device already saw.
pub fn rearm(q: &mut Queue, mem: &GuestMemory) -> Result<bool, ChainError> {
    // virtio-queue writes avail_event = next_avail, then fences (SeqCst)
    // before it re-reads avail->idx, as Linux's virtqueue_enable_cb does.
    q.enable_notification(mem)
        .map_err(|e| ChainError::Ring(e.to_string()))
}

/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver asks for no used-buffer interrupts.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Interrupts the guest for queue `index` if the driver wants it: with
/// `VIRTIO_F_EVENT_IDX` only when the used index crossed `used_event` since
/// the last call (virtio-queue's `needs_notification`); without it unless
/// the driver set `VRING_AVAIL_F_NO_INTERRUPT`.
pub fn signal_used(
    q: &mut Queue,
    mem: &GuestMemory,
    irq: &dyn VirtioInterrupt,
    index: u16,
) -> Result<(), super::DeviceError> {
    let ring = |e: virtio_queue::Error| ChainError::Ring(e.to_string());
    // Fences (SeqCst) after the used-ring writes before reading used_event.
    let mut wanted = q.needs_notification(mem).map_err(ring)?;
    if wanted && !q.event_idx_enabled() {
        let flags: u16 = mem
            .read_obj(GuestAddress(q.avail_ring()))
            .map_err(|e| ChainError::Ring(e.to_string()))?;
        wanted = u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0;
    }
    if wanted {
        irq.trigger(InterruptReason::Queue(index))?;
    }
    Ok(())
}

/// Guest RAM as the buffer copies see it: vm-memory's [`GuestMemory`], or
/// the fast path's [`fast::RamMap`] (cached region bounds, same results).
pub trait GuestRam {
    /// Copies `[addr, addr + buf.len())` into `buf`; `false` if not all RAM.
    fn read_at(&self, addr: GuestAddress, buf: &mut [u8]) -> bool;
    /// Copies `buf` to `addr`; `false` (and possibly a partial write) if not all RAM.
    fn write_at(&self, addr: GuestAddress, buf: &[u8]) -> bool;
    /// Appends host iovecs for `[addr, addr + len)`; `None` if not all RAM.
    fn push_iovecs(&self, addr: GuestAddress, len: u64, out: &mut Vec<libc::iovec>) -> Option<()>;
}

impl GuestRam for GuestMemory {
    fn read_at(&self, addr: GuestAddress, buf: &mut [u8]) -> bool {
        read_at(self, addr, buf)
    }
    fn write_at(&self, addr: GuestAddress, buf: &[u8]) -> bool {
        write_at(self, addr, buf)
    }
    fn push_iovecs(&self, addr: GuestAddress, len: u64, out: &mut Vec<libc::iovec>) -> Option<()> {
        // Fast path: the buffer lies in one region.
        if let Ok(slice) = self.get_slice(addr, len as usize) {
            out.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
            return Some(());
        }
        for slice in GuestMemoryBackend::get_slices(self, addr, len as usize) {
            let slice = slice.ok()?;
            out.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
        Some(())
    }
}

/// Copies guest RAM at `addr` into `buf`: one region lookup when the range
/// lies in one region (the case for nearly every buffer), vm-memory's
/// region-by-region copy otherwise. `false` if it is not all RAM.
pub fn read_at(mem: &GuestMemory, addr: GuestAddress, buf: &mut [u8]) -> bool {
    match mem.get_slice(addr, buf.len()) {
        Ok(s) => s.copy_to(buf) == buf.len(),
        Err(_) => mem.read_slice(buf, addr).is_ok(),
    }
}

/// Copies `buf` into guest RAM at `addr`, like [`read_at`].
pub fn write_at(mem: &GuestMemory, addr: GuestAddress, buf: &[u8]) -> bool {
    match mem.get_slice(addr, buf.len()) {
        Ok(s) => {
            s.copy_from(buf);
            true
        }
        Err(_) => mem.write_slice(buf, addr).is_ok(),
    }
}

/// Copies from the chain's segments, starting `offset` bytes in, into `buf`.
/// Returns the bytes copied (short at the end of the segments).
pub fn read_segments<R: GuestRam + ?Sized>(
    mem: &R,
    segs: &[Segment],
    offset: u64,
    buf: &mut [u8],
) -> usize {
    let mut skip = offset;
    let mut done = 0usize;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(buf.len() - done);
        let Some(addr) = s.addr.0.checked_add(skip) else {
            break;
        };
        if !mem.read_at(GuestAddress(addr), &mut buf[done..done + n]) {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}

/// Copies `buf` into the chain's segments starting `offset` bytes in.
/// Returns the bytes copied (short at the end of the segments).
pub fn write_segments<R: GuestRam + ?Sized>(
    mem: &R,
    segs: &[Segment],
    offset: u64,
    buf: &[u8],
) -> usize {
    let mut skip = offset;
    let mut done = 0usize;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(buf.len() - done);
        let Some(addr) = s.addr.0.checked_add(skip) else {
            break;
        };
        if !mem.write_at(GuestAddress(addr), &buf[done..done + n]) {
            break;
        }
        done += n;
        skip = 0;
    }
    done
}

/// Splits `segs` at byte `at`: returns (first `at` bytes, the rest).
pub fn split_segments(segs: &[Segment], at: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = at;
    for s in segs {
        let len = u64::from(s.len);
        if left >= len {
            head.push(*s);
            left -= len;
        } else if left > 0 {
            head.push(Segment {
                addr: s.addr,
                len: left as u32,
            });
            tail.push(Segment {
                addr: GuestAddress(s.addr.0 + left),
                len: (len - left) as u32,
            });
            left = 0;
        } else {
            tail.push(*s);
        }
    }
    (head, tail)
}

/// Host iovecs covering `segs` (which [`pop_chain`] checked are in RAM).
/// The pointers stay valid while `mem` lives (guest RAM is never unmapped
/// while a device runs).
pub fn iovecs(mem: &GuestMemory, segs: &[Segment]) -> Option<Vec<libc::iovec>> {
    let mut v = Vec::with_capacity(segs.len());
    iovecs_range(mem, segs, 0, u64::MAX, &mut v)?;
    Some(v)
}

/// Appends to `out` the host iovecs for `len` bytes of `segs` starting
/// `offset` bytes in (fewer if the segments end first).
pub fn iovecs_range<R: GuestRam + ?Sized>(
    mem: &R,
    segs: &[Segment],
    offset: u64,
    len: u64,
    out: &mut Vec<libc::iovec>,
) -> Option<()> {
    let mut skip = offset;
    let mut left = len;
    for s in segs {
        if left == 0 {
            break;
        }
        let slen = u64::from(s.len);
        if skip >= slen {
            skip -= slen;
            continue;
        }
        let n = (slen - skip).min(left);
        let addr = GuestAddress(s.addr.0.checked_add(skip)?);
        skip = 0;
        left -= n;
        mem.push_iovecs(addr, n, out)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_over_4gib_is_refused_as_unterminated() {
        let mem = crate::memory::create(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let w16 = |a: u64, v: u16| mem.write_obj(v.to_le(), GuestAddress(a)).unwrap();
        let desc = |a: u64, addr: u64, len: u32, flags: u16, next: u16| {
            mem.write_obj(addr.to_le(), GuestAddress(a)).unwrap();
            mem.write_obj(len.to_le(), GuestAddress(a + 8)).unwrap();
            mem.write_obj(flags.to_le(), GuestAddress(a + 12)).unwrap();
            mem.write_obj(next.to_le(), GuestAddress(a + 14)).unwrap();
        };
        let mut q = Queue::new(4).unwrap();
        q.set_desc_table_address(Some(0x1000), Some(0));
        q.set_avail_ring_address(Some(0x2000), Some(0));
        q.set_used_ring_address(Some(0x3000), Some(0));
        q.set_ready(true);
        // An indirect table whose buffers all lie in RAM: `n` x 64 MiB.
        let run = |q: &mut Queue, head: u16, n: u16| {
            let table = 0x10000 + u64::from(head) * 0x2000;
            for i in 0..n {
                let flags = if i + 1 < n { 1 } else { 0 } | 2; // NEXT | WRITE
                desc(table + 16 * u64::from(i), 0, 64 << 20, flags, i + 1);
            }
            desc(
                0x1000 + 16 * u64::from(head),
                table,
                16 * u32::from(n),
                4,
                0,
            );
            w16(0x2004 + 2 * u64::from(head), head);
            w16(0x2002, head + 1);
            pop_chain(q, &mem)
        };
        // 63 x 64 MiB fits under 4 GiB; 64 x 64 MiB is 4 GiB, one byte too many.
        let ok = run(&mut q, 0, 63).unwrap().unwrap();
        assert_eq!(ok.writable_len(), 63 << 26);
        // The iterator stops before the descriptor that crosses 4 GiB.
        assert!(matches!(
            run(&mut q, 1, 64),
            Err(ChainError::Unterminated(1))
        ));
    }

    #[test]
    fn split_at_boundaries() {
        let s = |a, l| Segment {
            addr: GuestAddress(a),
            len: l,
        };
        let segs = [s(0x1000, 16), s(0x2000, 8)];
        assert_eq!(split_segments(&segs, 16), (vec![segs[0]], vec![segs[1]]));
        assert_eq!(
            split_segments(&segs, 4),
            (vec![s(0x1000, 4)], vec![s(0x1004, 12), segs[1]])
        );
        assert_eq!(split_segments(&segs, 100), (segs.to_vec(), vec![]));
    }

    #[test]
    fn segment_copies_and_iovecs_respect_offsets() {
        let mem = crate::memory::create(&[(GuestAddress(0), 0x10000)]).unwrap();
        let segs = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 4,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 0,
            },
            Segment {
                addr: GuestAddress(0x3000),
                len: 6,
            },
        ];
        assert_eq!(write_segments(&mem, &segs, 2, b"abcdefgh"), 8);
        let mut out = [0u8; 10];
        assert_eq!(read_segments(&mem, &segs, 0, &mut out), 10);
        assert_eq!(&out[2..], b"abcdefgh");
        // Past the end: short, never out of the segments.
        assert_eq!(write_segments(&mem, &segs, 8, b"xyz"), 2);
        assert_eq!(read_segments(&mem, &segs, 11, &mut out), 0);
        let mut iov = Vec::new();
        iovecs_range(&mem, &segs, 3, 4, &mut iov).unwrap();
        assert_eq!(
            iov.iter().map(|v| v.iov_len).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }
}

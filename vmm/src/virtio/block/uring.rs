//! io_uring engine for virtio-blk reads and writes: the requests of one
//! wake-up are queued as `READV`/`WRITEV` entries and go to the kernel in a
//! single `io_uring_enter`, which also waits for all of them (page-cached
//! reads complete inside that call). The sync engine (`preadv`/`pwritev`,
//! one syscall per request) is the fallback where io_uring is missing or
//! disabled (`/proc/sys/kernel/io_uring_disabled`, seccomp, qemu-user).

use std::io;
use std::os::fd::RawFd;

use io_uring::{opcode, types, IoUring};
use vm_memory::GuestAddress;

use super::request::status as st;
use super::rw_all;

/// One queued read or write.
pub(super) struct Slot {
    /// Chain head to return.
    pub head: u16,
    /// Where the status byte goes.
    pub status: GuestAddress,
    write: bool,
    off: u64,
    len: u64,
    /// Host iovecs into guest RAM; filled by the caller before [`Ring::push`].
    pub iov: Vec<libc::iovec>,
    res: i32,
}

/// An io_uring with one slot per queued request.
pub(super) struct Ring {
    ring: IoUring,
    slots: Vec<Slot>,
    queued: usize,
    /// The image's fd is registered as fixed file 0 (`IOSQE_FIXED_FILE`:
    /// no fd lookup and reference count per request).
    fixed: bool,
}

// SAFETY: the iovecs only point into guest RAM, which outlives the ring, and
// are used by the thread that owns the ring; nothing is shared.
unsafe impl Send for Ring {}

/// Iovecs one entry may carry (the rest goes the sync way).
pub(super) const MAX_IOV: usize = 512;

impl Ring {
    /// A ring for up to `entries` requests per batch; `Err` if this kernel
    /// (or the emulator this runs under) has no usable io_uring.
    pub fn new(entries: u32) -> io::Result<Self> {
        if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
            if s.trim() != "0" {
                return Err(io::Error::other(
                    "io_uring is disabled (kernel.io_uring_disabled)",
                ));
            }
        }
        let ring = IoUring::new(entries)?;
        // Probe with a no-op: io_uring_setup can exist while submission is
        // refused (seccomp, a half-emulating qemu-user).
        let mut r = Self {
            ring,
            slots: Vec::new(),
            queued: 0,
            fixed: false,
        };
        let nop = opcode::Nop::new().build().user_data(u64::MAX);
        // SAFETY: a NOP references no memory.
        unsafe { r.ring.submission().push(&nop) }.map_err(|_| io::Error::other("SQ full"))?;
        r.ring.submit_and_wait(1)?;
        let res = r.ring.completion().next().map(|c| c.result());
        if res != Some(0) {
            return Err(io::Error::other(format!("io_uring NOP failed: {res:?}")));
        }
        r.slots = (0..entries)
            .map(|_| Slot {
                head: 0,
                status: GuestAddress(0),
                write: false,
                off: 0,
                len: 0,
                iov: Vec::new(),
                res: 0,
            })
            .collect();
        Ok(r)
    }

    /// Registers `fd` (the image) as fixed file 0 for the reads and writes
    /// pushed after this; keeps plain fds where the kernel refuses.
    pub fn register_file(&mut self, fd: RawFd) {
        match self.ring.submitter().register_files(&[fd]) {
            Ok(()) => self.fixed = true,
            Err(e) => tracing::debug!("virtio-blk: io_uring file registration refused ({e})"),
        }
    }

    /// No free slot left: the caller must [`Ring::complete`] first.
    pub fn is_full(&self) -> bool {
        self.queued == self.slots.len()
    }

    /// Requests queued and not completed yet.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The next slot's iovec list, cleared, for the caller to fill.
    pub fn next_iov(&mut self) -> &mut Vec<libc::iovec> {
        let v = &mut self.slots[self.queued].iov;
        v.clear();
        v
    }

    /// Queues the next slot (its iovecs from [`Ring::next_iov`]) as a read
    /// or write of `len` bytes at `off`.
    pub fn push(
        &mut self,
        fd: RawFd,
        head: u16,
        status: GuestAddress,
        write: bool,
        off: u64,
        len: u64,
    ) {
        let i = self.queued;
        let s = &mut self.slots[i];
        s.head = head;
        s.status = status;
        s.write = write;
        s.off = off;
        s.len = len;
        s.res = i32::MIN;
        let (ptr, cnt) = (s.iov.as_ptr(), s.iov.len() as u32);
        macro_rules! entry {
            ($f:expr) => {
                match (write, s.iov.as_slice()) {
                    // One buffer (the usual 4 KiB page): plain READ/WRITE, no
                    // iovec import in the kernel.
                    (false, [v]) => opcode::Read::new($f, v.iov_base.cast(), v.iov_len as u32)
                        .offset(off)
                        .build(),
                    (true, [v]) => opcode::Write::new($f, v.iov_base.cast(), v.iov_len as u32)
                        .offset(off)
                        .build(),
                    (false, _) => opcode::Readv::new($f, ptr, cnt).offset(off).build(),
                    (true, _) => opcode::Writev::new($f, ptr, cnt).offset(off).build(),
                }
            };
        }
        let e = if self.fixed {
            entry!(types::Fixed(0))
        } else {
            entry!(types::Fd(fd))
        };
        // SAFETY: the iovec array lives in `slots[i]`, untouched until
        // `complete` has reaped this entry; the buffers are guest RAM that
        // stays mapped while the device runs. The SQ has a free entry:
        // at most `slots.len()` (= ring entries) are queued at once.
        let pushed = unsafe { self.ring.submission().push(&e.user_data(i as u64)) };
        debug_assert!(pushed.is_ok());
        self.queued += 1;
    }

    /// Submits everything queued, waits for all of it, and calls `done`
    /// for each request in queue order with (slot, status, bytes written to
    /// the guest). Short transfers are finished with the sync engine.
    pub fn complete<E>(
        &mut self,
        fd: RawFd,
        mut done: impl FnMut(&Slot, u8, u32) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<io::Error>,
    {
        let n = self.queued;
        if n == 0 {
            return Ok(());
        }
        let mut reaped = 0;
        while reaped < n {
            match self.ring.submit_and_wait(n - reaped) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
            for c in self.ring.completion() {
                if let Some(s) = self.slots.get_mut(c.user_data() as usize) {
                    s.res = c.result();
                    reaped += 1;
                }
            }
        }
        self.queued = 0;
        for s in &mut self.slots[..n] {
            let (status, written) = finish(fd, s);
            done(s, status, written)?;
        }
        Ok(())
    }
}

impl Ring {
    /// Waits for everything queued and forgets it (the device is failing).
    pub fn abandon(&mut self) {
        let mut left = self.queued;
        while left > 0 {
            match self.ring.submit_and_wait(left) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("virtio-blk: io_uring wait failed: {e}");
                    break;
                }
            }
            left -= self.ring.completion().count().min(left);
        }
        self.queued = 0;
    }
}

/// Status of a reaped slot, finishing a short transfer synchronously.
fn finish(fd: RawFd, s: &mut Slot) -> (u8, u32) {
    if s.res < 0 {
        let e = io::Error::from_raw_os_error(-s.res);
        tracing::warn!("virtio-blk: I/O error at {:#x}: {e}", s.off);
        return (st::IOERR, 0);
    }
    let mut n = s.res as u64;
    if n < s.len {
        // Skip what was done, then let the sync engine do the rest.
        let mut i = 0;
        while n > 0 && i < s.iov.len() {
            let take = (n as usize).min(s.iov[i].iov_len);
            s.iov[i].iov_base = s.iov[i].iov_base.wrapping_byte_add(take);
            s.iov[i].iov_len -= take;
            n -= take as u64;
            if s.iov[i].iov_len == 0 {
                i += 1;
            }
        }
        if let Err(e) = rw_all(fd, &mut s.iov, s.off + s.res as u64, s.write) {
            tracing::warn!("virtio-blk: I/O error at {:#x}: {e}", s.off);
            return (st::IOERR, 0);
        }
    }
    if s.write {
        (st::OK, 0)
    } else {
        (st::OK, s.len as u32)
    }
}

//! virtio-blk on a raw image file.
//!
//! Reads and writes go straight between the image and guest RAM: all the
//! requests of one wake-up in one `io_uring_enter` (see [`uring`]; the image
//! is a registered io_uring file where the kernel allows it), or with
//! `preadv`/`pwritev` where io_uring is unavailable; `VIRTIO_BLK_F_FLUSH` is
//! `fdatasync`; `GET_ID` returns the serial; discard and write-zeroes punch
//! holes. The queue goes through the split-ring fast path ([`FastQueue`])
//! where its rings allow it. Every request is checked against the image
//! size; out-of-range, misdirected or read-only-violating requests get
//! `IOERR`, unknown ones `UNSUPP`.

pub mod request;
mod uring;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_memory::GuestAddress;

use self::request::{byte_range, status as st, Kind, Op, ID_LEN};
use super::queue::fast::{FastQueue, RamMap};
use super::queue::{iovecs_range, write_segments, Chain, ChainError, GuestRam};
use super::worker::{self, EpollCtl, Handler, Worker};
use super::{
    features, types, ActivateError, ActiveQueue, DeviceError, VirtioDevice, VirtioInterrupt,
};
use crate::endian::{le_u64, put_le_u16, put_le_u32, put_le_u64};
use crate::memory::GuestMemory;

/// Feature bits (virtio 1.2, 5.2.3).
pub mod feature_bits {
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// Read-only device.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Flush command.
    pub const FLUSH: u64 = 1 << 9;
    /// Discard command.
    pub const DISCARD: u64 = 1 << 13;
    /// Write-zeroes command.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Config space size.
pub const CONFIG_LEN: usize = 60;
const MAX_DISCARD_SEG: u32 = 1;
/// Completions after which the device interrupts even while still busy.
const SIGNAL_EVERY: usize = 8;
/// Reads/writes per io_uring submission before the device completes them
/// and signals (see `serve`): a deep queue's driver gets used buffers back
/// while the device goes on. 32 (one QD-32 batch) measured best: 8 and 16
/// were 10-20 points slower end-to-end (docs/performance.md).
const URING_CHUNK: usize = 32;
const MAX_DISCARD_SECTORS: u32 = u32::MAX / 512;

/// How to open a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse writes (and offer `VIRTIO_BLK_F_RO`).
    pub readonly: bool,
    /// `GET_ID` answer, at most 20 bytes.
    pub serial: Option<String>,
}

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Open or stat failed.
    #[error("cannot open disk image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds a conflicting lock on the image.
    #[error("disk image {0} is in use by another process")]
    Locked(PathBuf),
    /// Serial longer than 20 bytes.
    #[error("disk serial {0:?} is longer than 20 bytes")]
    Serial(String),
}

/// How reads and writes reach the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// io_uring if this kernel allows it, else sync.
    #[default]
    Auto,
    /// Batched io_uring submissions; fails where io_uring is unavailable.
    Uring,
    /// One `preadv`/`pwritev` per request.
    Sync,
}

struct Disk {
    file: File,
    /// The io_uring engine, if in use.
    ring: Option<uring::Ring>,
    /// Usable bytes: the image size rounded down to whole sectors.
    size: u64,
    readonly: bool,
    id: [u8; ID_LEN],
}

/// A virtio-blk device.
pub struct Block {
    disk: Option<Disk>,
    worker: Option<Worker<BlockHandler>>,
    config: [u8; CONFIG_LEN],
    avail: u64,
    /// Serve the queue through the split-ring fast path where it applies.
    fast_ring: bool,
}

impl Block {
    /// Opens the image and builds the device.
    pub fn new(cfg: &DiskConfig) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: cfg.path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!cfg.readonly)
            .open(&cfg.path)
            .map_err(open_err)?;
        lock(&file, cfg.readonly, &cfg.path)?;
        // Seek to the end rather than stat: a block device (a partition,
        // an LV, a host's /dev/vdX) reports st_size 0.
        let len = (&file).seek(SeekFrom::End(0)).map_err(open_err)?;
        if len % 512 != 0 {
            tracing::warn!(
                "disk image {} is not a whole number of sectors; the last {} bytes are not visible",
                cfg.path.display(),
                len % 512
            );
        }
        let mut id = [0u8; ID_LEN];
        if let Some(s) = &cfg.serial {
            if s.len() > ID_LEN {
                return Err(BlockError::Serial(s.clone()));
            }
            id[..s.len()].copy_from_slice(s.as_bytes());
        }
        let sectors = len / 512;
        let mut avail = features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | feature_bits::SEG_MAX
            | feature_bits::BLK_SIZE
            | feature_bits::FLUSH;
        if cfg.readonly {
            avail |= feature_bits::RO;
        } else {
            avail |= feature_bits::DISCARD | feature_bits::WRITE_ZEROES;
        }
        let mut config = [0u8; CONFIG_LEN];
        // virtio 1.2, 5.2.4: capacity, seg_max, blk_size, then (after
        // geometry and topology) num_queues, the discard and write-zeroes
        // limits and write_zeroes_may_unmap.
        let c = &mut config;
        put_le_u64(c, 0, sectors);
        put_le_u32(c, 12, u32::from(QUEUE_SIZE - 2));
        put_le_u32(c, 20, 512);
        put_le_u16(c, 34, 1);
        put_le_u32(c, 36, MAX_DISCARD_SECTORS);
        put_le_u32(c, 40, MAX_DISCARD_SEG);
        put_le_u32(c, 44, 1);
        put_le_u32(c, 48, MAX_DISCARD_SECTORS);
        put_le_u32(c, 52, MAX_DISCARD_SEG);
        config[56] = 1;
        let mut dev = Self {
            disk: Some(Disk {
                file,
                ring: None,
                size: sectors * 512,
                readonly: cfg.readonly,
                id,
            }),
            worker: None,
            config,
            avail,
            fast_ring: true,
        };
        // Auto never fails: without io_uring the sync engine serves.
        let _ = dev.set_io_engine(IoEngine::Auto);
        Ok(dev)
    }

    /// Chooses the I/O engine (before activation). `Uring` fails with the
    /// reason where io_uring is unavailable; `Auto` falls back to sync.
    pub fn set_io_engine(&mut self, engine: IoEngine) -> io::Result<()> {
        let disk = self
            .disk
            .as_mut()
            .ok_or_else(|| io::Error::other("device is active"))?;
        let ring = match engine {
            IoEngine::Sync => None,
            IoEngine::Uring => Some(uring::Ring::new(u32::from(QUEUE_SIZE))?),
            IoEngine::Auto => match uring::Ring::new(u32::from(QUEUE_SIZE)) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::debug!("virtio-blk: io_uring unavailable ({e}); using preadv/pwritev");
                    None
                }
            },
        };
        disk.ring = ring.map(|mut r| {
            r.register_file(disk.file.as_raw_fd());
            r
        });
        Ok(())
    }

    /// The engine in use: `Uring` or `Sync` (`None` while active).
    pub fn io_engine(&self) -> Option<IoEngine> {
        let d = self.disk.as_ref()?;
        Some(if d.ring.is_some() {
            IoEngine::Uring
        } else {
            IoEngine::Sync
        })
    }

    /// Whether the next activation serves the queue through the split-ring
    /// fast path ([`FastQueue`], the default) or always through
    /// `virtio-queue` (for A/B measurements).
    pub fn set_fast_ring(&mut self, on: bool) {
        self.fast_ring = on;
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        le_u64(&self.config, 0).unwrap_or(0)
    }

    /// Serves `queue` on the calling thread, without a worker; for a
    /// transport that runs devices inline and for measuring the device
    /// model's own cost. Fails if the device is active.
    pub fn process_inline(
        &mut self,
        mem: &GuestMemory,
        queue: &mut FastQueue,
        irq: &dyn VirtioInterrupt,
    ) -> Result<(), DeviceError> {
        let disk = self
            .disk
            .as_mut()
            .ok_or_else(|| io::Error::other("device is active"))?;
        let ram = if queue.is_fast() {
            RamMap::new(mem)
        } else {
            None
        };
        let mem = Ram {
            mem,
            fast: ram.as_ref(),
        };
        process_queue(queue, mem, disk, irq, 0, &mut Scratch::default())
    }
}

fn lock(file: &File, shared: bool, path: &Path) -> Result<(), BlockError> {
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock on an fd we own; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(BlockError::Locked(path.to_path_buf()));
        }
        return Err(BlockError::Open {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        types::BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        self.avail
    }
    fn ack_features(&mut self, _value: u64) {}
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        let index = queues.first().map_or(0, |q| q.index);
        let (notify, mut qs) = worker::split_queues(queues, 1)?;
        let disk = self.disk.take().ok_or(ActivateError::AlreadyActive)?;
        let queue = qs.remove(0);
        let queue = if self.fast_ring {
            FastQueue::new(queue, &mem)
        } else {
            FastQueue::slow(queue)
        };
        let ram = if queue.is_fast() {
            RamMap::new(&mem)
        } else {
            None
        };
        let handler = BlockHandler {
            disk,
            ram,
            mem,
            irq: interrupt.clone(),
            queue,
            index,
            scratch: Scratch::default(),
        };
        let name = "virtio-blk";
        worker::start(
            &mut self.worker,
            &mut self.disk,
            name,
            notify,
            interrupt,
            handler,
            |h| h.disk,
        )
    }
    fn reset(&mut self) -> bool {
        worker::stop(&mut self.worker, &mut self.disk, |h| h.disk)
    }
}

struct BlockHandler {
    disk: Disk,
    /// Region bounds cached for buffer copies (with the fast ring).
    ram: Option<RamMap>,
    mem: GuestMemory,
    irq: Arc<dyn VirtioInterrupt>,
    queue: FastQueue,
    index: u16,
    scratch: Scratch,
}

/// Guest memory as the device uses it: vm-memory for the queue's slow
/// path, and for buffer copies the cached region bounds when the fast ring
/// is on (same results, fewer lookups).
#[derive(Clone, Copy)]
struct Ram<'a> {
    mem: &'a GuestMemory,
    fast: Option<&'a RamMap>,
}

impl GuestRam for Ram<'_> {
    #[inline]
    fn read_at(&self, addr: GuestAddress, buf: &mut [u8]) -> bool {
        match self.fast {
            Some(r) => r.read_at(addr, buf),
            None => self.mem.read_at(addr, buf),
        }
    }
    #[inline]
    fn write_at(&self, addr: GuestAddress, buf: &[u8]) -> bool {
        match self.fast {
            Some(r) => r.write_at(addr, buf),
            None => self.mem.write_at(addr, buf),
        }
    }
    #[inline]
    fn push_iovecs(&self, addr: GuestAddress, len: u64, out: &mut Vec<libc::iovec>) -> Option<()> {
        match self.fast {
            Some(r) => r.push_iovecs(addr, len, out),
            None => self.mem.push_iovecs(addr, len, out),
        }
    }
}

/// Buffers reused from request to request (no allocation per request).
#[derive(Default)]
struct Scratch {
    chain: Chain,
    iov: Vec<libc::iovec>,
}

// SAFETY: the iovecs are rebuilt before every use and only point into guest
// RAM, which outlives the handler; they are never dereferenced across threads.
unsafe impl Send for Scratch {}

impl Handler for BlockHandler {
    fn queue_notified(&mut self, _ctl: &EpollCtl<'_>, _q: usize) -> Result<(), DeviceError> {
        process_queue(
            &mut self.queue,
            Ram {
                mem: &self.mem,
                fast: self.ram.as_ref(),
            },
            &mut self.disk,
            self.irq.as_ref(),
            self.index,
            &mut self.scratch,
        )
    }
}

/// Serves every available request; the unit of work shared by the worker,
/// tests and benches.
fn process_queue(
    q: &mut FastQueue,
    mem: Ram<'_>,
    disk: &mut Disk,
    irq: &dyn VirtioInterrupt,
    index: u16,
    scratch: &mut Scratch,
) -> Result<(), DeviceError> {
    let r = serve(q, mem, disk, irq, index, scratch);
    if r.is_err() {
        // The device is going to NEEDS_RESET: nothing queued may complete
        // into the rings later.
        if let Some(ring) = disk.ring.as_mut() {
            ring.abandon();
        }
    }
    r
}

fn serve(
    q: &mut FastQueue,
    mem: Ram<'_>,
    disk: &mut Disk,
    irq: &dyn VirtioInterrupt,
    index: u16,
    scratch: &mut Scratch,
) -> Result<(), DeviceError> {
    let mut unsignalled = 0usize;
    loop {
        // While busy, ask the driver not to notify (VRING_USED_F_NO_NOTIFY or
        // avail_event); re-enable and re-check before going to sleep.
        q.quiesce(mem.mem)?;
        while q.pop_chain_into(mem.mem, &mut scratch.chain)? {
            let chain = &scratch.chain;
            let Some(req) = request::parse(&mem, chain) else {
                return Err(ChainError::NoReply(chain.head).into());
            };
            if let (Some(ring), Ok(op)) = (disk.ring.as_mut(), &req.op) {
                if queue_rw(
                    ring,
                    mem,
                    &disk.file,
                    disk.size,
                    disk.readonly,
                    chain,
                    op,
                    req.status,
                ) {
                    // Submit in chunks of URING_CHUNK.
                    if ring.queued() >= URING_CHUNK || ring.is_full() {
                        complete_batch(q, mem, disk)?;
                        q.signal_used(mem.mem, irq, index)?;
                        unsignalled = 0;
                    }
                    continue;
                }
                // Anything else runs after the reads and writes before it.
                unsignalled += complete_batch(q, mem, disk)?;
            }
            let (status, written) = match &req.op {
                Ok(op) => execute(mem, disk, chain, op, &mut scratch.iov),
                Err(s) => (*s, 0),
            };
            if status != st::OK {
                tracing::debug!("virtio-blk: request {:?} -> status {status}", req.op);
            }
            complete(q, mem, chain.head, req.status, status, written)?;
            unsignalled += 1;
            if unsignalled >= SIGNAL_EVERY {
                // Let the driver recycle buffers while the device keeps going.
                q.signal_used(mem.mem, irq, index)?;
                unsignalled = 0;
            }
        }
        // One io_uring_enter for everything this pass queued.
        unsignalled += complete_batch(q, mem, disk)?;
        if !q.rearm(mem.mem)? {
            break;
        }
    }
    if unsignalled > 0 {
        q.signal_used(mem.mem, irq, index)?;
    }
    Ok(())
}

/// Status byte, then the used element.
fn complete(
    q: &mut FastQueue,
    mem: Ram<'_>,
    head: u16,
    status_addr: GuestAddress,
    status: u8,
    written: u32,
) -> Result<(), DeviceError> {
    if !mem.write_at(status_addr, &[status]) {
        return Err(io::Error::other("status byte outside guest RAM").into());
    }
    q.add_used(mem.mem, head, written + 1)?;
    Ok(())
}

/// Queues a well-formed in-range read or write on the ring; `false` when
/// the request must go the sync way (other kinds, errors, huge iovec lists).
#[allow(clippy::too_many_arguments)]
fn queue_rw(
    ring: &mut uring::Ring,
    mem: Ram<'_>,
    file: &File,
    size: u64,
    readonly: bool,
    chain: &Chain,
    op: &Op,
    status: GuestAddress,
) -> bool {
    let write = match op.kind {
        Kind::In => false,
        Kind::Out if !readonly => true,
        _ => return false,
    };
    let Some((off, len)) = byte_range(op.sector, op.len, size) else {
        return false;
    };
    let (segs, data_off) = op.data(chain);
    let iov = ring.next_iov();
    if iovecs_range(&mem, segs, data_off, len, iov).is_none() || iov.len() > uring::MAX_IOV {
        return false;
    }
    ring.push(file.as_raw_fd(), chain.head, status, write, off, len);
    true
}

/// Completes the ring's batch; returns how many requests were completed.
fn complete_batch(q: &mut FastQueue, mem: Ram<'_>, disk: &mut Disk) -> Result<usize, DeviceError> {
    let Some(ring) = disk.ring.as_mut() else {
        return Ok(0);
    };
    let n = ring.queued();
    ring.complete(disk.file.as_raw_fd(), |slot, status, written| {
        complete(q, mem, slot.head, slot.status, status, written)
    })?;
    Ok(n)
}

/// Runs one request; returns (status, bytes written to guest data buffers).
fn execute(
    mem: Ram<'_>,
    disk: &Disk,
    chain: &Chain,
    op: &Op,
    iov: &mut Vec<libc::iovec>,
) -> (u8, u32) {
    let (segs, data_off) = op.data(chain);
    let fd = disk.file.as_raw_fd();
    match op.kind {
        Kind::In | Kind::Out => {
            let write = op.kind == Kind::Out;
            if write && disk.readonly {
                return (st::IOERR, 0);
            }
            let Some((off, len)) = byte_range(op.sector, op.len, disk.size) else {
                return (st::IOERR, 0);
            };
            iov.clear();
            if iovecs_range(&mem, segs, data_off, len, iov).is_none() {
                return (st::IOERR, 0);
            }
            match rw_all(fd, iov, off, write) {
                Ok(()) if write => (st::OK, 0),
                Ok(()) => (st::OK, len as u32),
                Err(e) => {
                    tracing::warn!("virtio-blk: I/O error at {off:#x}: {e}");
                    (st::IOERR, 0)
                }
            }
        }
        Kind::Flush => match disk.file.sync_data() {
            Ok(()) => (st::OK, 0),
            Err(e) => {
                tracing::warn!("virtio-blk: fdatasync failed: {e}");
                (st::IOERR, 0)
            }
        },
        Kind::GetId => {
            let n = (op.len as usize).min(ID_LEN);
            let w = write_segments(&mem, segs, data_off, &disk.id[..n]);
            (st::OK, w as u32)
        }
        Kind::Discard | Kind::WriteZeroes => {
            if disk.readonly {
                return (st::IOERR, 0);
            }
            let Some(ranges) = request::ranges(&mem, chain, op, MAX_DISCARD_SEG as usize) else {
                return (st::IOERR, 0);
            };
            for r in ranges {
                if op.kind == Kind::Discard && r.flags != 0 {
                    return (st::UNSUPP, 0);
                }
                if r.num_sectors > MAX_DISCARD_SECTORS {
                    return (st::IOERR, 0);
                }
                let Some((off, len)) =
                    byte_range(r.sector, u64::from(r.num_sectors) * 512, disk.size)
                else {
                    return (st::IOERR, 0);
                };
                if let Err(e) = punch_or_zero(disk, off, len, op.kind == Kind::WriteZeroes) {
                    tracing::warn!("virtio-blk: discard/zero failed: {e}");
                    return (st::IOERR, 0);
                }
            }
            (st::OK, 0)
        }
    }
}

fn punch_or_zero(disk: &Disk, off: u64, len: u64, must_zero: bool) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an fd we own; no memory is passed.
    let r = unsafe { libc::fallocate(disk.file.as_raw_fd(), mode, off as i64, len as i64) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !must_zero {
        // Discard is a hint; a filesystem without hole punching may ignore it.
        return Ok(());
    }
    tracing::debug!("virtio-blk: punch hole failed ({e}); writing zeros");
    let zeros = vec![0u8; 1 << 16];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        std::os::unix::fs::FileExt::write_all_at(&disk.file, &zeros[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

/// `preadv`/`pwritev` the whole of `iov` at `off`, in batches of at most
/// 512 iovecs, retrying short transfers.
fn rw_all(fd: i32, iov: &mut [libc::iovec], mut off: u64, write: bool) -> io::Result<()> {
    let mut i = 0;
    while i < iov.len() {
        if iov[i].iov_len == 0 {
            i += 1;
            continue;
        }
        let end = (i + 512).min(iov.len());
        let cnt = (end - i) as libc::c_int;
        let ptr = iov[i..end].as_ptr();
        let n = if write {
            // SAFETY: the iovecs point into guest RAM ranges checked by
            // pop_chain and stay mapped while `mem` lives.
            unsafe { libc::pwritev(fd, ptr, cnt, off as libc::off_t) }
        } else {
            // SAFETY: as above; the kernel writes only within the iovecs.
            unsafe { libc::preadv(fd, ptr, cnt, off as libc::off_t) }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "image shorter than expected",
            ));
        }
        let mut n = n as usize;
        off += n as u64;
        while n > 0 && i < iov.len() {
            let take = n.min(iov[i].iov_len);
            // Advance within the current iovec.
            iov[i].iov_base = iov[i].iov_base.wrapping_byte_add(take);
            iov[i].iov_len -= take;
            n -= take;
            if iov[i].iov_len == 0 {
                i += 1;
            }
        }
    }
    Ok(())
}

//! virtio-blk through virtio-mmio, driven the way Linux's virtio_blk does it,
//! against real image files.

mod common;

use common::{Driver, Guest, TempDir};
use zvisor_vmm::virtio::block::feature_bits as bf;
use zvisor_vmm::virtio::block::request::{status as st, types as t};
use zvisor_vmm::virtio::block::{Block, DiskConfig, IoEngine};
use zvisor_vmm::virtio::{features, status, types};

const ALL: u64 = u64::MAX;

fn image(dir: &TempDir, name: &str, sectors: u64) -> std::path::PathBuf {
    let p = dir.path(name);
    let data: Vec<u8> = (0..sectors * 512)
        .map(|i| (i / 512) as u8 ^ (i as u8))
        .collect();
    std::fs::write(&p, data).unwrap();
    p
}

fn disk(path: &std::path::Path, readonly: bool, serial: Option<&str>) -> Box<Block> {
    Box::new(
        Block::new(&DiskConfig {
            path: path.to_path_buf(),
            readonly,
            serial: serial.map(str::to_string),
        })
        .unwrap(),
    )
}

/// A request buffer set: header (readable), data, status (writable).
struct Req {
    hdr: u64,
    data: u64,
    status: u64,
}

impl Req {
    fn new(g: &mut Guest, data_len: u64) -> Self {
        Self {
            hdr: g.alloc(16),
            data: g.alloc(data_len.max(1)),
            status: g.alloc(1),
        }
    }
    fn header(&self, g: &Guest, ty: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        g.write(self.hdr, &h);
        g.write(self.status, &[0xff]);
    }
    fn status(&self, g: &Guest) -> u8 {
        g.read(self.status, 1)[0]
    }
}

/// Issues one request like virtio_blk's virtblk_add_req and waits for it.
fn rw(d: &mut Driver, g: &Guest, r: &Req, ty: u32, sector: u64, len: u32) -> (u8, u32) {
    r.header(g, ty, sector);
    let data_w = ty == t::IN || ty == t::GET_ID;
    let mut bufs = vec![(r.hdr, 16, false)];
    if len > 0 {
        bufs.push((r.data, len, data_w));
    }
    bufs.push((r.status, 1, true));
    let head = d.submit(0, &bufs);
    let (id, used) = d.wait_used(0);
    assert_eq!(id, u32::from(head));
    (r.status(g), used)
}

fn setup(g: &mut Guest, dev: Box<Block>, slot: u64) -> Driver {
    let mut d = g.attach(dev, slot);
    d.init(g, types::BLOCK, ALL & !features::RING_EVENT_IDX, 1);
    d
}

#[test]
fn linux_style_probe_and_config() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 64);
    let mut g = Guest::new();
    let mut d = g.attach(disk(&p, false, None), 0);
    let f = d.probe(types::BLOCK, ALL).unwrap();
    assert!(f & bf::FLUSH != 0 && f & bf::DISCARD != 0 && f & bf::RO == 0);
    assert_eq!(d.config_u64(0), 64, "capacity in sectors");
    assert_eq!(d.config(20, 4), 512u32.to_le_bytes(), "blk_size");
    d.setup_queue(&mut g, 0, 0);
    d.driver_ok();
    assert_eq!(
        d.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
}

#[test]
fn write_flush_read_back_and_persist() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 64);
    let mut g = Guest::new();
    let mut d = setup(&mut g, disk(&p, false, None), 0);
    let r = Req::new(&mut g, 8192);
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    g.write(r.data, &pattern);
    assert_eq!(rw(&mut d, &g, &r, t::OUT, 10, 8192), (st::OK, 1));
    assert_eq!(rw(&mut d, &g, &r, t::FLUSH, 0, 0), (st::OK, 1));
    g.write(r.data, &[0u8; 8192]);
    assert_eq!(rw(&mut d, &g, &r, t::IN, 10, 8192), (st::OK, 8193));
    assert_eq!(g.read(r.data, 8192), pattern);
    // The image itself, reopened, has the data after the flush.
    let file = std::fs::read(&p).unwrap();
    assert_eq!(&file[10 * 512..10 * 512 + 8192], &pattern[..]);
    // Neighbours untouched.
    assert_eq!(file[10 * 512 - 1], (9u8) ^ ((10 * 512 - 1) as u8));
}

#[test]
fn reads_span_scattered_buffers() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 16);
    let mut g = Guest::new();
    let mut d = setup(&mut g, disk(&p, false, None), 0);
    let r = Req::new(&mut g, 0);
    r.header(&g, t::IN, 1);
    let a = g.alloc(512);
    let b = g.alloc(1024);
    let head = d.submit(
        0,
        &[
            (r.hdr, 16, false),
            (a, 512, true),
            (b, 1024, true),
            (r.status, 1, true),
        ],
    );
    assert_eq!(d.wait_used(0), (u32::from(head), 1537));
    let file = std::fs::read(&p).unwrap();
    assert_eq!(g.read(a, 512), &file[512..1024]);
    assert_eq!(g.read(b, 1024), &file[1024..2048]);
    assert_eq!(r.status(&g), st::OK);
}

#[test]
fn get_id_returns_serial() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 8);
    let mut g = Guest::new();
    let mut d = setup(&mut g, disk(&p, false, Some("zvisor-disk-0")), 0);
    let r = Req::new(&mut g, 20);
    let (s, used) = rw(&mut d, &g, &r, t::GET_ID, 0, 20);
    assert_eq!((s, used), (st::OK, 21));
    let mut want = b"zvisor-disk-0".to_vec();
    want.resize(20, 0);
    assert_eq!(g.read(r.data, 20), want);
}

#[test]
fn readonly_disk_refuses_writes() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "ro.img", 8);
    let before = std::fs::read(&p).unwrap();
    let mut g = Guest::new();
    let dev = disk(&p, true, None);
    let mut d = g.attach(dev, 0);
    let f = d.probe(types::BLOCK, ALL).unwrap();
    assert!(f & bf::RO != 0 && f & bf::DISCARD == 0);
    d.setup_queue(&mut g, 0, 0);
    d.driver_ok();
    let r = Req::new(&mut g, 512);
    g.write(r.data, &[0xaa; 512]);
    assert_eq!(rw(&mut d, &g, &r, t::OUT, 0, 512).0, st::IOERR);
    assert_eq!(rw(&mut d, &g, &r, t::IN, 0, 512).0, st::OK);
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn out_of_range_and_malformed_requests_get_errors() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 8);
    let mut g = Guest::new();
    let mut d = setup(&mut g, disk(&p, false, None), 0);
    let r = Req::new(&mut g, 1024);
    // Past the end, straddling the end, sector overflow.
    assert_eq!(rw(&mut d, &g, &r, t::IN, 8, 512).0, st::IOERR);
    assert_eq!(rw(&mut d, &g, &r, t::OUT, 7, 1024).0, st::IOERR);
    assert_eq!(rw(&mut d, &g, &r, t::IN, u64::MAX / 2, 512).0, st::IOERR);
    // Not a multiple of the sector size.
    assert_eq!(rw(&mut d, &g, &r, t::IN, 0, 100).0, st::IOERR);
    // Unknown request type.
    assert_eq!(rw(&mut d, &g, &r, 0x77, 0, 0).0, st::UNSUPP);
    // Wrong direction: read whose data buffer is device-readable.
    r.header(&g, t::IN, 0);
    d.submit(
        0,
        &[
            (r.hdr, 16, false),
            (r.data, 512, false),
            (r.status, 1, true),
        ],
    );
    d.wait_used(0);
    assert_eq!(r.status(&g), st::IOERR);
    // Header too short.
    r.header(&g, t::IN, 0);
    d.submit(0, &[(r.hdr, 8, false), (r.status, 1, true)]);
    assert_eq!(d.wait_used(0).1, 1);
    assert_eq!(r.status(&g), st::IOERR);
    // The last sector still works: the device is healthy.
    assert_eq!(rw(&mut d, &g, &r, t::IN, 7, 512).0, st::OK);
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
}

#[test]
fn discard_and_write_zeroes() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 64);
    let mut g = Guest::new();
    let mut d = setup(&mut g, disk(&p, false, None), 0);
    let r = Req::new(&mut g, 16);
    let range = |sector: u64, n: u32, flags: u32| {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&sector.to_le_bytes());
        b[8..12].copy_from_slice(&n.to_le_bytes());
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b
    };
    g.write(r.data, &range(8, 16, 0));
    assert_eq!(rw(&mut d, &g, &r, t::WRITE_ZEROES, 0, 16).0, st::OK);
    g.write(r.data, &range(40, 8, 0));
    assert_eq!(rw(&mut d, &g, &r, t::DISCARD, 0, 16).0, st::OK);
    g.write(r.data, &range(60, 8, 0));
    assert_eq!(
        rw(&mut d, &g, &r, t::WRITE_ZEROES, 0, 16).0,
        st::IOERR,
        "past the end"
    );
    let file = std::fs::read(&p).unwrap();
    assert!(file[8 * 512..24 * 512].iter().all(|&b| b == 0));
    assert!(file[40 * 512..48 * 512].iter().all(|&b| b == 0));
    assert_eq!(
        file[24 * 512],
        24u8,
        "data after the zeroed range is intact"
    );
    assert_eq!(file.len(), 64 * 512, "size kept");
}

#[test]
fn several_disks_on_one_bus() {
    let dir = TempDir::new("blk");
    let pa = image(&dir, "a.img", 8);
    let pb = image(&dir, "b.img", 16);
    let mut g = Guest::new();
    let mut da = setup(&mut g, disk(&pa, false, Some("a")), 0);
    let mut db = setup(&mut g, disk(&pb, false, Some("b")), 1);
    assert_eq!(da.config_u64(0), 8);
    assert_eq!(db.config_u64(0), 16);
    let ra = Req::new(&mut g, 512);
    let rb = Req::new(&mut g, 512);
    g.write(ra.data, &[1; 512]);
    g.write(rb.data, &[2; 512]);
    assert_eq!(rw(&mut da, &g, &ra, t::OUT, 0, 512).0, st::OK);
    assert_eq!(rw(&mut db, &g, &rb, t::OUT, 15, 512).0, st::OK);
    assert_eq!(std::fs::read(&pa).unwrap()[..512], [1; 512]);
    assert_eq!(std::fs::read(&pb).unwrap()[15 * 512..], [2; 512]);
    // The same image cannot be opened read-write twice.
    assert!(Block::new(&DiskConfig {
        path: pa.clone(),
        readonly: false,
        serial: None
    })
    .is_err());
}

/// VIRTIO_F_RING_EVENT_IDX, which Linux negotiates whenever it is offered:
/// the device interrupts only when used_event is crossed and publishes
/// avail_event.
#[test]
fn event_idx_suppresses_interrupts() {
    use std::time::Duration;
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 8);
    let mut g = Guest::new();
    let mut d = g.attach(disk(&p, false, None), 0);
    d.init(
        &mut g,
        types::BLOCK,
        features::VERSION_1 | features::RING_EVENT_IDX,
        1,
    );
    assert!(d.features & features::RING_EVENT_IDX != 0);
    let size = u64::from(d.queues[0].size);
    let used_event = d.queues[0].avail + 4 + 2 * size;
    let avail_event = d.queues[0].used + 4 + 8 * size;
    let r = Req::new(&mut g, 512);
    // used_event = 0: interrupt when the first buffer is used.
    g.write(used_event, &0u16.to_le_bytes());
    r.header(&g, t::IN, 0);
    d.submit(
        0,
        &[(r.hdr, 16, false), (r.data, 512, true), (r.status, 1, true)],
    );
    assert!(d.wait_irq(Duration::from_secs(5)).is_some(), "no interrupt");
    assert_eq!(d.wait_used(0).1, 513);
    // used_event = 5: the second completion must not interrupt.
    g.write(used_event, &5u16.to_le_bytes());
    d.submit(
        0,
        &[(r.hdr, 16, false), (r.data, 512, true), (r.status, 1, true)],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while d.used_idx(0) != 2 {
        assert!(std::time::Instant::now() < deadline, "request not served");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        d.wait_irq(Duration::from_millis(200)).is_none(),
        "interrupt despite used_event"
    );
    // The device told the driver which avail index it wants a kick for.
    assert_eq!(g.read(avail_event, 2), 2u16.to_le_bytes());
    assert_eq!(d.poll_used(0).map(|u| u.1), Some(513));
    common::check_event_idx(&mut d, &mut g, 0, &mut |d, g| {
        r.header(g, t::IN, 1);
        d.add_chain(
            0,
            &[(r.hdr, 16, false), (r.data, 512, true), (r.status, 1, true)],
        )
    });
}

/// The ioeventfd path: KVM signals the queue's notify EventFd directly
/// (datamatch = queue index at NOTIFY_OFFSET) instead of a QueueNotify exit.
#[test]
fn ioeventfd_notification_path() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 8);
    let mut g = Guest::new();
    let mut d = setup(&mut g, disk(&p, false, None), 0);
    let fds: Vec<(u32, vmm_sys_util::eventfd::EventFd)> = d
        .transport
        .lock()
        .unwrap()
        .queue_notifiers()
        .map(|(i, e)| (i, e.try_clone().unwrap()))
        .collect();
    assert_eq!(fds.len(), 1);
    assert_eq!(fds[0].0, 0, "datamatch is the queue index");
    let r = Req::new(&mut g, 512);
    r.header(&g, t::IN, 3);
    let head = d.add_chain(
        0,
        &[(r.hdr, 16, false), (r.data, 512, true), (r.status, 1, true)],
    );
    fds[0].1.write(1).unwrap(); // what KVM does on the guest's write to QueueNotify
    assert_eq!(d.wait_used(0), (u32::from(head), 513));
    assert_eq!(r.status(&g), st::OK);
    assert_eq!(
        g.read(r.data, 512),
        std::fs::read(&p).unwrap()[3 * 512..4 * 512]
    );
}

/// True when `ZVISOR_REQUIRE_IO_URING=1`: the kernel must offer io_uring
/// and every engine test must run its io_uring half. The emulated s390x and
/// arm64 guests of `qemu-tests` (`vmmtests`) set it.
fn io_uring_required() -> bool {
    std::env::var("ZVISOR_REQUIRE_IO_URING").is_ok_and(|v| v == "1")
}

/// The engines a test can run here: sync always; io_uring where the kernel
/// has it (natively on this machine; not under qemu-user, where `Auto`
/// must then fall back to sync).
fn engines(path: &std::path::Path) -> Vec<IoEngine> {
    let mut v = vec![IoEngine::Sync];
    let mut b = disk(path, true, None);
    match b.set_io_engine(IoEngine::Uring) {
        Ok(()) => v.push(IoEngine::Uring),
        Err(e) => {
            assert!(
                !io_uring_required(),
                "ZVISOR_REQUIRE_IO_URING=1 but io_uring is unavailable: {e}"
            );
            assert!(b.set_io_engine(IoEngine::Auto).is_ok());
            assert_eq!(b.io_engine(), Some(IoEngine::Sync), "Auto falls back");
            eprintln!("SKIP io_uring engine: {e}");
        }
    }
    v
}

/// `Auto`, the default engine, agrees with what the kernel allows: io_uring
/// where a ring can be set up, else sync; with `ZVISOR_REQUIRE_IO_URING=1`
/// it must be io_uring. Prints the engine for the emulated-guest harness.
#[test]
fn auto_engine_matches_the_kernel() {
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 8);
    let auto = disk(&p, true, None).io_engine();
    let uring_ok = disk(&p, true, None).set_io_engine(IoEngine::Uring).is_ok();
    let want = if uring_ok {
        IoEngine::Uring
    } else {
        IoEngine::Sync
    };
    assert_eq!(auto, Some(want), "Block::new's default engine");
    if io_uring_required() {
        assert_eq!(auto, Some(IoEngine::Uring), "ZVISOR_REQUIRE_IO_URING=1");
    }
    eprintln!("ZVTEST-ENGINE auto_engine_matches_the_kernel {want:?} ok");
}

/// A batch of mixed requests in one kick, as blk-mq sends them: writes,
/// reads, a flush, GET_ID and a bad request, under each engine and with
/// each ring path (split-ring fast path, virtio-queue); every request gets
/// its own right answer and the image the right bytes.
#[test]
fn engines_serve_mixed_batches() {
    let dir = TempDir::new("blk");
    let runs = engines(&image(&dir, "probe.img", 8))
        .into_iter()
        .flat_map(|e| [(e, true), (e, false)]);
    for (engine, fast) in runs {
        let p = image(&dir, &format!("{engine:?}-{fast}.img"), 64);
        let before = std::fs::read(&p).unwrap();
        let mut dev = disk(&p, false, Some("eng"));
        dev.set_io_engine(engine).unwrap();
        dev.set_fast_ring(fast);
        assert_eq!(dev.io_engine(), Some(engine));
        let mut g = Guest::new();
        let mut d = g.attach(dev, 0);
        d.init(
            &mut g,
            types::BLOCK,
            features::VERSION_1 | features::RING_EVENT_IDX | bf::FLUSH,
            1,
        );
        // (type, sector, len, expected status)
        let plan: Vec<(u32, u64, u32, u8)> = vec![
            (t::OUT, 4, 1024, st::OK),
            (t::IN, 10, 4096, st::OK),
            (t::IN, 63, 1024, st::IOERR), // past the end
            (t::FLUSH, 0, 0, st::OK),
            (t::OUT, 20, 512, st::OK),
            (t::GET_ID, 0, 20, st::OK),
            (t::IN, 0, 512, st::OK),
            (99, 0, 0, st::UNSUPP),
            (t::IN, 40, 2048, st::OK),
        ];
        let reqs: Vec<Req> = plan
            .iter()
            .map(|&(_, _, len, _)| Req::new(&mut g, u64::from(len)))
            .collect();
        let mut heads = Vec::new();
        for (r, &(ty, sector, len, _)) in reqs.iter().zip(&plan) {
            r.header(&g, ty, sector);
            if ty == t::OUT {
                g.write(r.data, &vec![sector as u8 ^ 0x5a; len as usize]);
            }
            let w = ty == t::IN || ty == t::GET_ID;
            let mut bufs = vec![(r.hdr, 16, false)];
            if len > 0 {
                bufs.push((r.data, len, w));
            }
            bufs.push((r.status, 1, true));
            heads.push(d.add_chain(0, &bufs));
        }
        assert!(d.kick(0));
        let mut done = std::collections::HashMap::new();
        for _ in 0..plan.len() {
            let (id, len) = d.wait_used(0);
            done.insert(id, len);
        }
        let mut want = before.clone();
        for (i, (r, &(ty, sector, len, status))) in reqs.iter().zip(&plan).enumerate() {
            assert_eq!(r.status(&g), status, "{engine:?}: request {i}");
            let used = done[&u32::from(heads[i])];
            let (s, n) = ((sector * 512) as usize, len as usize);
            match (ty, status) {
                (t::IN, st::OK) => {
                    assert_eq!(used, len + 1);
                    // Reads in the batch see the image as it was (no read
                    // overlaps a write of the same batch).
                    assert_eq!(g.read(r.data, n), before[s..s + n], "{engine:?}: read {i}");
                }
                (t::OUT, _) => want[s..s + n].fill(sector as u8 ^ 0x5a),
                (t::GET_ID, _) => assert_eq!(&g.read(r.data, 3), b"eng"),
                _ => assert_eq!(used, 1),
            }
        }
        d.writel(zvisor_vmm::virtio::mmio::regs::STATUS, 0);
        assert_eq!(std::fs::read(&p).unwrap(), want, "{engine:?}: image");
        eprintln!("ZVTEST-ENGINE engines_serve_mixed_batches {engine:?} ok");
    }
}

/// The image shrinks under the device (another process truncates it):
/// reads past the new end get IOERR from either engine (io_uring's short
/// read is finished by the sync path, which then hits the end), never stale
/// or zero data reported as OK.
#[test]
fn engines_report_a_shrunken_image() {
    let dir = TempDir::new("blk");
    for engine in engines(&image(&dir, "probe.img", 8)) {
        let p = image(&dir, &format!("{engine:?}.img"), 16);
        let mut dev = disk(&p, true, None);
        dev.set_io_engine(engine).unwrap();
        let mut g = Guest::new();
        let mut d = setup(&mut g, dev, 0);
        // Cut the image in the middle of sector 8's 4 KiB read.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(10 * 512).unwrap();
        let r = Req::new(&mut g, 4096);
        assert_eq!(
            rw(&mut d, &g, &r, t::IN, 8, 4096),
            (st::IOERR, 1),
            "{engine:?}"
        );
        assert_eq!(
            rw(&mut d, &g, &r, t::IN, 12, 512),
            (st::IOERR, 1),
            "{engine:?}"
        );
        assert_eq!(
            rw(&mut d, &g, &r, t::IN, 0, 4096),
            (st::OK, 4097),
            "{engine:?}"
        );
        assert_eq!(d.status() & status::NEEDS_RESET, 0);
        eprintln!("ZVTEST-ENGINE engines_report_a_shrunken_image {engine:?} ok");
    }
}

/// Activation whose worker cannot start (here: a notifier epoll refuses)
/// fails cleanly and leaves the device with its image, so a later
/// activation works.
#[test]
fn failed_activation_keeps_the_disk() {
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::sync::Arc;
    use virtio_queue::{Queue, QueueT};
    use vmm_sys_util::eventfd::EventFd;
    use zvisor_vmm::virtio::{ActiveQueue, InterruptReason, VirtioDevice, VirtioInterrupt};

    struct NoIrq;
    impl VirtioInterrupt for NoIrq {
        fn trigger(&self, _: InterruptReason) -> std::io::Result<()> {
            Ok(())
        }
        fn set_needs_reset(&self) {}
    }
    let dir = TempDir::new("blk");
    let p = image(&dir, "a.img", 8);
    let mut b = disk(&p, true, None);
    let g = Guest::new();
    let q = |notify| {
        vec![ActiveQueue {
            index: 0,
            queue: Queue::new(16).unwrap(),
            notify,
        }]
    };
    let file = std::fs::File::open(&p).unwrap();
    // SAFETY: the fd comes from `file` and is closed once, by the EventFd.
    let bad = unsafe { EventFd::from_raw_fd(file.into_raw_fd()) };
    let e = b
        .activate(g.mem.clone(), Arc::new(NoIrq), q(bad))
        .unwrap_err();
    assert!(e.to_string().contains("cannot start device worker"), "{e}");
    assert!(
        b.io_engine().is_some(),
        "the image went away with the worker"
    );
    let ok = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    b.activate(g.mem.clone(), Arc::new(NoIrq), q(ok)).unwrap();
    assert!(b.io_engine().is_none(), "active");
    assert!(b.reset());
    assert!(b.io_engine().is_some());
}

//! Throughput of zvisor's virtio device models, driven in-process through
//! the virtio-mmio transport by the test driver (tests/common):
//!
//! - virtio-blk 4 KiB random reads and 1 MiB sequential reads against an
//!   image file, as a ratio to `pread` of the same file on the host;
//! - virtio-net TX packets per second into a tap (in a private netns; root).
//!
//! `cargo run --release -p zvisor-vmm --example virtio_bench [-- --quick]`
//! (`ZV_PROFILE_INLINE=1` runs only the inline 4 KiB case, for `perf record`;
//! `-- --qd N` sets the 4 KiB run's queue depth (default 32).
//! `-- --ab-ring` compares only the 4 KiB case with the split-ring fast path
//! against the same device on the virtio-queue path, in interleaved slices).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{Guest, TempDir};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use zvisor_vmm::memory;
use zvisor_vmm::virtio::block::{Block, DiskConfig, IoEngine};
use zvisor_vmm::virtio::net::Net;
use zvisor_vmm::virtio::queue::fast::FastQueue;
use zvisor_vmm::virtio::tap::Tap;
use zvisor_vmm::virtio::{features, types, InterruptReason, VirtioInterrupt};

const IMG_MB: u64 = 256;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

struct Res {
    bytes: u64,
    /// Wall-clock seconds.
    secs: f64,
    /// CPU seconds of the measuring thread (single-threaded runs only).
    cpu: f64,
    /// CPU seconds of the whole process (end-to-end: driver + device worker).
    pcpu: f64,
    ops: u64,
}
impl Res {
    fn zero() -> Self {
        Res {
            bytes: 0,
            secs: 0.0,
            cpu: 0.0,
            pcpu: 0.0,
            ops: 0,
        }
    }
    fn add(&mut self, o: Res) {
        self.bytes += o.bytes;
        self.secs += o.secs;
        self.cpu += o.cpu;
        self.pcpu += o.pcpu;
        self.ops += o.ops;
    }
    fn mbs(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    fn iops(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn cpu_mbs(&self) -> f64 {
        self.bytes as f64 / self.cpu / 1e6
    }
}

/// `pread` into `nbufs` rotating buffers (the device fills as many slots).
/// CPU time of the calling thread: unlike wall-clock time it does not
/// count time this thread was preempted by other load on the machine.
fn cpu_now() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of all threads of this process (the driver and the device's worker).
fn proc_cpu_now() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn host_read(f: &File, offsets: &[u64], len: usize, nbufs: usize) -> Res {
    // Non-zero fill: the pages are really touched before the clock starts.
    let mut bufs = vec![vec![1u8; len]; nbufs];
    let t = Instant::now();
    let c = cpu_now();
    for (i, &o) in offsets.iter().enumerate() {
        f.read_exact_at(&mut bufs[i % nbufs], o).unwrap();
    }
    let cpu = (cpu_now() - c).as_secs_f64();
    Res {
        bytes: (offsets.len() * len) as u64,
        secs: t.elapsed().as_secs_f64(),
        cpu,
        pcpu: cpu,
        ops: offsets.len() as u64,
    }
}

/// The same reads as `host_read`, `qd` at a time, each batch submitted with
/// one `io_uring_enter` that also waits for it: what the host could do
/// with io_uring (reported beside the `pread` baseline, for honesty).
fn host_uring(f: &File, offsets: &[u64], len: usize, qd: usize) -> Res {
    use std::os::fd::AsRawFd;
    let mut ring = io_uring::IoUring::new(qd as u32).unwrap();
    let mut bufs = vec![vec![1u8; len]; qd];
    let t = Instant::now();
    let c = cpu_now();
    for batch in offsets.chunks(qd) {
        for (i, &o) in batch.iter().enumerate() {
            let e = io_uring::opcode::Read::new(
                io_uring::types::Fd(f.as_raw_fd()),
                bufs[i].as_mut_ptr(),
                len as u32,
            )
            .offset(o)
            .build();
            // SAFETY: `bufs[i]` outlives the wait below; the SQ has qd entries.
            unsafe { ring.submission().push(&e).unwrap() };
        }
        ring.submit_and_wait(batch.len()).unwrap();
        for cqe in ring.completion() {
            assert_eq!(cqe.result(), len as i32);
        }
    }
    let cpu = (cpu_now() - c).as_secs_f64();
    Res {
        bytes: (offsets.len() * len) as u64,
        secs: t.elapsed().as_secs_f64(),
        cpu,
        pcpu: cpu,
        ops: offsets.len() as u64,
    }
}

fn block(path: &std::path::Path, engine: IoEngine, fast: bool) -> Block {
    let mut dev = Block::new(&DiskConfig {
        path: path.to_path_buf(),
        readonly: true,
        serial: None,
    })
    .unwrap();
    dev.set_io_engine(engine).unwrap();
    dev.set_fast_ring(fast);
    dev
}

fn device_read(
    path: &std::path::Path,
    offsets: &[u64],
    len: u32,
    qd: usize,
    engine: IoEngine,
    fast: bool,
) -> Res {
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(block(path, engine, fast)), 0);
    // As Linux negotiates it: EVENT_IDX.
    d.init(
        &mut g,
        types::BLOCK,
        features::VERSION_1 | features::RING_EVENT_IDX,
        1,
    );
    let slots: Vec<(u64, u64, u64)> = (0..qd)
        .map(|_| (g.alloc(16), g.alloc(u64::from(len)), g.alloc(1)))
        .collect();
    for &(_, data, _) in &slots {
        g.write(data, &vec![1u8; len as usize]); // fault the pages in now
    }
    // The driver writes its rings and headers with plain stores, as a guest
    // does, not through the VMM's guest-memory accessors (which would charge
    // the device's run with a lookup per store the device never makes). Each
    // slot's three descriptors are written once; blk-mq rewrites them per
    // request, which costs a guest a few stores.
    let ram = g.mem.get_host_address(GuestAddress(0)).unwrap();
    let (avail, size) = (d.queues[0].avail, d.queues[0].size);
    for (i, &(h, data, st)) in slots.iter().enumerate() {
        let i = 3 * i as u16;
        d.write_desc(0, i, h, 16, common::DESC_F_NEXT, i + 1);
        let f = common::DESC_F_WRITE | common::DESC_F_NEXT;
        d.write_desc(0, i + 1, data, len, f, i + 2);
        d.write_desc(0, i + 2, st, 1, common::DESC_F_WRITE, 0);
    }
    let store16 = |a: u64, v: u16| {
        // SAFETY: every address passed is inside the 16 MiB of guest RAM
        // `ram` maps (the avail ring was allocated there); unaligned store.
        unsafe { ram.add(a as usize).cast::<u16>().write_unaligned(v.to_le()) }
    };
    // Keep `qd` requests in flight, as blk-mq does: refill the slots that
    // completed, then notify once.
    let mut inflight: VecDeque<usize> = VecDeque::new();
    let mut free: Vec<usize> = (0..qd).collect();
    let mut next = 0;
    let mut done = 0;
    let mut last_slot = 0;
    let t = Instant::now();
    let c = cpu_now();
    let pc = proc_cpu_now();
    while done < offsets.len() {
        let mut added = 0u16;
        for slot in free.drain(..) {
            if next == offsets.len() {
                break;
            }
            let sector = (offsets[next] / 512).to_le();
            // SAFETY: the slot's header lies in the guest RAM `ram` maps;
            // this is its 8-byte sector field (unaligned store).
            unsafe {
                ram.add(slots[slot].0 as usize + 8)
                    .cast::<u64>()
                    .write_unaligned(sector)
            };
            let idx = d.queues[0].avail_idx;
            store16(avail + 4 + 2 * u64::from(idx % size), 3 * slot as u16);
            d.queues[0].avail_idx = idx.wrapping_add(1);
            inflight.push_back(slot);
            last_slot = slot;
            next += 1;
            added += 1;
        }
        // virtio_wmb, then publish the index.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        store16(avail + 2, d.queues[0].avail_idx);
        d.queues[0].num_added = d.queues[0].num_added.wrapping_add(added);
        d.kick(0);
        let mut got = Some(d.wait_used(0));
        while let Some((id, used)) = got {
            assert_eq!(used, len + 1, "request failed");
            let slot = inflight.pop_front().unwrap();
            assert_eq!(id as usize, 3 * slot);
            free.push(slot);
            done += 1;
            got = d.try_wait_used(0, Duration::ZERO);
        }
    }
    let driver_cpu = (cpu_now() - c).as_secs_f64();
    let pcpu = (proc_cpu_now() - pc).as_secs_f64();
    let secs = t.elapsed().as_secs_f64();
    // Spot-check the data of the last request.
    let f = File::open(path).unwrap();
    let last = offsets.len() - 1;
    let (_, data, st) = slots[last_slot];
    let mut want = vec![0u8; len as usize];
    f.read_exact_at(&mut want, offsets[last]).unwrap();
    assert_eq!(g.read(data, len as usize), want);
    assert_eq!(g.read(st, 1), [0]);
    Res {
        bytes: offsets.len() as u64 * u64::from(len),
        secs,
        // The driver thread's CPU time (the device's is on its worker).
        cpu: driver_cpu,
        pcpu,
        ops: offsets.len() as u64,
    }
}

/// Counts interrupts; the inline run has nobody to wake.
struct NoIrq;
impl VirtioInterrupt for NoIrq {
    fn trigger(&self, _: InterruptReason) -> std::io::Result<()> {
        Ok(())
    }
    fn set_needs_reset(&self) {
        panic!("device needs reset");
    }
}

/// The device model's own cost: requests are placed in the ring by this
/// thread and served inline; only the time inside the device is counted.
fn device_inline(
    path: &std::path::Path,
    offsets: &[u64],
    len: u32,
    qd: usize,
    engine: IoEngine,
    fast: bool,
) -> Res {
    let mem = memory::create(&[(GuestAddress(0), 64 << 20)]).unwrap();
    let mut dev = block(path, engine, fast);
    let size = 256u16;
    let (desc, avail, used) = (0x1000u64, 0x3000u64, 0x4000u64);
    let mut q = Queue::new(size).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(desc as u32), Some(0));
    q.set_avail_ring_address(Some(avail as u32), Some(0));
    q.set_used_ring_address(Some(used as u32), Some(0));
    q.set_ready(true);
    let mut q = if fast {
        FastQueue::new(q, &mem)
    } else {
        FastQueue::slow(q)
    };
    assert_eq!(q.is_fast(), fast);
    let data0 = 0x10_0000u64;
    mem.write_slice(&vec![1u8; qd * len as usize], GuestAddress(data0))
        .unwrap(); // fault the pages in now
    let mut inside = Duration::ZERO;
    let mut inside_cpu = Duration::ZERO;
    let mut avail_idx = 0u16;
    let w = |a: u64, b: &[u8]| mem.write_slice(b, GuestAddress(a)).unwrap();
    for batch in offsets.chunks(qd) {
        for (i, &off) in batch.iter().enumerate() {
            let hdr = 0x8000 + 32 * i as u64;
            let st = hdr + 16;
            let data = data0 + i as u64 * u64::from(len);
            let mut h = [0u8; 16];
            h[8..16].copy_from_slice(&(off / 512).to_le_bytes());
            w(hdr, &h);
            let d0 = (3 * i) as u16;
            for (k, (a, l, fl)) in [(hdr, 16u32, 1u16), (data, len, 3), (st, 1, 2)]
                .into_iter()
                .enumerate()
            {
                let mut dsc = [0u8; 16];
                dsc[0..8].copy_from_slice(&a.to_le_bytes());
                dsc[8..12].copy_from_slice(&l.to_le_bytes());
                dsc[12..14].copy_from_slice(&fl.to_le_bytes());
                dsc[14..16].copy_from_slice(&(d0 + k as u16 + 1).to_le_bytes());
                w(desc + 16 * u64::from(d0 + k as u16), &dsc);
            }
            w(
                avail + 4 + 2 * u64::from(avail_idx % size),
                &d0.to_le_bytes(),
            );
            avail_idx = avail_idx.wrapping_add(1);
        }
        w(avail + 2, &avail_idx.to_le_bytes());
        let t = Instant::now();
        let c = cpu_now();
        dev.process_inline(&mem, &mut q, &NoIrq).unwrap();
        inside_cpu += cpu_now() - c;
        inside += t.elapsed();
    }
    let mut st = [0u8; 1];
    mem.read_slice(&mut st, GuestAddress(0x8000 + 16)).unwrap();
    assert_eq!(st[0], 0, "request failed");
    Res {
        bytes: offsets.len() as u64 * u64::from(len),
        secs: inside.as_secs_f64(),
        cpu: inside_cpu.as_secs_f64(),
        pcpu: inside_cpu.as_secs_f64(),
        ops: offsets.len() as u64,
    }
}

fn slices_for(quick: bool) -> usize {
    if quick {
        4
    } else {
        10
    }
}

/// 4 KiB random reads at QD32 (io_uring): the fast split-ring path against
/// the virtio-queue path of the same device, end-to-end and inline, with
/// host `pread` in every slice (the order rotates between slices).
fn ab_ring(f: &File, path: &std::path::Path, rand: &[u64], slices: usize) {
    let u = IoEngine::Uring;
    let mut r: [Res; 5] = std::array::from_fn(|_| Res::zero());
    let (mut rf, mut rs) = (Vec::new(), Vec::new());
    for (k, part) in rand.chunks(rand.len().div_ceil(slices)).enumerate() {
        let h = host_read(f, part, 4096, 32);
        let (fast, slow) = if k % 2 == 0 {
            let a = device_read(path, part, 4096, 32, u, true);
            (a, device_read(path, part, 4096, 32, u, false))
        } else {
            let b = device_read(path, part, 4096, 32, u, false);
            (device_read(path, part, 4096, 32, u, true), b)
        };
        rf.push(fast.mbs() / h.mbs());
        rs.push(slow.mbs() / h.mbs());
        let (fi, si) = if k % 2 == 0 {
            let a = device_inline(path, part, 4096, 32, u, true);
            (a, device_inline(path, part, 4096, 32, u, false))
        } else {
            let b = device_inline(path, part, 4096, 32, u, false);
            (device_inline(path, part, 4096, 32, u, true), b)
        };
        r[0].add(h);
        r[1].add(fast);
        r[2].add(slow);
        r[3].add(fi);
        r[4].add(si);
    }
    rf.sort_by(f64::total_cmp);
    rs.sort_by(f64::total_cmp);
    let pct = |a: &Res| 100.0 * a.mbs() / r[0].mbs();
    let cpct = |a: &Res| 100.0 * a.cpu_mbs() / r[0].cpu_mbs();
    println!(
        "A/B virtio-blk 4KiB random read QD32 io_uring, ratios to host pread ({:.0} IOPS):",
        r[0].iops()
    );
    for (name, e, i, rat) in [
        ("fast ring", &r[1], &r[3], &rf),
        ("virtio-queue", &r[2], &r[4], &rs),
    ] {
        println!(
            "  {name:12} end-to-end {:8.0} IOPS {:5.1}% (slice median {:5.1}%) | device alone {:8.0} IOPS {:5.1}% wall {:5.1}% cpu-time, {:.0} ns CPU/request",
            e.iops(),
            pct(e),
            100.0 * rat[rat.len() / 2],
            i.iops(),
            pct(i),
            cpct(i),
            1e9 * i.cpu / i.ops as f64
        );
    }
    for (name, e) in [("fast ring", &r[1]), ("virtio-queue", &r[2])] {
        println!(
            "  {name:12} end-to-end CPU (driver + device threads) {:.0} ns/request: host pread does a read in {:5.1}% of that",
            1e9 * e.pcpu / e.ops as f64,
            100.0 * (r[0].cpu / r[0].ops as f64) / (e.pcpu / e.ops as f64)
        );
    }
    println!(
        "  host pread CPU per read: {:.0} ns",
        1e9 * r[0].cpu / r[0].ops as f64
    );
}

/// `--qd N` (1..=64, default 32): requests in flight in the 4 KiB random
/// read run (each takes three descriptors of the 256-entry queue).
fn qd_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--qd") {
        None => 32,
        Some(i) => match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) if (1..=64).contains(&n) => n,
            _ => {
                eprintln!("virtio_bench: --qd takes a number in 1..=64");
                std::process::exit(2);
            }
        },
    }
}

fn bench_blk(quick: bool) {
    let dir = TempDir::new("bench");
    let path = dir.path("bench.img");
    {
        let mut f = File::create(&path).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let chunk: Vec<u8> = (0..1 << 20).map(|_| xorshift(&mut x) as u8).collect();
        for _ in 0..IMG_MB {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let f = File::open(&path).unwrap();
    let size = IMG_MB << 20;
    let all: Vec<u64> = (0..size >> 20).map(|i| i << 20).collect();
    host_read(&f, &all, 1 << 20, 1); // warm the page cache
    let mut x = 42u64;
    let n4k = if quick { 20_000 } else { 200_000 };
    let rand: Vec<u64> = (0..n4k)
        .map(|_| (xorshift(&mut x) % (size / 4096)) * 4096)
        .collect();
    let passes = if quick { 1 } else { 4 };
    let seq: Vec<u64> = (0..passes).flat_map(|_| all.iter().copied()).collect();

    if std::env::args().any(|a| a == "--ab-ring") {
        ab_ring(&f, &path, &rand, slices_for(quick));
        return;
    }
    if std::env::var_os("ZV_PROFILE_INLINE").is_some() {
        // For `perf record`: only the device model's 4 KiB path.
        let r = device_inline(&path, &rand, 4096, 32, IoEngine::Uring, true);
        println!("inline 4KiB: {:.0} IOPS", r.iops());
        return;
    }
    // Host and device runs alternate in slices so that load from other
    // processes on the machine hits both alike.
    let slices = slices_for(false);
    let (u, y) = (IoEngine::Uring, IoEngine::Sync);
    // Also per slice: the device/host ratio of each slice, whose median
    // is robust against a slice where other load hit one side only.
    let run = |offs: &[u64], len: u32, qd: usize| {
        let mut r: [Res; 6] = std::array::from_fn(|_| Res::zero());
        let mut ratios = Vec::new();
        for part in offs.chunks(offs.len().div_ceil(slices)) {
            let h = host_read(&f, part, len as usize, qd);
            let d = device_read(&path, part, len, qd, u, true);
            ratios.push(d.mbs() / h.mbs());
            r[0].add(h);
            r[1].add(d);
            r[2].add(device_inline(&path, part, len, qd, u, true));
            r[3].add(device_read(&path, part, len, qd, y, true));
            r[4].add(device_inline(&path, part, len, qd, y, true));
            r[5].add(host_uring(&f, part, len as usize, qd));
        }
        ratios.sort_by(f64::total_cmp);
        (r, ratios)
    };
    let qd4 = qd_arg();
    let ([h4, d4, i4, ds4, is4, hu4], rat) = run(&rand, 4096, qd4);
    println!(
        "virtio-blk 4KiB random read, QD{qd4}, io_uring end-to-end / host pread per slice: median {:5.1}% (min {:5.1}%, max {:5.1}%)",
        100.0 * rat[rat.len() / 2],
        100.0 * rat[0],
        100.0 * rat[rat.len() - 1]
    );
    let pct = |a: &Res, b: &Res| 100.0 * a.mbs() / b.mbs();
    let cpct = |a: &Res, b: &Res| 100.0 * a.cpu_mbs() / b.cpu_mbs();
    println!("virtio-blk 4KiB random read, QD{qd4} (ratios to host pread):");
    for (name, d, i) in [("io_uring", &d4, &i4), ("sync", &ds4, &is4)] {
        println!(
            "  {name:8} end-to-end {:8.0} IOPS {:7.1} MB/s ratio {:5.1}% | device alone {:8.0} IOPS ratio {:5.1}% wall {:5.1}% cpu-time",
            d.iops(),
            d.mbs(),
            pct(d, &h4),
            i.iops(),
            pct(i, &h4),
            cpct(i, &h4)
        );
    }
    println!(
        "  driver thread CPU per request (io_uring run): {:.0} ns; driver + device threads: {:.0} ns; host pread CPU per read: {:.0} ns",
        1e9 * d4.cpu / d4.ops as f64,
        1e9 * d4.pcpu / d4.ops as f64,
        1e9 * h4.cpu / h4.ops as f64
    );
    println!(
        "  host pread {:8.0} IOPS {:7.1} MB/s | host io_uring QD{qd4} {:8.0} IOPS (io_uring end-to-end = {:5.1}% of it)",
        h4.iops(),
        h4.mbs(),
        hu4.iops(),
        pct(&d4, &hu4)
    );
    let ([h1, d1, i1, ds1, _, _], _) = run(&seq, 1 << 20, 8);
    println!(
        "virtio-blk 1MiB sequential, QD8  : device {:8.1} MB/s (sync {:8.1}) | host pread {:8.1} MB/s | ratio {:5.1}% (sync {:5.1}%)",
        d1.mbs(),
        ds1.mbs(),
        h1.mbs(),
        pct(&d1, &h1),
        pct(&ds1, &h1)
    );
    println!(
        "  device model alone (inline)     : {:8.1} MB/s | ratio {:5.1}% wall, {:5.1}% cpu-time",
        i1.mbs(),
        pct(&i1, &h1),
        cpct(&i1, &h1)
    );
}

fn bench_net(quick: bool) {
    let r = std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: unshare of this thread's network namespace only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        let tap = Tap::open("zvbench0").map_err(|e| e.to_string())?;
        let ok = std::process::Command::new("ip")
            .args(["link", "set", "zvbench0", "up"])
            .status()
            .map_err(|e| e.to_string())?;
        if !ok.success() {
            return Err("ip link set up failed".into());
        }
        for args in [
            "addr add 10.78.0.1/24 dev zvbench0",
            "neigh add 10.78.0.2 lladdr 02:00:00:00:00:02 dev zvbench0 nud permanent",
        ] {
            let ok = std::process::Command::new("ip")
                .args(args.split_whitespace())
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err(format!("ip {args} failed"));
            }
        }
        let mut g = Guest::new();
        let mac = [0x02, 0, 0, 0, 0, 0x02];
        let mut d = g.attach(Box::new(Net::new(tap, Some(mac)).unwrap()), 0);
        d.init(&mut g, types::NET, features::VERSION_1 | 1 << 15, 2); // + MRG_RXBUF
        let n_rx = if quick { 50_000 } else { 200_000 };
        rx_bench(&mut g, &mut d, n_rx);
        // 64-byte frames to a MAC nobody has: the host drops them right
        // after the tap, so this measures the device and the tap write.
        const BATCH: usize = 128;
        let mut frame = vec![0u8; 12 + 64];
        frame[12..18].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        frame[18..24].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        frame[24..26].copy_from_slice(&[0x08, 0x00]);
        let bufs: Vec<u64> = (0..BATCH)
            .map(|_| {
                let b = g.alloc(frame.len() as u64);
                g.write(b, &frame);
                b
            })
            .collect();
        let n = if quick { 100_000 } else { 1_000_000 };
        let t = Instant::now();
        for _ in 0..n / BATCH {
            for &b in &bufs {
                d.add_chain(1, &[(b, frame.len() as u32, false)]);
            }
            d.kick(1);
            for _ in 0..BATCH {
                d.wait_used(1);
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let sent = (n / BATCH * BATCH) as f64;
        let out = std::process::Command::new("ip")
            .args(["-s", "-j", "link", "show", "zvbench0"])
            .output()
            .map_err(|e| e.to_string())?;
        let js = String::from_utf8_lossy(&out.stdout);
        let rx = js
            .split("\"rx\":{")
            .nth(1)
            .and_then(|s| s.split("\"packets\":").nth(1))
            .and_then(|s| s.split([',', '}']).next())
            .unwrap_or("?")
            .to_string();
        println!(
            "virtio-net TX 64B frames    : {:9.0} packets/s through the device into the tap ({sent} frames sent, tap counted {rx})",
            sent / secs
        );
        Ok(())
    })
    .join()
    .unwrap();
    if let Err(e) = r {
        println!("virtio-net bench skipped: {e}");
    }
}

/// Host -> guest: a host thread sends small UDP datagrams through the
/// kernel's stack into the tap as fast as it can; the guest keeps 128
/// receive buffers posted. Frames the tap queue drops are not counted.
fn rx_bench(g: &mut Guest, d: &mut common::Driver, n: usize) {
    const NBUF: usize = 128;
    let bufs: Vec<u64> = (0..NBUF).map(|_| g.alloc(2048)).collect();
    let mut slot_of = std::collections::HashMap::new();
    for (i, &b) in bufs.iter().enumerate() {
        let head = d.add_chain(0, &[(b, 2048, true)]);
        slot_of.insert(head, i);
    }
    d.notify(0);
    let sender = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("10.78.0.1:0").unwrap();
        let payload = [0x5au8; 22]; // 64-byte frames on the wire
        for _ in 0..n {
            let _ = s.send_to(&payload, "10.78.0.2:9");
        }
    });
    let mut got = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    while let Some((id, len)) = d.try_wait_used(0, Duration::from_millis(500)) {
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        if len >= 12 + 42 {
            got += 1;
        }
        let slot = slot_of.remove(&(id as u16)).expect("unknown buffer");
        let head = d.add_chain(0, &[(bufs[slot], 2048, true)]);
        slot_of.insert(head, slot);
        if got.is_multiple_of(32) {
            d.kick(0);
        }
    }
    sender.join().unwrap();
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    println!(
        "virtio-net RX 64B frames    : {:9.0} packets/s from the host stack through the tap into guest buffers ({got} of {n} sent arrived)",
        got as f64 / secs
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    bench_blk(quick);
    if std::env::var_os("ZV_PROFILE_INLINE").is_none()
        && !std::env::args().any(|a| a == "--ab-ring")
    {
        bench_net(quick);
    }
}

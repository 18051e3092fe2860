//! Differential test: the split-ring fast path against the virtio-queue path
//! on random and malicious rings. Two identical guest memories, one queue
//! each; every operation must give the same result (same chain or the same
//! error), the same queue state, the same interrupts and, at the end, the
//! same guest memory (used ring, flags, avail_event) byte for byte.

use std::cell::Cell;
use std::io;
use std::sync::Mutex;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::fast::FastQueue;
use super::{Chain, ChainError};
use crate::memory::{self, GuestMemory};
use crate::virtio::{InterruptReason, VirtioInterrupt};

/// Two adjacent regions (ranges may span them) and one past a hole.
const REGIONS: [(u64, usize); 3] = [(0, 0x8000), (0x8000, 0x8000), (0x20000, 0x4000)];
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Indirect tables: inside R0, across R0/R1, across the end of R2, in the hole.
const TABLES: [u64; 4] = [0x5000, 0x7fc0, 0x23fc0, 0x18000];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Default)]
struct CountIrq {
    queue: Mutex<Vec<u16>>,
}
impl VirtioInterrupt for CountIrq {
    fn trigger(&self, reason: InterruptReason) -> io::Result<()> {
        if let InterruptReason::Queue(i) = reason {
            self.queue.lock().unwrap().push(i);
        }
        Ok(())
    }
    fn set_needs_reset(&self) {}
}

fn mems() -> (GuestMemory, GuestMemory) {
    let r: Vec<_> = REGIONS.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    (memory::create(&r).unwrap(), memory::create(&r).unwrap())
}

fn write_both(a: &GuestMemory, b: &GuestMemory, addr: u64, bytes: &[u8]) {
    // Parts outside RAM are simply not written (like a guest cannot).
    let _ = a.write_slice(bytes, GuestAddress(addr));
    let _ = b.write_slice(bytes, GuestAddress(addr));
}

fn random_desc(r: &mut Rng, size: u16) -> [u8; 16] {
    let addr = match r.below(10) {
        0..=3 => 0x4000 + r.below(0x3000),
        4 => 0x7f00 + r.below(0x200),    // near the R0/R1 boundary
        5 => 0x20000 + r.below(0x4100),  // R2 and just past it
        6 => 0x18000 + r.below(0x100),   // the hole
        7 => u64::MAX - r.below(0x2000), // wraps
        8 => r.pick(&TABLES) + 16 * r.below(4),
        _ => r.next(),
    };
    let len = match r.below(10) {
        0 => 0,
        1 => 1,
        2 => 16,
        3 => 512,
        4 => 4096,
        5 => 16 * r.below(10) as u32,
        6 => 0x8000_0000,
        7 => u32::MAX - r.below(4) as u32,
        8 => 16 * r.below(10) as u32 + 8,
        _ => r.next() as u32,
    };
    let flags = match r.below(8) {
        0..=2 => 1,                 // NEXT
        3 => 0,                     // last, readable
        4 => 2,                     // last, writable
        5 => 3,                     // NEXT | WRITE
        6 => 4 | r.below(4) as u16, // INDIRECT (+ others)
        _ => r.next() as u16,
    };
    let next = match r.below(6) {
        0 => r.next() as u16,
        _ => r.below(u64::from(size) + 2) as u16,
    };
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    d
}

/// The error class and payload (virtio-queue's ring error strings included).
fn same(
    a: &Result<bool, ChainError>,
    b: &Result<bool, ChainError>,
    ca: &Chain,
    cb: &Chain,
) -> bool {
    match (a, b) {
        (Ok(true), Ok(true)) => ca == cb,
        _ => a == b,
    }
}

/// One random ring, then a random sequence of device operations on both paths.
fn trial(seed: u64, fast_used: &Cell<u32>, seen: &mut [u32; 8]) {
    let mut r = Rng(seed | 1);
    let (ma, mb) = mems();
    // Random bytes everywhere (stale descriptors, tables, garbage).
    for (start, len) in [(0, 0x9000), (0x23f00, 0x100)] {
        let junk: Vec<u8> = (0..len / 8).flat_map(|_| r.next().to_le_bytes()).collect();
        write_both(&ma, &mb, start, &junk);
    }
    let size = 1u16 << r.below(6);
    for i in 0..u64::from(size) {
        write_both(&ma, &mb, DESC + 16 * i, &random_desc(&mut r, size));
    }
    for t in TABLES {
        for i in 0..6 {
            write_both(&ma, &mb, t + 16 * i, &random_desc(&mut r, size));
        }
    }
    // A ring across the R0/R1 boundary now and then: no fast path there.
    let used = if r.below(10) == 0 { 0x8000 - 8 } else { USED };
    let start_avail = r.next() as u16;
    let event_idx = r.below(2) == 0;
    let mk = || {
        let mut q = Queue::new(256).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(DESC as u32), Some(0));
        q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q.set_event_idx(event_idx);
        q.set_next_avail(start_avail);
        q.set_next_used(start_avail.wrapping_sub(r_small(seed)));
        q.set_ready(true);
        q
    };
    let mut slow = FastQueue::slow(mk());
    let mut fast = FastQueue::new(mk(), &mb);
    assert_eq!(fast.is_fast(), used == USED, "seed {seed}");
    fast_used.set(fast_used.get() + u32::from(fast.is_fast()));
    let (ia, ib) = (CountIrq::default(), CountIrq::default());
    let set_avail = |r: &mut Rng, ahead: u16| {
        let idx = start_avail.wrapping_add(ahead);
        write_both(&ma, &mb, AVAIL + 2, &idx.to_le_bytes());
        let _ = r;
    };
    // Avail entries: mostly valid heads, some out of range.
    for i in 0..u64::from(size) {
        let head = if r.below(8) == 0 {
            r.next() as u16
        } else {
            r.below(u64::from(size)) as u16
        };
        write_both(&ma, &mb, AVAIL + 4 + 2 * i, &head.to_le_bytes());
    }
    let flags = r.below(2) as u16;
    write_both(&ma, &mb, AVAIL, &flags.to_le_bytes());
    let used_event = start_avail.wrapping_add(r.below(u64::from(size) + 2) as u16);
    write_both(
        &ma,
        &mb,
        AVAIL + 4 + 2 * u64::from(size),
        &used_event.to_le_bytes(),
    );
    let ahead = match r.below(8) {
        0 => size + 1 + r.below(100) as u16, // too far ahead: broken ring
        1 => r.next() as u16,
        _ => r.below(u64::from(size) + 1) as u16,
    };
    set_avail(&mut r, ahead);
    let (mut ca, mut cb) = (Chain::default(), Chain::default());
    let mut heads = Vec::new();
    for step in 0..3 * u32::from(size) + 4 {
        let what = r.below(10);
        let ctx = format!("seed {seed} step {step} op {what}");
        match what {
            0..=4 => {
                let a = slow.pop_chain_into(&ma, &mut ca);
                let b = fast.pop_chain_into(&mb, &mut cb);
                assert!(
                    same(&a, &b, &ca, &cb),
                    "{ctx}: {a:?} {ca:?} vs {b:?} {cb:?}"
                );
                if a == Ok(true) {
                    heads.push(ca.head);
                }
                seen[class(&a, &ca)] += 1;
            }
            5 => {
                let head = if r.below(4) == 0 || heads.is_empty() {
                    r.next() as u16
                } else {
                    heads.remove(0)
                };
                let len = r.next() as u32;
                let a = slow.add_used(&ma, head, len);
                let b = fast.add_used(&mb, head, len);
                assert_eq!(a, b, "{ctx}");
            }
            6 => assert_eq!(slow.quiesce(&ma), fast.quiesce(&mb), "{ctx}"),
            7 => assert_eq!(slow.rearm(&ma), fast.rearm(&mb), "{ctx}"),
            8 => {
                slow.signal_used(&ma, &ia, 3).unwrap();
                fast.signal_used(&mb, &ib, 3).unwrap();
                assert_eq!(
                    *ia.queue.lock().unwrap(),
                    *ib.queue.lock().unwrap(),
                    "{ctx}"
                );
            }
            _ => {
                // The driver moves: new avail idx (sometimes a jump), new
                // used_event, new flags.
                let ahead = match r.below(4) {
                    0 => r.next() as u16,
                    _ => r.below(u64::from(size) + 1) as u16,
                };
                set_avail(&mut r, ahead);
                let ue = r.next() as u16;
                write_both(&ma, &mb, AVAIL + 4 + 2 * u64::from(size), &ue.to_le_bytes());
                write_both(&ma, &mb, AVAIL, &(r.below(2) as u16).to_le_bytes());
            }
        }
        assert_eq!(slow.queue().state(), fast.queue().state(), "{ctx}");
    }
    for &(start, len) in &REGIONS {
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        ma.read_slice(&mut a, GuestAddress(start)).unwrap();
        mb.read_slice(&mut b, GuestAddress(start)).unwrap();
        assert!(
            a == b,
            "seed {seed}: guest memory differs in region {start:#x}"
        );
    }
}

/// Outcome classes, to check the random rings reach every one of them.
fn class(a: &Result<bool, ChainError>, c: &Chain) -> usize {
    match a {
        Ok(false) => 0,
        Ok(true) if c.readable.len() + c.writable.len() > 1 => 1,
        Ok(true) => 2,
        Err(ChainError::Ring(_)) => 3,
        Err(ChainError::Empty(_)) => 4,
        Err(ChainError::Unterminated(_)) => 5,
        Err(ChainError::OutsideRam { .. }) => 6,
        Err(ChainError::Direction(_) | ChainError::NoReply(_)) => 7,
    }
}

fn r_small(seed: u64) -> u16 {
    (seed % 7) as u16
}

#[test]
fn fast_path_equals_virtio_queue_on_random_rings() {
    let fast = Cell::new(0);
    let mut seen = [0u32; 8];
    // More with ZV_FAST_TRIALS=<n> (the default keeps qemu-user runs short).
    let n = std::env::var("ZV_FAST_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    for seed in 0..n {
        trial(
            0x9e37_79b9_7f4a_7c15 ^ (seed * 0x1000_0001),
            &fast,
            &mut seen,
        );
    }
    eprintln!(
        "outcomes (empty, multi, single, ring, head, unterminated, outside, direction): {seen:?}"
    );
    // Every outcome class was reached, more than a few times.
    assert!(seen.iter().all(|&k| u64::from(k) >= n / 100), "{seen:?}");
    // The fast path really ran (not only the fallback).
    assert!(
        fast.get() > n as u32 * 8 / 10,
        "fast path used {} times",
        fast.get()
    );
}

/// Hand-made malicious cases, each must match the slow path and give the
/// expected class.
#[test]
fn fast_path_refuses_malicious_chains_like_virtio_queue() {
    let (ma, mb) = mems();
    let desc = |m: &GuestMemory, i: u64, addr: u64, len: u32, flags: u16, next: u16| {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        m.write_slice(&d, GuestAddress(i)).unwrap();
    };
    type Setup = fn(&dyn Fn(u64, u64, u32, u16, u16)) -> u16;
    // (name, setup returning the head, expected result)
    let cases: [(&str, Setup, Result<bool, ChainError>); 8] = [
        (
            "loop",
            |d| {
                d(DESC, 0x4000, 16, 1, 1);
                d(DESC + 16, 0x4000, 16, 1, 0);
                0
            },
            Err(ChainError::Unterminated(0)),
        ),
        (
            "next past table",
            |d| {
                d(DESC, 0x4000, 16, 1, 8);
                0
            },
            Err(ChainError::Unterminated(0)),
        ),
        ("head past table", |_| 9, Err(ChainError::Empty(9))),
        (
            "nested indirect",
            |d| {
                d(DESC, 0x5000, 32, 4, 0);
                d(0x5000, 0x5000, 32, 4, 0);
                0
            },
            Err(ChainError::Empty(0)),
        ),
        (
            "indirect length not a multiple of 16",
            |d| {
                d(DESC, 0x5000, 24, 4, 0);
                0
            },
            Err(ChainError::Empty(0)),
        ),
        (
            "buffer outside RAM",
            |d| {
                d(DESC, 0x1_0000_0000, 16, 0, 0);
                0
            },
            Err(ChainError::OutsideRam {
                head: 0,
                addr: 0x1_0000_0000,
                len: 16,
            }),
        ),
        (
            "readable after writable",
            |d| {
                d(DESC, 0x4000, 16, 3, 1);
                d(DESC + 16, 0x4000, 16, 0, 0);
                0
            },
            Err(ChainError::Direction(0)),
        ),
        (
            "indirect across regions, then a buffer across regions",
            |d| {
                d(DESC, 0x7ff0, 32, 4, 0);
                d(0x7ff0, 0x7f00, 0x200, 1, 1);
                d(0x8000, 0x6000, 1, 2, 0);
                0
            },
            Ok(true),
        ),
    ];
    for (name, setup, want) in cases {
        let mk = || {
            let mut q = Queue::new(8).unwrap();
            q.set_desc_table_address(Some(DESC as u32), Some(0));
            q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
            q.set_used_ring_address(Some(USED as u32), Some(0));
            q.set_ready(true);
            q
        };
        let head = setup(&|i, a, l, f, n| {
            desc(&ma, i, a, l, f, n);
            desc(&mb, i, a, l, f, n);
        });
        write_both(&ma, &mb, AVAIL + 4, &head.to_le_bytes());
        write_both(&ma, &mb, AVAIL + 2, &1u16.to_le_bytes());
        let mut slow = FastQueue::slow(mk());
        let mut fast = FastQueue::new(mk(), &mb);
        assert!(fast.is_fast());
        let (mut ca, mut cb) = (Chain::default(), Chain::default());
        let a = slow.pop_chain_into(&ma, &mut ca);
        let b = fast.pop_chain_into(&mb, &mut cb);
        assert_eq!(a, want, "{name} (virtio-queue)");
        assert_eq!(b, want, "{name} (fast path)");
        assert_eq!(ca, cb, "{name}");
        // The avail index running more than a queue ahead is a broken ring.
        write_both(&ma, &mb, AVAIL + 2, &10u16.to_le_bytes());
        let a = slow.pop_chain_into(&ma, &mut ca);
        let b = fast.pop_chain_into(&mb, &mut cb);
        assert!(matches!(a, Err(ChainError::Ring(_))), "{name}: {a:?}");
        assert_eq!(a, b, "{name}");
    }
}

/// The region map's copies and iovecs equal vm-memory's on random ranges
/// (inside, across the adjacent regions, into the hole, wrapping).
#[test]
fn ram_map_copies_equal_vm_memory() {
    use super::fast::RamMap;
    use super::GuestRam;
    let (ma, mb) = mems();
    let ram = RamMap::new(&mb).unwrap();
    let mut r = Rng(0x1234_5678_9abc_def1);
    let (mut hits, mut misses) = (0, 0);
    for i in 0..5_000u32 {
        let addr = match r.below(5) {
            0 => r.below(0x10100),
            1 => 0x7fc0 + r.below(0x80),
            2 => 0x23f80 + r.below(0x100),
            3 => u64::MAX - r.below(0x80),
            _ => 0x20000 + r.below(0x4000),
        };
        let len = match r.below(4) {
            0 => r.below(8) as usize,
            1 => r.below(65) as usize,
            2 => 64 + r.below(200) as usize,
            _ if r.below(4) == 0 => r.below(0x9000) as usize,
            _ => r.below(0x1100) as usize,
        };
        let data: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        let ctx = format!("step {i}: {addr:#x}+{len:#x}");
        let wa = ma.write_at(GuestAddress(addr), &data);
        let wb = ram.write_at(GuestAddress(addr), &data);
        assert_eq!(wa, wb, "{ctx}");
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        let ra = ma.read_at(GuestAddress(addr), &mut a);
        let rb = ram.read_at(GuestAddress(addr), &mut b);
        assert_eq!(ra, rb, "{ctx}");
        if ra {
            assert!(a == b && a == data, "{ctx}");
            hits += 1;
        } else {
            misses += 1;
        }
        if len > 0 {
            let (mut ia, mut ib) = (Vec::new(), Vec::new());
            let pa = ma.push_iovecs(GuestAddress(addr), len as u64, &mut ia);
            let pb = ram.push_iovecs(GuestAddress(addr), len as u64, &mut ib);
            assert_eq!(pa, pb, "{ctx}");
            if pa.is_some() {
                // Same host ranges, relative to each memory's own mapping.
                let lens = |v: &[libc::iovec]| v.iter().map(|x| x.iov_len).collect::<Vec<_>>();
                assert_eq!(lens(&ia), lens(&ib), "{ctx}");
                assert_eq!(lens(&ia).iter().sum::<usize>(), len, "{ctx}");
                // And the very same host addresses as vm-memory gives for `mb`.
                let mut ic = Vec::new();
                mb.push_iovecs(GuestAddress(addr), len as u64, &mut ic)
                    .unwrap();
                let ptrs =
                    |v: &[libc::iovec]| v.iter().map(|x| x.iov_base as usize).collect::<Vec<_>>();
                assert_eq!(ptrs(&ib), ptrs(&ic), "{ctx}");
            }
        }
    }
    for &(start, len) in &REGIONS {
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        ma.read_slice(&mut a, GuestAddress(start)).unwrap();
        mb.read_slice(&mut b, GuestAddress(start)).unwrap();
        assert!(a == b, "guest memory differs in region {start:#x}");
    }
    assert!(hits > 500 && misses > 500, "{hits} {misses}");
}

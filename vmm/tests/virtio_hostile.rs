//! A hostile guest against virtio-mmio + virtio-blk: every broken ring,
//! chain or register sequence ends in an error status or NEEDS_RESET with a
//! configuration interrupt, never a VMM panic or an access outside guest RAM.

mod common;

use std::time::Duration;

use common::{Driver, Guest, TempDir, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, RAM_SIZE};
use zvisor_vmm::virtio::block::request::{status as st, types as t};
use zvisor_vmm::virtio::block::{Block, DiskConfig};
use zvisor_vmm::virtio::mmio::{regs, INT_CONFIG};
use zvisor_vmm::virtio::{features, status, types};

fn blk(dir: &TempDir) -> Box<Block> {
    let p = dir.path("h.img");
    std::fs::write(&p, vec![0x5a; 16 * 512]).unwrap();
    Box::new(
        Block::new(&DiskConfig {
            path: p,
            readonly: false,
            serial: None,
        })
        .unwrap(),
    )
}

fn ready(g: &mut Guest, dir: &TempDir) -> Driver {
    let mut d = g.attach(blk(dir), 0);
    d.init(
        g,
        types::BLOCK,
        features::VERSION_1 | features::RING_INDIRECT_DESC,
        1,
    );
    d
}

/// Header + status buffers for a 1-sector read.
fn read_req(g: &mut Guest) -> (u64, u64, u64) {
    let hdr = g.alloc(16);
    let data = g.alloc(512);
    let stat = g.alloc(1);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&t::IN.to_le_bytes());
    g.write(hdr, &h);
    g.write(stat, &[0xff]);
    (hdr, data, stat)
}

fn assert_needs_reset(d: &Driver) {
    assert!(d.wait_needs_reset(), "device did not ask for a reset");
    let isr = d.readl(regs::INTERRUPT_STATUS);
    assert!(
        isr & INT_CONFIG != 0,
        "no configuration interrupt (isr {isr:#x})"
    );
    assert!(d.line.take() > 0, "interrupt line not raised");
}

/// After NEEDS_RESET, a full reset and bring-up gives a working device.
fn assert_recovers(d: &mut Driver, g: &mut Guest) {
    d.queues.clear();
    d.init(g, types::BLOCK, features::VERSION_1, 1);
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
    let (hdr, data, stat) = read_req(g);
    d.submit(0, &[(hdr, 16, false), (data, 512, true), (stat, 1, true)]);
    assert_eq!(d.wait_used(0).1, 513);
    assert_eq!(g.read(stat, 1)[0], st::OK);
    assert_eq!(g.read(data, 512), vec![0x5a; 512]);
}

#[test]
fn looping_chain() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let (hdr, _, stat) = read_req(&mut g);
    d.write_desc(0, 0, hdr, 16, DESC_F_NEXT, 1);
    d.write_desc(0, 1, stat, 1, DESC_F_WRITE | DESC_F_NEXT, 0);
    d.publish(0, 0);
    d.notify(0);
    assert_needs_reset(&d);
    assert_eq!(d.used_idx(0), 0);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn buffer_outside_guest_ram() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let (hdr, _, stat) = read_req(&mut g);
    // Data buffer straddles the end of RAM.
    let end = RAM_SIZE as u64 - 256;
    d.submit(0, &[(hdr, 16, false), (end, 512, true), (stat, 1, true)]);
    assert_needs_reset(&d);
    assert_eq!(g.read(stat, 1)[0], 0xff, "nothing answered");
    // Wholly outside, at a huge address that would wrap.
    d.queues.clear();
    d.init(&mut g, types::BLOCK, features::VERSION_1, 1);
    d.submit(
        0,
        &[(hdr, 16, false), (u64::MAX - 8, 512, true), (stat, 1, true)],
    );
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn readable_after_writable() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let (hdr, data, stat) = read_req(&mut g);
    d.submit(0, &[(data, 512, true), (hdr, 16, false), (stat, 1, true)]);
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn no_status_byte() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let (hdr, _, _) = read_req(&mut g);
    d.submit(0, &[(hdr, 16, false)]);
    assert_needs_reset(&d);
}

#[test]
fn head_index_out_of_range_and_avail_idx_jump() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let size = d.queues[0].size;
    d.publish(0, size + 3);
    d.notify(0);
    assert_needs_reset(&d);

    d.queues.clear();
    d.init(&mut g, types::BLOCK, features::VERSION_1, 1);
    d.set_avail_idx(0, size + 1);
    d.notify(0);
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn chain_longer_than_4gib() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    d.write_desc(0, 0, 0, u32::MAX, DESC_F_NEXT, 1);
    d.write_desc(0, 1, 0, u32::MAX, DESC_F_WRITE, 0);
    d.publish(0, 0);
    d.notify(0);
    assert_needs_reset(&d);
}

#[test]
fn indirect_tables_good_and_bad() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let (hdr, data, stat) = read_req(&mut g);
    // A valid indirect table works (Linux uses these).
    let table = g.alloc(48);
    let desc = |addr: u64, len: u32, flags: u16, next: u16| {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        b
    };
    let mut tb = Vec::new();
    tb.extend(desc(hdr, 16, DESC_F_NEXT, 1));
    tb.extend(desc(data, 512, DESC_F_WRITE | DESC_F_NEXT, 2));
    tb.extend(desc(stat, 1, DESC_F_WRITE, 0));
    g.write(table, &tb);
    d.write_desc(0, 0, table, 48, DESC_F_INDIRECT, 0);
    d.publish(0, 0);
    d.notify(0);
    assert_eq!(d.wait_used(0), (0, 513));
    assert_eq!(g.read(stat, 1)[0], st::OK);
    // A nested indirect table is refused.
    let nested = g.alloc(16);
    g.write(nested, &desc(table, 48, DESC_F_INDIRECT, 0));
    d.write_desc(0, 1, nested, 16, DESC_F_INDIRECT, 0);
    d.publish(0, 1);
    d.notify(0);
    assert_needs_reset(&d);
    // A table whose length is not a whole number of descriptors.
    d.queues.clear();
    d.init(
        &mut g,
        types::BLOCK,
        features::VERSION_1 | features::RING_INDIRECT_DESC,
        1,
    );
    d.write_desc(0, 0, table, 47, DESC_F_INDIRECT, 0);
    d.publish(0, 0);
    d.notify(0);
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn queue_size_not_a_power_of_two() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = g.attach(blk(&dir), 0);
    d.probe(types::BLOCK, features::VERSION_1).unwrap();
    d.setup_queue(&mut g, 0, 100);
    d.driver_ok();
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn queue_larger_than_max_or_rings_outside_ram() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = g.attach(blk(&dir), 0);
    d.probe(types::BLOCK, features::VERSION_1).unwrap();
    d.setup_queue(&mut g, 0, 1024);
    d.driver_ok();
    assert_needs_reset(&d);

    d.queues.clear();
    d.probe(types::BLOCK, features::VERSION_1).unwrap();
    d.setup_queue(&mut g, 0, 0);
    d.writel(regs::QUEUE_SEL, 0);
    d.writel(regs::QUEUE_USED_LOW, (RAM_SIZE - 64) as u32);
    d.driver_ok();
    assert_needs_reset(&d);

    d.queues.clear();
    d.probe(types::BLOCK, features::VERSION_1).unwrap();
    d.setup_queue(&mut g, 0, 0);
    d.writel(regs::QUEUE_DESC_LOW, 0x1008); // misaligned descriptor table
    d.driver_ok();
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn notify_before_driver_ok_is_not_served() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = g.attach(blk(&dir), 0);
    d.probe(types::BLOCK, features::VERSION_1).unwrap();
    d.setup_queue(&mut g, 0, 0);
    let (hdr, data, stat) = read_req(&mut g);
    d.submit(0, &[(hdr, 16, false), (data, 512, true), (stat, 1, true)]);
    assert!(d.try_wait_used(0, Duration::from_millis(200)).is_none());
    d.driver_ok();
    assert!(d.try_wait_used(0, Duration::from_millis(200)).is_none());
    assert_eq!(d.status() & status::NEEDS_RESET, 0);
    d.notify(0);
    assert_eq!(d.wait_used(0).1, 513);
}

#[test]
fn feature_negotiation_is_enforced() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = g.attach(blk(&dir), 0);
    // Without VERSION_1 (a legacy driver): FEATURES_OK does not stick.
    let s = d.probe(types::BLOCK, 0).unwrap_err();
    assert_eq!(s & status::FEATURES_OK, 0);
    // Acking something never offered.
    d.writel(regs::STATUS, 0);
    d.writel(regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    d.writel(regs::DRIVER_FEATURES_SEL, 1);
    d.writel(regs::DRIVER_FEATURES, 1 | (1 << 30));
    d.writel(regs::DRIVER_FEATURES_SEL, 0);
    d.writel(regs::DRIVER_FEATURES, 0);
    d.writel(
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(d.status() & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK.
    d.writel(
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    assert_needs_reset(&d);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn garbage_register_traffic_does_not_panic() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let mut d = ready(&mut g, &dir);
    let mut x: u32 = 0x1234_5678;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for _ in 0..20_000 {
        let off = u64::from(rnd() % 0x200);
        let len = [1usize, 2, 4, 8][(rnd() % 4) as usize];
        if off + len as u64 > 0x200 {
            continue;
        }
        let addr = d.base + off;
        if rnd() % 2 == 0 {
            let mut b = vec![0u8; len];
            assert!(d.bus.read(addr, &mut b));
        } else {
            let v = rnd().to_le_bytes();
            let mut b = vec![0u8; len];
            for (i, c) in b.iter_mut().enumerate() {
                *c = v[i % 4];
            }
            assert!(d.bus.write(addr, &b));
        }
    }
    // Still a virtio device that a reset brings back.
    assert_eq!(d.readl(regs::MAGIC_VALUE), zvisor_vmm::virtio::mmio::MAGIC);
    assert_recovers(&mut d, &mut g);
}

#[test]
fn register_edge_cases() {
    let dir = TempDir::new("hostile");
    let mut g = Guest::new();
    let d = g.attach(blk(&dir), 0);
    // A queue index past the device's queues reads as absent.
    d.writel(regs::QUEUE_SEL, 7);
    assert_eq!(d.readl(regs::QUEUE_NUM_MAX), 0);
    assert_eq!(d.readl(regs::QUEUE_READY), 0);
    // No shared memory regions: length reads as all ones (~0ULL).
    d.writel(regs::SHM_SEL, 0);
    assert_eq!(d.readl(regs::SHM_LEN_LOW), u32::MAX);
    assert_eq!(d.readl(regs::SHM_LEN_HIGH), u32::MAX);
    // Feature words past the second read as 0.
    d.writel(regs::DEVICE_FEATURES_SEL, 2);
    assert_eq!(d.readl(regs::DEVICE_FEATURES), 0);
    // Sub-word register accesses are refused (read 0, write ignored).
    let mut b = [0xffu8; 2];
    assert!(d.bus.read(d.base + regs::MAGIC_VALUE, &mut b));
    assert_eq!(b, [0, 0]);
    assert!(d.bus.write(d.base + regs::STATUS, &[1]));
    assert_eq!(d.status(), 0);
    // Config space past its end reads as zeros, at any width.
    let mut c = [0xffu8; 8];
    assert!(d.bus.read(d.base + 0x1f8, &mut c));
    assert_eq!(c, [0; 8]);
    // Writes to read-only registers change nothing.
    d.writel(regs::MAGIC_VALUE, 0);
    d.writel(regs::DEVICE_ID, 9);
    assert_eq!(d.readl(regs::MAGIC_VALUE), zvisor_vmm::virtio::mmio::MAGIC);
    assert_eq!(d.readl(regs::DEVICE_ID), types::BLOCK);
}

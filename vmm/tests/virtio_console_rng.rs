//! virtio-rng and virtio-console through virtio-mmio, driven like Linux's
//! virtio-rng and virtio_console (single port) drivers.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::Guest;
use zvisor_vmm::virtio::console::{Console, ConsoleBackend, F_EMERG_WRITE};
use zvisor_vmm::virtio::mmio::regs;
use zvisor_vmm::virtio::rng::Rng;
use zvisor_vmm::virtio::{features, types, VirtioDevice};

#[test]
fn rng_fills_buffers_with_fresh_entropy() {
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(Rng::new()), 0);
    d.init(&mut g, types::RNG, !features::RING_EVENT_IDX, 1);
    let a = g.alloc(64);
    let b = g.alloc(64);
    let head = d.submit(0, &[(a, 64, true)]);
    assert_eq!(d.wait_used(0), (u32::from(head), 64));
    let head = d.submit(0, &[(b, 32, true), (b + 32, 32, true)]);
    assert_eq!(d.wait_used(0), (u32::from(head), 64));
    let (ra, rb) = (g.read(a, 64), g.read(b, 64));
    assert_ne!(ra, vec![0; 64]);
    assert_ne!(ra, rb, "two requests got the same bytes");
    // A device-readable-only request gets nothing written.
    let head = d.submit(0, &[(a, 64, false)]);
    assert_eq!(d.wait_used(0), (u32::from(head), 0));
}

fn console() -> (Console, UnixStream, UnixStream) {
    let (host_in, dev_in) = UnixStream::pair().unwrap();
    let (host_out, dev_out) = UnixStream::pair().unwrap();
    let c = Console::new(ConsoleBackend {
        input: Some(OwnedFd::from(dev_in)),
        output: OwnedFd::from(dev_out),
    })
    .unwrap();
    (c, host_in, host_out)
}

#[test]
fn console_both_directions() {
    let (c, mut host_in, mut host_out) = console();
    host_out
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(c), 0);
    let f = d.init(
        &mut g,
        types::CONSOLE,
        features::VERSION_1 | F_EMERG_WRITE,
        2,
    );
    assert!(f & F_EMERG_WRITE != 0);
    assert_eq!(d.config(4, 4), 1u32.to_le_bytes(), "max_nr_ports");
    // Host input written before the guest posted receive buffers is kept.
    host_in.write_all(b"early input").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // Linux's fill_queue: post receive buffers.
    let rx: Vec<u64> = (0..4).map(|_| g.alloc(64)).collect();
    for &b in &rx {
        d.add_chain(0, &[(b, 64, true)]);
    }
    d.notify(0);
    let (id, len) = d.wait_used(0);
    let got = g.read(rx[id as usize], len as usize);
    assert_eq!(got, b"early input");
    host_in.write_all(b"more").unwrap();
    let (id, len) = d.wait_used(0);
    assert_eq!(g.read(rx[id as usize], len as usize), b"more");
    // Guest output (put_chars) reaches the host.
    let tx = g.alloc(64);
    g.write(tx, b"hello from hvc0\n");
    let head = d.submit(1, &[(tx, 16, false)]);
    assert_eq!(d.wait_used(1).0, u32::from(head));
    let mut buf = [0u8; 16];
    host_out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello from hvc0\n");
    // Emergency write through config space.
    d.writel(regs::CONFIG + 8, u32::from(b'!'));
    let mut one = [0u8; 1];
    host_out.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"!");
}

#[test]
fn console_input_larger_than_buffers_is_not_lost() {
    let (c, mut host_in, _host_out) = console();
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(c), 0);
    d.init(&mut g, types::CONSOLE, features::VERSION_1, 2);
    let msg: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
    host_in.write_all(&msg).unwrap();
    let mut got = Vec::new();
    let bufs: Vec<u64> = (0..8).map(|_| g.alloc(100)).collect();
    while got.len() < msg.len() {
        for &b in &bufs {
            d.add_chain(0, &[(b, 100, true)]);
        }
        d.notify(0);
        for _ in 0..bufs.len() {
            if got.len() >= msg.len() {
                break;
            }
            let Some((id, len)) = d.try_wait_used(0, Duration::from_secs(2)) else {
                break;
            };
            let slot = id as usize % bufs.len();
            got.extend(g.read(bufs[slot], len as usize));
        }
    }
    assert_eq!(got, msg);
}

/// A host that stops reading holds the guest's output back (the chain stays
/// unfinished) without blocking the device: the data arrives once the host
/// reads, and a reset while output is stuck completes at once.
#[test]
fn console_output_backpressure_and_reset() {
    use zvisor_vmm::virtio::status;
    let (c, _host_in, mut host_out) = console();
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(c), 0);
    d.init(&mut g, types::CONSOLE, features::VERSION_1, 2);
    let chunk = 16 << 10;
    let n = 64; // 1 MiB: far more than a socket buffer
    let buf = g.alloc(chunk as u64);
    let data: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
    g.write(buf, &data);
    for _ in 0..n {
        d.add_chain(1, &[(buf, chunk as u32, false)]);
    }
    d.notify(1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        d.used_idx(1) < n as u16,
        "output must be held back, not dropped"
    );
    assert!(d.status() & status::NEEDS_RESET == 0);
    // The host drains: everything arrives, in order, and all chains complete.
    let reader = std::thread::spawn(move || {
        let mut all = vec![0u8; chunk * n];
        host_out.read_exact(&mut all).unwrap();
        (all, host_out)
    });
    for _ in 0..n {
        d.wait_used(1);
    }
    let (all, _host_out) = reader.join().unwrap();
    for part in all.chunks(chunk) {
        assert_eq!(part, &data[..]);
    }
    // Stuck again, then reset: the vCPU's status write must not hang.
    for _ in 0..n {
        d.add_chain(1, &[(buf, chunk as u32, false)]);
    }
    d.notify(1);
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    d.writel(regs::STATUS, 0);
    assert_eq!(d.status(), 0);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "reset blocked on the console output"
    );
}

/// VIRTIO_F_EVENT_IDX on virtio-rng, as Linux negotiates it.
#[test]
fn rng_event_idx() {
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(Rng::new()), 0);
    d.init(
        &mut g,
        types::RNG,
        features::VERSION_1 | features::RING_EVENT_IDX,
        1,
    );
    let buf = g.alloc(4096);
    common::check_event_idx(&mut d, &mut g, 0, &mut |d, _| {
        d.add_chain(0, &[(buf, 32, true)])
    });
}

/// VIRTIO_F_EVENT_IDX on virtio-console: TX completes on its own; RX must
/// re-arm avail_event when host input waits for buffers, so the driver's
/// conditional kick after a refill reaches the device.
#[test]
fn console_event_idx() {
    let (c, mut host_in, mut host_out) = console();
    assert_ne!(c.features() & features::RING_EVENT_IDX, 0, "offered");
    host_out
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(c), 0);
    d.init(
        &mut g,
        types::CONSOLE,
        features::VERSION_1 | features::RING_EVENT_IDX,
        2,
    );
    let tx = g.alloc(64);
    g.write(tx, b"x");
    common::check_event_idx(&mut d, &mut g, 1, &mut |d, _| {
        d.add_chain(1, &[(tx, 1, false)])
    });
    let mut out = [0u8; 13];
    host_out.read_exact(&mut out).unwrap();
    assert_eq!(&out, b"xxxxxxxxxxxxx", "every TX chain reached the host");
    // RX: input arrives with no buffers posted; each one-buffer refill must
    // kick (the device is waiting) and gets the next chunk.
    let rx = g.alloc(4);
    host_in.write_all(b"abcdefgh").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut got = Vec::new();
    while got.len() < 8 {
        assert!(d.enable_cb(0));
        let head = d.add_chain(0, &[(rx, 4, true)]);
        assert!(d.kick(0), "device did not re-arm RX after running out");
        let (id, len) = d.wait_used(0);
        assert_eq!(id, u32::from(head));
        got.extend(g.read(rx, len as usize));
    }
    assert_eq!(got, b"abcdefgh");
}

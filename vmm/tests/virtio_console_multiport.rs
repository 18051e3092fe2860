//! virtio-console with `VIRTIO_CONSOLE_F_MULTIPORT`, driven like Linux's
//! virtio_console: control queues, `DEVICE_READY` → `DEVICE_ADD` per port,
//! `PORT_READY` → `PORT_NAME` + `PORT_OPEN`, `PORT_OPEN` following the host
//! socket's client, host input held until the guest opens the port, bytes
//! on each port's own queues; hostile control
//! messages are ignored; a driver without multiport is refused cleanly.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::{Driver, Guest, TempDir};
use zvisor_vmm::virtio::console::{Console, ConsoleBackend, PortHost, PortSpec, F_MULTIPORT};
use zvisor_vmm::virtio::{features, status, types};

const DEVICE_READY: u16 = 0;
const DEVICE_ADD: u16 = 1;
const PORT_READY: u16 = 3;
const PORT_OPEN: u16 = 6;
const PORT_NAME: u16 = 7;
const CTRL_RX: usize = 2;
const CTRL_TX: usize = 3;

fn port_queues(p: usize) -> (usize, usize) {
    if p == 0 {
        (0, 1)
    } else {
        (2 * p + 2, 2 * p + 3)
    }
}

fn ctrl(id: u32, event: u16, value: u16) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&id.to_le_bytes());
    b[4..6].copy_from_slice(&event.to_le_bytes());
    b[6..8].copy_from_slice(&value.to_le_bytes());
    b
}

struct Mp {
    g: Guest,
    d: Driver,
    ctrl_bufs: Vec<u64>,
    ctrl_tx: u64,
    host_in: UnixStream,
    host_out: UnixStream,
    sock: std::path::PathBuf,
    _dir: TempDir,
}

impl Mp {
    /// Port 0 `org.zvisor.log` on a socket pair, port 1 `org.zvisor.agent.0`
    /// on a listening socket.
    fn new(feats: u64, nqueues: u32) -> Self {
        let dir = TempDir::new("mp");
        let sock = dir.path("agent.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let (host_in, dev_in) = UnixStream::pair().unwrap();
        let (host_out, dev_out) = UnixStream::pair().unwrap();
        host_out
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let c = Console::multiport(vec![
            PortSpec {
                name: "org.zvisor.log".into(),
                host: PortHost::Fds(ConsoleBackend {
                    input: Some(OwnedFd::from(dev_in)),
                    output: OwnedFd::from(dev_out),
                }),
            },
            PortSpec {
                name: "org.zvisor.agent.0".into(),
                host: PortHost::Listen(l),
            },
        ])
        .unwrap();
        let mut g = Guest::new();
        let mut d = g.attach(Box::new(c), 0);
        d.init(&mut g, types::CONSOLE, feats, nqueues);
        let ctrl_tx = g.alloc(64);
        Self {
            g,
            d,
            ctrl_bufs: Vec::new(),
            ctrl_tx,
            host_in,
            host_out,
            sock,
            _dir: dir,
        }
    }

    /// Linux's fill_queue on the control receive queue.
    fn post_ctrl_bufs(&mut self, n: usize) {
        for _ in 0..n {
            let b = self.g.alloc(256);
            self.ctrl_bufs.push(b);
            self.d.add_chain(CTRL_RX, &[(b, 256, true)]);
        }
        self.d.notify(CTRL_RX as u32);
    }

    fn send_ctrl(&mut self, msg: &[u8]) {
        self.g.write(self.ctrl_tx, msg);
        let head = self
            .d
            .submit(CTRL_TX, &[(self.ctrl_tx, msg.len() as u32, false)]);
        assert_eq!(self.d.wait_used(CTRL_TX).0, u32::from(head));
    }

    /// The next control message from the device: (id, event, value, tail).
    fn recv_ctrl(&mut self) -> (u32, u16, u16, Vec<u8>) {
        let (id, len) = self.d.wait_used(CTRL_RX);
        // One-descriptor chains: the head is the buffer's index.
        let b = self.g.read(self.ctrl_bufs[id as usize], len as usize);
        assert!(b.len() >= 8, "short control message {b:?}");
        (
            u32::from_le_bytes(b[0..4].try_into().unwrap()),
            u16::from_le_bytes(b[4..6].try_into().unwrap()),
            u16::from_le_bytes(b[6..8].try_into().unwrap()),
            b[8..].to_vec(),
        )
    }

    fn no_ctrl(&mut self) -> bool {
        self.d
            .try_wait_used(CTRL_RX, Duration::from_millis(200))
            .is_none()
    }
}

/// Bring-up as Linux does it (with `extra` features on top of VERSION_1 and
/// MULTIPORT); returns the driver after both ports are ready.
fn bring_up_with(extra: u64) -> Mp {
    let feats = features::VERSION_1 | F_MULTIPORT | extra;
    let mut m = Mp::new(feats, 6);
    assert_eq!(m.d.features & extra, extra, "{extra:#x} not negotiated");
    assert!(m.d.features & F_MULTIPORT != 0, "MULTIPORT not negotiated");
    assert_eq!(m.d.config(4, 4), 2u32.to_le_bytes(), "max_nr_ports");
    m.post_ctrl_bufs(16);
    m.send_ctrl(&ctrl(u32::MAX, DEVICE_READY, 1));
    let mut added: Vec<u32> = (0..2)
        .map(|_| {
            let (id, ev, val, _) = m.recv_ctrl();
            assert_eq!((ev, val), (DEVICE_ADD, 1));
            id
        })
        .collect();
    added.sort();
    assert_eq!(added, [0, 1]);
    for (p, name, open) in [(0u32, "org.zvisor.log", 1u16), (1, "org.zvisor.agent.0", 0)] {
        m.send_ctrl(&ctrl(p, PORT_READY, 1));
        let (id, ev, val, tail) = m.recv_ctrl();
        assert_eq!((id, ev, val), (p, PORT_NAME, 1));
        assert_eq!(tail, format!("{name}\0").as_bytes());
        let (id, ev, val, _) = m.recv_ctrl();
        assert_eq!((id, ev, val), (p, PORT_OPEN, open), "host end of port {p}");
    }
    m
}

fn bring_up() -> Mp {
    bring_up_with(0)
}

#[test]
fn named_ports_and_host_connection_state() {
    named_ports_and_host_connection_state_with(0);
}

/// The same with `VIRTIO_F_RING_EVENT_IDX`, as Linux negotiates it: every
/// queue kind (port data, control in and out) must re-arm `avail_event`.
#[test]
fn named_ports_and_host_connection_state_with_event_idx() {
    named_ports_and_host_connection_state_with(features::RING_EVENT_IDX);
}

fn named_ports_and_host_connection_state_with(extra: u64) {
    let mut m = bring_up_with(extra);
    // Port 0 (fixed fds): both ways on queues 0 and 1, once a guest program
    // opened it (Linux discards input on a closed port).
    m.send_ctrl(&ctrl(0, PORT_OPEN, 1));
    let rx0 = m.g.alloc(128);
    m.d.submit(0, &[(rx0, 128, true)]);
    m.host_in.write_all(b"to port 0").unwrap();
    let (_, len) = m.d.wait_used(0);
    assert_eq!(m.g.read(rx0, len as usize), b"to port 0");
    let tx0 = m.g.alloc(64);
    m.g.write(tx0, b"from port 0");
    m.d.submit(1, &[(tx0, 11, false)]);
    m.d.wait_used(1);
    let mut b = [0u8; 11];
    m.host_out.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"from port 0");

    // Port 1 (socket): a client connects, the driver hears PORT_OPEN 1.
    let (rxq, txq) = port_queues(1);
    let rx1 = m.g.alloc(128);
    m.d.submit(rxq, &[(rx1, 128, true)]);
    let mut client = UnixStream::connect(&m.sock).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(m.recv_ctrl().head(), (1, PORT_OPEN, 1));
    client.write_all(b"agent request").unwrap();
    // Held back until the guest opens the port, then delivered.
    assert!(m.d.try_wait_used(rxq, Duration::from_millis(200)).is_none());
    m.send_ctrl(&ctrl(1, PORT_OPEN, 1));
    let (_, len) = m.d.wait_used(rxq);
    assert_eq!(m.g.read(rx1, len as usize), b"agent request");
    let tx1 = m.g.alloc(64);
    m.g.write(tx1, b"agent reply");
    m.d.submit(txq, &[(tx1, 11, false)]);
    m.d.wait_used(txq);
    let mut b = [0u8; 11];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"agent reply");
    // Nothing crossed over to port 0.
    assert!(m.d.try_wait_used(0, Duration::from_millis(100)).is_none());

    // The client leaves: PORT_OPEN 0; a new one: PORT_OPEN 1.
    drop(client);
    assert_eq!(m.recv_ctrl().head(), (1, PORT_OPEN, 0));
    let _c2 = UnixStream::connect(&m.sock).unwrap();
    assert_eq!(m.recv_ctrl().head(), (1, PORT_OPEN, 1));
    assert_eq!(m.d.status() & status::NEEDS_RESET, 0);
}

// Tuple slices for compact comparisons of (id, event, value).
trait Head {
    fn head(&self) -> (u32, u16, u16);
}

impl Head for (u32, u16, u16, Vec<u8>) {
    fn head(&self) -> (u32, u16, u16) {
        (self.0, self.1, self.2)
    }
}

/// Hostile control traffic is ignored: unknown ports and events, short
/// messages, a driver that repeats DEVICE_READY without posting buffers.
#[test]
fn hostile_control_messages_are_ignored() {
    let mut m = bring_up();
    m.send_ctrl(&ctrl(7, PORT_READY, 1));
    m.send_ctrl(&ctrl(1, 99, 1));
    m.send_ctrl(&ctrl(0, DEVICE_ADD, 1));
    m.send_ctrl(&[1, 2, 3]);
    m.send_ctrl(&ctrl(1, PORT_OPEN, 1));
    assert!(m.no_ctrl(), "the device answered junk");
    // 2000 DEVICE_READY without buffers: the backlog is capped, no failure.
    for _ in 0..2000 {
        m.send_ctrl(&ctrl(u32::MAX, DEVICE_READY, 1));
    }
    assert_eq!(m.d.status() & status::NEEDS_RESET, 0);
    // The 16 buffers posted at bring-up, minus the 6 bring-up used, got
    // 10 of the repeated DEVICE_ADDs.
    let mut n = 0;
    while m
        .d
        .try_wait_used(CTRL_RX, Duration::from_millis(100))
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, 10);
    // Port traffic still works.
    m.send_ctrl(&ctrl(0, PORT_OPEN, 1));
    let rx0 = m.g.alloc(64);
    m.d.submit(0, &[(rx0, 64, true)]);
    m.host_in.write_all(b"alive").unwrap();
    let (_, len) = m.d.wait_used(0);
    assert_eq!(m.g.read(rx0, len as usize), b"alive");
}

/// A driver that does not negotiate MULTIPORT sets up queues 0 and 1
/// only; the MMIO transport wants every queue the device has at DRIVER_OK,
/// so it ends in NEEDS_RESET (no panic, nothing served). Linux always
/// negotiates MULTIPORT.
#[test]
fn driver_without_multiport_is_refused_cleanly() {
    let dir = TempDir::new("mp-legacy");
    let l = UnixListener::bind(dir.path("s")).unwrap();
    let c = Console::multiport(vec![PortSpec {
        name: "org.zvisor.agent.0".into(),
        host: PortHost::Listen(l),
    }])
    .unwrap();
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(c), 0);
    let dev = d.probe(types::CONSOLE, features::VERSION_1).unwrap();
    assert!(dev & F_MULTIPORT != 0, "MULTIPORT not offered");
    d.setup_queue(&mut g, 0, 0);
    d.setup_queue(&mut g, 1, 0);
    d.driver_ok();
    assert!(d.wait_needs_reset());
}

//! virtio-vsock through virtio-mmio with real Unix sockets on the host side,
//! driven the way Linux's virtio_transport does: RX buffers posted up front,
//! packets on TX, credit advertised in every header.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::{Driver, Guest, TempDir};
use zvisor_vmm::virtio::vsock::packet::{op, Header, HDR_LEN, TYPE_STREAM};
use zvisor_vmm::virtio::vsock::{Vsock, VsockError, MAX_PENDING_CTRL, QUEUE_SIZE};
use zvisor_vmm::virtio::{features, status, types};

const CID: u64 = 3;
const RXDATA: u32 = 4096;

struct G {
    g: Guest,
    d: Driver,
    /// head index -> (hdr buffer, data buffer)
    rx: Vec<(u64, u64)>,
    _dir: TempDir,
    sock: std::path::PathBuf,
}

fn setup() -> G {
    setup_rx(32)
}

/// Linux's setup: EVENT_IDX negotiated (it always is when offered).
fn setup_rx(n: usize) -> G {
    setup_with(features::VERSION_1 | features::RING_EVENT_IDX, n)
}

fn setup_with(feats: u64, n: usize) -> G {
    let dir = TempDir::new("vsock");
    let sock = dir.path("v.sock");
    let mut g = Guest::new();
    let mut d = g.attach(Box::new(Vsock::new(CID, &sock).unwrap()), 0);
    d.init(&mut g, types::VSOCK, feats, 3);
    let cid = u64::from_le_bytes(d.config(0, 8).try_into().unwrap());
    assert_eq!(cid, CID);
    let mut s = G {
        g,
        d,
        rx: Vec::new(),
        _dir: dir,
        sock,
    };
    if n > 0 {
        s.post_rx(n);
    }
    s
}

impl G {
    /// virtio_vsock_rx_fill: header + data buffers.
    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let h = self.g.alloc(HDR_LEN as u64);
            let b = self.g.alloc(u64::from(RXDATA));
            let head = usize::from(
                self.d
                    .add_chain(0, &[(h, HDR_LEN as u32, true), (b, RXDATA, true)]),
            );
            if self.rx.len() <= head {
                self.rx.resize(head + 1, (0, 0));
            }
            self.rx[head] = (h, b);
        }
        self.d.kick(0);
    }

    fn recv(&mut self) -> (Header, Vec<u8>) {
        self.try_recv(Duration::from_secs(5))
            .expect("no packet for the guest")
    }

    fn try_recv(&mut self, t: Duration) -> Option<(Header, Vec<u8>)> {
        let (id, len) = self.d.try_wait_used(0, t)?;
        let (h, b) = self.rx[id as usize];
        let hdr = Header::decode(&self.g.read(h, HDR_LEN).try_into().unwrap());
        assert_eq!(len as usize, HDR_LEN + hdr.len as usize);
        let data = self.g.read(b, hdr.len as usize);
        self.post_rx(1);
        Some((hdr, data))
    }

    fn send(&mut self, hdr: Header, payload: &[u8]) {
        let h = self.g.alloc(HDR_LEN as u64);
        self.g.write(h, &hdr.encode());
        let mut bufs = vec![(h, HDR_LEN as u32, false)];
        if !payload.is_empty() {
            let b = self.g.alloc(payload.len() as u64);
            self.g.write(b, payload);
            bufs.push((b, payload.len() as u32, false));
        }
        self.d.submit(1, &bufs);
        self.d.wait_used(1);
    }
}

fn pkt(src_port: u32, dst_port: u32, op: u16, len: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: 2,
        src_port,
        dst_port,
        len,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc,
        fwd_cnt,
    }
}

#[test]
fn host_initiated_connection_and_data() {
    // Without EVENT_IDX: VRING_USED_F_NO_NOTIFY / NO_INTERRUPT instead.
    let mut s = setup_with(features::VERSION_1, 32);
    let mut host = UnixStream::connect(&s.sock).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    let (req, _) = s.recv();
    assert_eq!(
        (req.op, req.dst_port, req.dst_cid, req.src_cid),
        (op::REQUEST, 1234, CID, 2)
    );
    let hport = req.src_port;
    s.send(pkt(1234, hport, op::RESPONSE, 0, 65536, 0), &[]);
    let mut line = String::new();
    BufReader::new(host.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, format!("OK {hport}\n"));

    host.write_all(b"hello guest").unwrap();
    let (rw, data) = s.recv();
    assert_eq!((rw.op, rw.src_port, rw.dst_port), (op::RW, hport, 1234));
    assert_eq!(data, b"hello guest");

    s.send(pkt(1234, hport, op::RW, 10, 65536, 11), b"hello host");
    let mut b = [0u8; 10];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"hello host");

    // Host closes: the guest is told the host will send no more.
    drop(host);
    let (sd, _) = s.recv();
    assert_eq!(sd.op, op::SHUTDOWN);
    s.send(pkt(1234, hport, op::RST, 0, 0, 0), &[]);
    assert_eq!(s.d.status() & status::NEEDS_RESET, 0);
}

#[test]
fn guest_initiated_connection_to_unix_socket() {
    let mut s = setup();
    let listener = UnixListener::bind(format!("{}_5000", s.sock.display())).unwrap();
    s.send(pkt(40000, 5000, op::REQUEST, 0, 65536, 0), &[]);
    let (resp, _) = s.recv();
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port),
        (op::RESPONSE, 5000, 40000)
    );
    let (mut host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send(pkt(40000, 5000, op::RW, 4, 65536, 0), b"ping");
    let mut b = [0u8; 4];
    host.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    host.write_all(b"pong").unwrap();
    let (rw, data) = s.recv();
    assert_eq!((rw.op, data.as_slice()), (op::RW, &b"pong"[..]));
    // Full shutdown from the guest: the device answers RST and closes.
    let mut sd = pkt(40000, 5000, op::SHUTDOWN, 0, 65536, 4);
    sd.flags = 3;
    s.send(sd, &[]);
    let (rst, _) = s.recv();
    assert_eq!(rst.op, op::RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "host sees EOF");

    // Nobody listening on the port: refused with RST.
    s.send(pkt(40001, 5999, op::REQUEST, 0, 65536, 0), &[]);
    let (rst, _) = s.recv();
    assert_eq!((rst.op, rst.dst_port), (op::RST, 40001));
}

#[test]
fn credit_limits_what_the_guest_receives() {
    let mut s = setup();
    let mut host = UnixStream::connect(&s.sock).unwrap();
    host.write_all(b"CONNECT 7\n").unwrap();
    let (req, _) = s.recv();
    let hport = req.src_port;
    // The guest has a 100-byte buffer.
    s.send(pkt(7, hport, op::RESPONSE, 0, 100, 0), &[]);
    let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    host.write_all(&data).unwrap();
    let mut got = Vec::new();
    while got.len() < 100 {
        let (h, d) = s.recv();
        assert_eq!(h.op, op::RW);
        got.extend(d);
    }
    assert_eq!(got.len(), 100, "never more than the credit");
    assert!(
        s.try_recv(Duration::from_millis(300)).is_none(),
        "sent past the credit"
    );
    // The guest consumed 100 bytes: a credit update releases 100 more.
    s.send(pkt(7, hport, op::CREDIT_UPDATE, 0, 100, 100), &[]);
    while got.len() < 200 {
        got.extend(s.recv().1);
    }
    assert_eq!(got.len(), 200);
    assert!(s.try_recv(Duration::from_millis(300)).is_none());
    s.send(pkt(7, hport, op::CREDIT_UPDATE, 0, 1000, 200), &[]);
    while got.len() < 300 {
        got.extend(s.recv().1);
    }
    assert_eq!(got, data);
    // A credit request is answered with the device's own credit.
    s.send(pkt(7, hport, op::CREDIT_REQUEST, 0, 1000, 300), &[]);
    let (u, _) = s.recv();
    assert_eq!(u.op, op::CREDIT_UPDATE);
    assert_eq!(u.buf_alloc, zvisor_vmm::virtio::vsock::conn::CONN_BUF);
}

#[test]
fn hostile_packets_are_dropped_or_reset() {
    let mut s = setup();
    // Data for a connection that does not exist: RST.
    s.send(pkt(1, 2, op::RW, 3, 100, 0), b"abc");
    let (rst, _) = s.recv();
    assert_eq!((rst.op, rst.dst_port, rst.src_port), (op::RST, 1, 2));
    // Spoofed source CID, wrong destination, lying length, unknown op: dropped.
    let mut h = pkt(1, 2, op::REQUEST, 0, 100, 0);
    h.src_cid = 99;
    s.send(h, &[]);
    let mut h = pkt(1, 2, op::REQUEST, 0, 100, 0);
    h.dst_cid = 7;
    s.send(h, &[]);
    s.send(pkt(1, 2, op::RW, 5000, 100, 0), b"short");
    s.send(pkt(1, 2, 42, 0, 100, 0), &[]);
    assert!(s.try_recv(Duration::from_millis(300)).is_none());
    // A guest that overruns the device's buffer loses the connection.
    let listener = UnixListener::bind(format!("{}_6000", s.sock.display())).unwrap();
    s.send(pkt(50000, 6000, op::REQUEST, 0, 65536, 0), &[]);
    assert_eq!(s.recv().0.op, op::RESPONSE);
    let (_host, _) = listener.accept().unwrap(); // never reads
    let chunk = vec![7u8; 60000];
    let mut reset = false;
    for _ in 0..40 {
        s.send(
            pkt(50000, 6000, op::RW, chunk.len() as u32, 65536, 0),
            &chunk,
        );
        if let Some((h, _)) = s.try_recv(Duration::from_millis(20)) {
            if h.op == op::RST {
                reset = true;
                break;
            }
        }
    }
    assert!(reset, "overrun not reset");
    assert_eq!(s.d.status() & status::NEEDS_RESET, 0);
    // Bad configurations are refused up front.
    assert!(matches!(Vsock::new(2, &s.sock), Err(VsockError::Cid(2))));
    assert!(matches!(
        Vsock::new(4, &s.sock),
        Err(VsockError::Bind { .. })
    ));
}

#[test]
fn control_backlog_is_bounded_without_rx_buffers() {
    // A guest that posts no RX buffers and floods packets that each need a
    // reply: the device stops taking TX once MAX_PENDING_CTRL replies wait.
    let mut s = setup_rx(0);
    let h = s.g.alloc(HDR_LEN as u64);
    s.g.write(h, &pkt(1, 2, op::RW, 0, 100, 0).encode());
    let mut sent: u16 = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0u16, Instant::now());
    loop {
        let used = s.d.used_idx(1);
        if sent.wrapping_sub(used) < QUEUE_SIZE && usize::from(sent) < 4 * MAX_PENDING_CTRL {
            s.d.add_chain(1, &[(h, HDR_LEN as u32, false)]);
            s.d.notify(1);
            sent += 1;
            continue;
        }
        if used != last.0 {
            last = (used, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(300) {
            break;
        }
        assert!(Instant::now() < deadline, "TX never stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(usize::from(s.d.used_idx(1)), MAX_PENDING_CTRL);
    assert_eq!(
        usize::from(sent),
        MAX_PENDING_CTRL + usize::from(QUEUE_SIZE)
    );
    // RX buffers arrive: every packet gets its RST and TX drains fully.
    s.post_rx(64);
    for _ in 0..sent {
        let (rst, _) = s.recv();
        assert_eq!((rst.op, rst.dst_port, rst.src_port), (op::RST, 1, 2));
    }
    assert_eq!(s.d.used_idx(1), sent);
    assert!(s.try_recv(Duration::from_millis(200)).is_none());
    assert_eq!(s.d.status() & status::NEEDS_RESET, 0);
}

/// VIRTIO_F_EVENT_IDX on virtio-vsock: TX completes on its own (packets
/// the device drops); RX re-arms when control replies wait for buffers.
#[test]
fn vsock_event_idx() {
    let mut s = setup_rx(0);
    let h = s.g.alloc(HDR_LEN as u64);
    let mut bad = pkt(1, 2, op::RW, 0, 100, 0);
    bad.src_cid = CID + 1; // dropped without a reply
    s.g.write(h, &bad.encode());
    common::check_event_idx(&mut s.d, &mut s.g, 1, &mut |d, _| {
        d.add_chain(1, &[(h, HDR_LEN as u32, false)])
    });
    // Three packets that need an RST each, no RX buffers yet.
    let h2 = s.g.alloc(HDR_LEN as u64);
    s.g.write(h2, &pkt(1, 2, op::RW, 0, 100, 0).encode());
    for _ in 0..3 {
        s.d.add_chain(1, &[(h2, HDR_LEN as u32, false)]);
    }
    assert!(s.d.kick(1));
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..3 {
        // One buffer at a time: the device is waiting with replies queued,
        // so it must have asked for this kick.
        let hb = s.g.alloc(HDR_LEN as u64);
        let head = usize::from(s.d.add_chain(0, &[(hb, HDR_LEN as u32, true)]));
        if s.rx.len() <= head {
            s.rx.resize(head + 1, (0, 0));
        }
        s.rx[head] = (hb, 0);
        assert!(s.d.kick(0), "reply {i}: device did not re-arm RX");
        let (id, len) = s.d.wait_used(0);
        assert_eq!((id as usize, len as usize), (head, HDR_LEN));
        let rst = Header::decode(&s.g.read(hb, HDR_LEN).try_into().unwrap());
        assert_eq!((rst.op, rst.dst_port), (op::RST, 1));
    }
    assert_eq!(s.d.status() & status::NEEDS_RESET, 0);
}

//! virtio-net through virtio-mmio against a real tap device in a network
//! namespace this test creates; traffic checked both ways through the host's
//! real IP stack. Needs root and /dev/net/tun; skips (with the reason) if not.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{Driver, Guest};
use zvisor_vmm::virtio::net::feature_bits as nf;
use zvisor_vmm::virtio::net::Net;
use zvisor_vmm::virtio::tap::Tap;
use zvisor_vmm::virtio::{features, types};

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const HOST_IP: [u8; 4] = [10, 77, 0, 1];
const GUEST_IP: [u8; 4] = [10, 77, 0, 2];

fn ip(args: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Runs `f` on a thread inside a fresh network namespace with tap `name`
/// configured as the host end; `Err` means "cannot run here".
fn in_netns<F: FnOnce(Tap) + Send + 'static>(name: &'static str, f: F) -> Result<(), String> {
    let h = std::thread::spawn(move || -> Result<(), String> {
        // SAFETY: unshare of the calling thread's network namespace only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let tap = Tap::open(name).map_err(|e| e.to_string())?;
        ip(&format!(
            "link set {name} address 02:00:00:00:00:01 mtu 9000 up"
        ))?;
        ip(&format!("addr add 10.77.0.1/24 dev {name}"))?;
        ip(&format!(
            "neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev {name} nud permanent"
        ))?;
        f(tap);
        Ok(())
    });
    match h.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

fn csum_fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Ethernet + IPv4 + UDP frame guest->host. `partial`: leave the UDP
/// checksum as the pseudo-header sum for the device/host to finish.
fn udp_frame(payload: &[u8], partial: bool) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = Vec::new();
    f.extend(HOST_MAC);
    f.extend(GUEST_MAC);
    f.extend([0x08, 0x00]);
    let mut iph = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    iph.extend(GUEST_IP);
    iph.extend(HOST_IP);
    let c = !csum_fold(sum16(&iph));
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(&iph);
    let mut udp = Vec::new();
    udp.extend(5000u16.to_be_bytes());
    udp.extend(6000u16.to_be_bytes());
    udp.extend((udp_len as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let mut pseudo = Vec::new();
    pseudo.extend(GUEST_IP);
    pseudo.extend(HOST_IP);
    pseudo.extend([0, 17]);
    pseudo.extend((udp_len as u16).to_be_bytes());
    let c = if partial {
        csum_fold(sum16(&pseudo))
    } else {
        !csum_fold(sum16(&pseudo) + sum16(&udp))
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend(udp);
    f
}

fn vnet_hdr(needs_csum: bool, gso_type: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    if needs_csum {
        h[0] = 1;
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        h[8..10].copy_from_slice(&6u16.to_le_bytes());
    }
    h[1] = gso_type;
    if gso_type != 0 {
        h[4..6].copy_from_slice(&1400u16.to_le_bytes());
    }
    h
}

fn send(d: &mut Driver, g: &mut Guest, hdr: &[u8; 12], frame: &[u8]) {
    let h = g.alloc(12);
    let b = g.alloc(frame.len() as u64);
    g.write(h, hdr);
    g.write(b, frame);
    let head = d.submit(1, &[(h, 12, false), (b, frame.len() as u32, false)]);
    assert_eq!(d.wait_used(1).0, u32::from(head));
}

const RXBUF: u32 = 2048;

fn post_rx(d: &mut Driver, g: &mut Guest, bufs: &mut Vec<u64>, n: usize) {
    for _ in 0..n {
        let b = g.alloc(u64::from(RXBUF));
        let head = d.add_chain(0, &[(b, RXBUF, true)]);
        let i = usize::from(head);
        if bufs.len() <= i {
            bufs.resize(i + 1, 0);
        }
        bufs[i] = b;
    }
    d.notify(0);
}

/// Receives frames until a UDP one to the guest shows up; returns (vnet hdr, frame).
fn recv_udp(d: &mut Driver, g: &Guest, bufs: &[u64]) -> (Vec<u8>, Vec<u8>) {
    for _ in 0..32 {
        let (id, len) = d.wait_used(0);
        let data = g.read(bufs[id as usize], len as usize);
        assert!(len >= 12);
        let nbufs = u16::from_le_bytes([data[10], data[11]]);
        assert_eq!(nbufs, 1, "small frames fit one buffer");
        let frame = data[12..].to_vec();
        if frame.len() > 42 && frame[12..14] == [8, 0] && frame[23] == 17 {
            return (data[..12].to_vec(), frame);
        }
    }
    panic!("no UDP frame for the guest");
}

#[test]
fn tap_traffic_both_ways_with_checksum_offload() {
    let r = in_netns("zvtap0", |tap| {
        let host = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(HOST_IP), 6000)).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut g = Guest::new();
        let net = Net::new(tap, Some(GUEST_MAC)).unwrap();
        let mut d = g.attach(Box::new(net), 0);
        let want = features::VERSION_1 | nf::MAC | nf::MRG_RXBUF | nf::CSUM | nf::GUEST_CSUM;
        let offered = d.init(&mut g, types::NET, want, 2);
        assert!(offered & nf::HOST_TSO4 != 0 && offered & nf::GUEST_TSO4 != 0);
        assert_eq!(d.config(0, 6), GUEST_MAC, "mac in config space");
        let mut bufs = Vec::new();
        post_rx(&mut d, &mut g, &mut bufs, 16);

        // Guest -> host, full checksum.
        send(
            &mut d,
            &mut g,
            &vnet_hdr(false, 0),
            &udp_frame(b"ping from guest", false),
        );
        let mut buf = [0u8; 100];
        let (n, from) = host.recv_from(&mut buf).expect("host got nothing");
        assert_eq!(&buf[..n], b"ping from guest");
        assert_eq!(from.to_string(), "10.77.0.2:5000");

        // Guest -> host with checksum offload (VIRTIO_NET_HDR_F_NEEDS_CSUM).
        send(
            &mut d,
            &mut g,
            &vnet_hdr(true, 0),
            &udp_frame(b"offloaded csum", true),
        );
        let (n, _) = host.recv_from(&mut buf).expect("offloaded frame lost");
        assert_eq!(&buf[..n], b"offloaded csum");

        // A wrong full checksum is dropped by the host stack: the device
        // does not paper over it.
        let mut bad = udp_frame(b"bad csum", false);
        bad[40] ^= 0xff;
        send(&mut d, &mut g, &vnet_hdr(false, 0), &bad);
        // A GSO frame the driver did not negotiate never reaches the tap.
        send(
            &mut d,
            &mut g,
            &vnet_hdr(true, 1),
            &udp_frame(b"bad gso", true),
        );
        send(
            &mut d,
            &mut g,
            &vnet_hdr(false, 0),
            &udp_frame(b"after", false),
        );
        let (n, _) = host.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after", "bad frames must not be delivered");

        // Host -> guest through the kernel's stack and the tap.
        host.send_to(b"pong from host", "10.77.0.2:5000").unwrap();
        let (_hdr, frame) = recv_udp(&mut d, &g, &bufs);
        assert_eq!(&frame[0..6], &GUEST_MAC);
        assert_eq!(&frame[26..30], &HOST_IP);
        assert_eq!(&frame[30..34], &GUEST_IP);
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), 5000);
        assert_eq!(&frame[42..], b"pong from host");

        // A datagram bigger than one receive buffer spans several (mergeable).
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        host.send_to(&big, "10.77.0.2:5000").unwrap();
        // MTU 9000: one frame over three buffers. Fragments are handled too.
        let mut got = Vec::new();
        let mut max_nb = 0;
        while got.len() < big.len() {
            let (id, len) = d.wait_used(0);
            let data = g.read(bufs[id as usize], len as usize);
            let nb = u16::from_le_bytes([data[10], data[11]]);
            max_nb = max_nb.max(nb);
            let mut frame = data[12..].to_vec();
            for _ in 1..nb {
                let (id, len) = d.wait_used(0);
                frame.extend(g.read(bufs[id as usize], len as usize));
            }
            if frame.len() < 34 || frame[12..14] != [8, 0] || frame[23] != 17 {
                continue;
            }
            let frag_off = (u16::from_be_bytes([frame[20], frame[21]]) & 0x1fff) as usize * 8;
            let ip_end = 14 + u16::from_be_bytes([frame[16], frame[17]]) as usize;
            let payload = &frame[34..ip_end];
            let (start, bytes) = if frag_off == 0 {
                (0, &payload[8..])
            } else {
                (frag_off - 8, payload)
            };
            if got.len() < start + bytes.len() {
                got.resize(start + bytes.len(), 0);
            }
            got[start..start + bytes.len()].copy_from_slice(bytes);
            post_rx(&mut d, &mut g, &mut bufs, 2);
        }
        assert_eq!(got, big);
        assert!(max_nb >= 3, "a 5000-byte frame must span 2 KiB buffers");
    });
    if let Err(why) = r {
        eprintln!("SKIP tap_traffic_both_ways_with_checksum_offload: {why}");
    }
}

#[test]
fn several_nics_and_random_mac() {
    let r = in_netns("zvtap1", |tap| {
        let tap2 = Tap::open("zvtap2").unwrap();
        assert_eq!(tap2.name(), "zvtap2");
        // Taking an already open tap fd (as a management stack would pass it).
        let dup = tap2.try_clone().unwrap();
        let tap2 =
            Tap::from_fd(std::os::fd::OwnedFd::from(dup.file().try_clone().unwrap())).unwrap();
        assert_eq!(tap2.name(), "zvtap2");
        drop(dup);
        // Anything else is refused with a clear error.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = Tap::from_fd(std::os::fd::OwnedFd::from(a)).unwrap_err();
        assert!(e.to_string().contains("is not a tap"), "{e}");
        let mut g = Guest::new();
        let n1 = Net::new(tap, None).unwrap();
        let mac = n1.mac();
        assert_eq!(mac[0] & 3, 2, "locally administered unicast");
        let mut d1 = g.attach(Box::new(n1), 0);
        let mut d2 = g.attach(Box::new(Net::new(tap2, Some(GUEST_MAC)).unwrap()), 1);
        d1.init(&mut g, types::NET, features::VERSION_1 | nf::MAC, 2);
        d2.init(&mut g, types::NET, features::VERSION_1 | nf::MAC, 2);
        assert_eq!(d1.config(0, 6), mac);
        assert_eq!(d2.config(0, 6), GUEST_MAC);
    });
    if let Err(why) = r {
        eprintln!("SKIP several_nics_and_random_mac: {why}");
    }
}

/// VIRTIO_F_EVENT_IDX on virtio-net, as Linux negotiates it: TX completes
/// on its own; RX, out of buffers with frames waiting on the tap, re-arms
/// avail_event so a refill kicks it, also in the middle of a mergeable
/// frame that needs several buffers.
#[test]
fn event_idx_rx_rearms_and_tx_suppresses() {
    let r = in_netns("zvtap3", |tap| {
        let host = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::from(HOST_IP), 6000)).unwrap();
        let mut g = Guest::new();
        let mut d = g.attach(Box::new(Net::new(tap, Some(GUEST_MAC)).unwrap()), 0);
        let want = features::VERSION_1 | features::RING_EVENT_IDX | nf::MAC | nf::MRG_RXBUF;
        d.init(&mut g, types::NET, want, 2);
        // TX: frames for the host's socket.
        let frame = udp_frame(b"event idx tx", false);
        let (h, b) = (g.alloc(12), g.alloc(frame.len() as u64));
        g.write(h, &vnet_hdr(false, 0));
        g.write(b, &frame);
        common::check_event_idx(&mut d, &mut g, 1, &mut |d, _| {
            d.add_chain(1, &[(h, 12, false), (b, frame.len() as u32, false)])
        });
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..13 {
            let (n, _) = host.recv_from(&mut buf).expect("TX frame lost");
            assert_eq!(&buf[..n], b"event idx tx");
        }
        // RX: no buffers posted; three datagrams and one of 5000 bytes
        // (one 5054-byte frame at MTU 9000: three 2 KiB buffers) wait.
        for i in 0..3u8 {
            host.send_to(&[i; 10], "10.77.0.2:5000").unwrap();
        }
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        host.send_to(&big, "10.77.0.2:5000").unwrap();
        let mut bufs: Vec<u64> = Vec::new();
        let mut small = Vec::new();
        let mut got_big = false;
        while !got_big {
            // One buffer at a time, only once the device asked for it
            // (also in the middle of the big frame, with buffers popped).
            assert!(common::wait_rearmed(&d, 0), "RX never re-armed");
            let rb = g.alloc(u64::from(RXBUF));
            let head = usize::from(d.add_chain(0, &[(rb, RXBUF, true)]));
            if bufs.len() <= head {
                bufs.resize(head + 1, 0);
            }
            bufs[head] = rb;
            assert!(d.kick(0), "device did not ask for the refill");
            // The device either fills buffers or asks for more.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                assert!(std::time::Instant::now() < deadline, "RX stalled");
                if d.used_idx(0) != d.queues[0].last_used {
                    break;
                }
                let dq = &d.queues[0];
                if d.read16(dq.avail_event_addr()) == dq.avail_idx {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let Some((id, len)) = d.poll_used(0) else {
                continue; // mid-frame: one more buffer wanted
            };
            let data = g.read(bufs[id as usize], len as usize);
            let nb = u16::from_le_bytes([data[10], data[11]]);
            let mut frame = data[12..].to_vec();
            for _ in 1..nb {
                let (id, len) = d.wait_used(0);
                frame.extend(g.read(bufs[id as usize], len as usize));
            }
            if frame.len() < 42 || frame[12..14] != [8, 0] || frame[23] != 17 {
                continue; // not IPv4/UDP (IPv6 chatter on the link)
            }
            if frame.len() == 42 + 10 {
                small.push(frame[42]);
            } else {
                assert_eq!(&frame[42..], &big[..], "big datagram intact");
                assert_eq!(nb, 3, "5054 bytes span three 2 KiB buffers");
                got_big = true;
            }
        }
        assert_eq!(small, [0, 1, 2]);
        assert_eq!(d.status() & zvisor_vmm::virtio::status::NEEDS_RESET, 0);
    });
    if let Err(why) = r {
        eprintln!("SKIP event_idx_rx_rearms_and_tx_suppresses: {why}");
    }
}

/// A tap that goes away under the device (deleted by the host admin) makes
/// every read fail while the fd stays readable: the device must go to
/// NEEDS_RESET instead of retrying in a loop.
#[test]
fn deleted_tap_needs_reset() {
    let r = in_netns("zvtap4", |tap| {
        let mut g = Guest::new();
        let mut d = g.attach(Box::new(Net::new(tap, Some(GUEST_MAC)).unwrap()), 0);
        d.init(&mut g, types::NET, features::VERSION_1 | nf::MAC, 2);
        let mut bufs = Vec::new();
        post_rx(&mut d, &mut g, &mut bufs, 4);
        assert_eq!(d.status() & zvisor_vmm::virtio::status::NEEDS_RESET, 0);
        ip("link del zvtap4").unwrap();
        assert!(d.wait_needs_reset(), "device kept going on a dead tap");
        // NEEDS_RESET comes from the worker's event loop having ended (it
        // then only waits to be stopped); a reset gives the tap back.
        d.writel(zvisor_vmm::virtio::mmio::regs::STATUS, 0);
        assert_eq!(d.status(), 0);
    });
    if let Err(why) = r {
        eprintln!("SKIP deleted_tap_needs_reset: {why}");
    }
}

//! The virtio-net TX header check, under arbitrary negotiated features.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zvisor_vmm::virtio::net::header::parse_tx;
use zvisor_vmm::virtio::net::tap_offloads;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let acked = u64::from_le_bytes(data[..8].try_into().unwrap());
    let frame_len = usize::from(u16::from_le_bytes([data[8], data[9]]));
    let _ = tap_offloads(acked);
    if let Ok(h) = parse_tx(&data[10..], frame_len, acked) {
        // Whatever is accepted keeps its checksum inside the frame.
        if h.flags & 1 != 0 {
            assert!(usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 <= frame_len);
        }
    }
});

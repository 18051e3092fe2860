//! vsock packet headers from the guest and CONNECT lines from the host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zvisor_vmm::virtio::vsock::packet::{check_tx, Header, HDR_LEN};
use zvisor_vmm::virtio::vsock::parse_connect;

fuzz_target!(|data: &[u8]| {
    let _ = parse_connect(data);
    if data.len() < HDR_LEN + 8 {
        return;
    }
    let hb: [u8; HDR_LEN] = data[..HDR_LEN].try_into().unwrap();
    let h = Header::decode(&hb);
    assert_eq!(h.encode(), hb, "decode/encode must round-trip");
    let total = u64::from_le_bytes(data[HDR_LEN..HDR_LEN + 8].try_into().unwrap());
    if check_tx(&h, total, 3).is_ok() {
        assert!(u64::from(h.len) + HDR_LEN as u64 <= total);
        assert_eq!(h.src_cid, 3);
    }
});

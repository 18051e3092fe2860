//! virtio-vsock packet headers (virtio 1.2, 5.10.6), little-endian.

use crate::endian::{le_u16, le_u32, le_u64, put_le_u16, put_le_u32, put_le_u64};

/// Header size on the wire.
pub const HDR_LEN: usize = 44;
/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Largest payload zvisor accepts or sends in one packet.
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// Stream sockets; the only type supported.
pub const TYPE_STREAM: u16 = 1;

/// Operations.
pub mod op {
    /// Connect request.
    pub const REQUEST: u16 = 1;
    /// Connect accepted.
    pub const RESPONSE: u16 = 2;
    /// Reset / refuse.
    pub const RST: u16 = 3;
    /// Half or full shutdown (flags).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Here is my credit.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Tell me your credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// A packet header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed so far.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes a header.
    pub fn decode(b: &[u8; HDR_LEN]) -> Self {
        // In bounds by the array's type; 0 can never be produced.
        let u64_at = |o| le_u64(b, o).unwrap_or(0);
        let u32_at = |o| le_u32(b, o).unwrap_or(0);
        let u16_at = |o| le_u16(b, o).unwrap_or(0);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes a header.
    pub fn encode(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        put_le_u64(&mut b, 0, self.src_cid);
        put_le_u64(&mut b, 8, self.dst_cid);
        put_le_u32(&mut b, 16, self.src_port);
        put_le_u32(&mut b, 20, self.dst_port);
        put_le_u32(&mut b, 24, self.len);
        put_le_u16(&mut b, 28, self.type_);
        put_le_u16(&mut b, 30, self.op);
        put_le_u32(&mut b, 32, self.flags);
        put_le_u32(&mut b, 36, self.buf_alloc);
        put_le_u32(&mut b, 40, self.fwd_cnt);
        b
    }
}

/// Why a guest packet is dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer bytes than a header.
    #[error("short vsock packet ({0} bytes)")]
    Short(u64),
    /// Source CID is not the guest's.
    #[error("spoofed source cid {0}")]
    SrcCid(u64),
    /// Destination is not the host.
    #[error("destination cid {0} is not the host")]
    DstCid(u64),
    /// Payload length does not match the buffers, or is too big.
    #[error("payload length {len} does not fit the {avail} bytes given")]
    Len {
        /// Header's length.
        len: u32,
        /// Bytes actually present.
        avail: u64,
    },
    /// Unknown operation.
    #[error("unknown vsock op {0}")]
    Op(u16),
}

/// Validates a guest TX packet of `total` readable bytes (header included)
/// whose header is `h`, for a guest with `guest_cid`.
pub fn check_tx(h: &Header, total: u64, guest_cid: u64) -> Result<(), PacketError> {
    if total < HDR_LEN as u64 {
        return Err(PacketError::Short(total));
    }
    if h.src_cid != guest_cid {
        return Err(PacketError::SrcCid(h.src_cid));
    }
    if h.dst_cid != HOST_CID {
        return Err(PacketError::DstCid(h.dst_cid));
    }
    let avail = total - HDR_LEN as u64;
    if h.len > MAX_PAYLOAD || u64::from(h.len) > avail || (h.op != op::RW && h.len != 0) {
        return Err(PacketError::Len { len: h.len, avail });
    }
    if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&h.op) {
        return Err(PacketError::Op(h.op));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_layout() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1122_3344,
            dst_port: 5,
            len: 7,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0,
            buf_alloc: 0x10000,
            fwd_cnt: 9,
        };
        let b = h.encode();
        assert_eq!(b[0], 3);
        assert_eq!(&b[16..20], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(b[30], 5);
        assert_eq!(Header::decode(&b), h);
        assert_eq!(check_tx(&h, 44 + 7, 3), Ok(()));
        assert_eq!(
            check_tx(&h, 44 + 6, 3),
            Err(PacketError::Len { len: 7, avail: 6 })
        );
        assert_eq!(check_tx(&h, 51, 4), Err(PacketError::SrcCid(3)));
        assert_eq!(check_tx(&h, 20, 3), Err(PacketError::Short(20)));
        let bad = Header { op: 9, len: 0, ..h };
        assert_eq!(check_tx(&bad, 44, 3), Err(PacketError::Op(9)));
        let req = Header {
            op: op::REQUEST,
            len: 4,
            ..h
        };
        assert!(check_tx(&req, 48, 3).is_err());
    }
}

//! The virtio-net header (virtio 1.2, 5.1.6), as a guest sends it on TX.
//! Checked against the negotiated offloads before the tap (and the host
//! kernel) sees it.

use super::feature_bits as f;
use crate::endian::le_u16;

/// `flags`: checksum needed from `csum_start` / `csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: checksum already validated (RX only).
pub const F_DATA_VALID: u8 = 2;
/// `gso_type` values.
pub mod gso {
    /// Not a GSO frame.
    pub const NONE: u8 = 0;
    /// TCPv4.
    pub const TCPV4: u8 = 1;
    /// UDP (UFO).
    pub const UDP: u8 = 3;
    /// TCPv6.
    pub const TCPV6: u8 = 4;
    /// ECN flag bit.
    pub const ECN: u8 = 0x80;
}

/// Parsed TX header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetHeader {
    /// Flags.
    pub flags: u8,
    /// GSO type.
    pub gso_type: u8,
    /// Header length hint.
    pub hdr_len: u16,
    /// Segment size.
    pub gso_size: u16,
    /// Checksum start.
    pub csum_start: u16,
    /// Checksum offset from `csum_start`.
    pub csum_offset: u16,
}

/// Why a TX header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("short virtio-net header")]
    Short,
    /// Unknown flag bits.
    #[error("unknown virtio-net header flags {0:#x}")]
    Flags(u8),
    /// Checksum offload used without VIRTIO_NET_F_CSUM.
    #[error("checksum offload not negotiated")]
    Csum,
    /// Checksum position outside the frame.
    #[error("checksum position outside the frame")]
    CsumRange,
    /// GSO type not negotiated or unknown.
    #[error("gso type {0:#x} not negotiated")]
    Gso(u8),
    /// GSO frame with a zero segment size.
    #[error("gso frame with zero segment size")]
    GsoSize,
}

/// Parses and validates a TX header for a frame of `frame_len` bytes under
/// the `acked` features.
pub fn parse_tx(buf: &[u8], frame_len: usize, acked: u64) -> Result<NetHeader, HeaderError> {
    if buf.len() < super::super::tap::VNET_HDR_LEN {
        return Err(HeaderError::Short);
    }
    // In bounds: the length was checked above.
    let u16_at = |o| le_u16(buf, o).unwrap_or(0);
    let h = NetHeader {
        flags: buf[0],
        gso_type: buf[1],
        hdr_len: u16_at(2),
        gso_size: u16_at(4),
        csum_start: u16_at(6),
        csum_offset: u16_at(8),
    };
    if h.flags & !(F_NEEDS_CSUM | F_DATA_VALID) != 0 {
        return Err(HeaderError::Flags(h.flags));
    }
    if h.flags & F_NEEDS_CSUM != 0 {
        if acked & f::CSUM == 0 {
            return Err(HeaderError::Csum);
        }
        let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
        if end > frame_len {
            return Err(HeaderError::CsumRange);
        }
    }
    let base = h.gso_type & !gso::ECN;
    let need = match base {
        gso::NONE if h.gso_type == gso::NONE => return Ok(h),
        gso::TCPV4 => f::HOST_TSO4,
        gso::TCPV6 => f::HOST_TSO6,
        gso::UDP => f::HOST_UFO,
        _ => return Err(HeaderError::Gso(h.gso_type)),
    };
    if acked & need == 0 || (h.gso_type & gso::ECN != 0 && acked & f::HOST_ECN == 0) {
        return Err(HeaderError::Gso(h.gso_type));
    }
    if h.gso_size == 0 {
        return Err(HeaderError::GsoSize);
    }
    if h.flags & F_NEEDS_CSUM == 0 {
        // GSO needs the partial checksum to be set up.
        return Err(HeaderError::Csum);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(flags: u8, gso: u8, gso_size: u16, start: u16, off: u16) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = flags;
        b[1] = gso;
        b[4..6].copy_from_slice(&gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&start.to_le_bytes());
        b[8..10].copy_from_slice(&off.to_le_bytes());
        b
    }

    #[test]
    fn plain_and_offloaded_headers() {
        assert!(parse_tx(&hdr(0, 0, 0, 0, 0), 60, 0).is_ok());
        assert_eq!(parse_tx(&[0; 4], 60, 0), Err(HeaderError::Short));
        assert_eq!(
            parse_tx(&hdr(1, 0, 0, 34, 6), 60, 0),
            Err(HeaderError::Csum)
        );
        assert!(parse_tx(&hdr(1, 0, 0, 34, 6), 60, f::CSUM).is_ok());
        assert_eq!(
            parse_tx(&hdr(1, 0, 0, 60, 6), 60, f::CSUM),
            Err(HeaderError::CsumRange)
        );
        assert_eq!(
            parse_tx(&hdr(0x10, 0, 0, 0, 0), 60, 0),
            Err(HeaderError::Flags(0x10))
        );
        let tso = f::CSUM | f::HOST_TSO4;
        assert!(parse_tx(&hdr(1, gso::TCPV4, 1448, 34, 16), 9000, tso).is_ok());
        assert_eq!(
            parse_tx(&hdr(1, gso::TCPV6, 1448, 54, 16), 9000, tso),
            Err(HeaderError::Gso(gso::TCPV6))
        );
        assert_eq!(
            parse_tx(&hdr(1, gso::TCPV4, 0, 34, 16), 9000, tso),
            Err(HeaderError::GsoSize)
        );
        assert_eq!(
            parse_tx(&hdr(1, gso::TCPV4 | gso::ECN, 1448, 34, 16), 9000, tso),
            Err(HeaderError::Gso(0x81))
        );
        assert_eq!(
            parse_tx(&hdr(1, 7, 1448, 34, 16), 9000, u64::MAX),
            Err(HeaderError::Gso(7))
        );
    }
}

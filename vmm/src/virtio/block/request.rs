//! virtio-blk request parsing (virtio 1.2, 5.2.6), separate from I/O so it
//! can be fuzzed on its own.

use vm_memory::GuestAddress;

use crate::endian::{le_u32, le_u64};
use crate::virtio::queue::{read_segments, Chain, GuestRam, Segment};

/// Request types.
pub mod types {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Device id string.
    pub const GET_ID: u32 = 8;
    /// Discard ranges.
    pub const DISCARD: u32 = 11;
    /// Zero ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error (also: out of range, read-only, malformed).
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Bytes in a request header (type, reserved, sector).
pub const HEADER_LEN: u64 = 16;
/// Bytes in a discard/write-zeroes range descriptor.
pub const RANGE_LEN: u64 = 16;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;

/// What the request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read into `data` from `sector`.
    In,
    /// Write `data` at `sector`.
    Out,
    /// fdatasync.
    Flush,
    /// Serial into `data`.
    GetId,
    /// Discard the ranges in `data`.
    Discard,
    /// Zero the ranges in `data`.
    WriteZeroes,
}

/// A parsed request; `Err` status when it is malformed but answerable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Address of the status byte (the last writable byte).
    pub status: GuestAddress,
    /// The request, or the status to answer with right away.
    pub op: Result<Op, u8>,
}

/// A well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// What to do.
    pub kind: Kind,
    /// Starting sector (512 bytes).
    pub sector: u64,
    /// Data length: the writable buffers minus the status byte for In/GetId,
    /// the readable buffers after the header for Out/Discard/WriteZeroes.
    pub len: u64,
}

impl Op {
    /// The chain's buffers holding the data and the data's offset in them.
    pub fn data<'a>(&self, chain: &'a Chain) -> (&'a [Segment], u64) {
        match self.kind {
            Kind::In | Kind::GetId | Kind::Flush => (&chain.writable, 0),
            Kind::Out | Kind::Discard | Kind::WriteZeroes => (&chain.readable, HEADER_LEN),
        }
    }
}

/// Parses `chain`; `None` when it has no writable byte to put a status in
/// (the request cannot be answered).
pub fn parse<R: GuestRam + ?Sized>(mem: &R, chain: &Chain) -> Option<Request> {
    let wlen = chain.writable_len();
    let last = chain.writable.iter().rev().find(|s| s.len > 0)?;
    // pop_chain checked the buffer lies in RAM, so this cannot overflow.
    let status = GuestAddress(last.addr.0 + u64::from(last.len) - 1);
    let op = parse_op(mem, chain, wlen - 1);
    Some(Request { status, op })
}

fn parse_op<R: GuestRam + ?Sized>(mem: &R, chain: &Chain, wdata_len: u64) -> Result<Op, u8> {
    let rlen = chain.readable_len();
    if rlen < HEADER_LEN {
        return Err(status::IOERR);
    }
    let mut hdr = [0u8; HEADER_LEN as usize];
    if read_segments(mem, &chain.readable, 0, &mut hdr) != hdr.len() {
        return Err(status::IOERR);
    }
    // In bounds by the array's size.
    let ty = le_u32(&hdr, 0).unwrap_or(u32::MAX);
    let sector = le_u64(&hdr, 8).unwrap_or(u64::MAX);
    let rdata_len = rlen - HEADER_LEN;
    let kind = match ty {
        types::IN => Kind::In,
        types::OUT => Kind::Out,
        types::FLUSH => Kind::Flush,
        types::GET_ID => Kind::GetId,
        types::DISCARD => Kind::Discard,
        types::WRITE_ZEROES => Kind::WriteZeroes,
        _ => return Err(status::UNSUPP),
    };
    // Direction checks: the device reads only the header (and the data of
    // writes and range lists) and writes only read data, the id and status.
    let len = match kind {
        Kind::In | Kind::GetId => {
            if rdata_len != 0 {
                return Err(status::IOERR);
            }
            wdata_len
        }
        Kind::Flush => {
            if rdata_len != 0 || wdata_len != 0 {
                return Err(status::IOERR);
            }
            0
        }
        Kind::Out | Kind::Discard | Kind::WriteZeroes => {
            if wdata_len != 0 {
                return Err(status::IOERR);
            }
            rdata_len
        }
    };
    match kind {
        Kind::In | Kind::Out if len % 512 != 0 => return Err(status::IOERR),
        Kind::Discard | Kind::WriteZeroes if len == 0 || len % RANGE_LEN != 0 => {
            return Err(status::IOERR)
        }
        _ => {}
    }
    Ok(Op { kind, sector, len })
}

/// One discard/write-zeroes range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub num_sectors: u32,
    /// Flags (bit 0: unmap, for write-zeroes only).
    pub flags: u32,
}

/// Reads the ranges of a discard/write-zeroes request (at most `max`).
pub fn ranges<R: GuestRam + ?Sized>(
    mem: &R,
    chain: &Chain,
    op: &Op,
    max: usize,
) -> Option<Vec<Range>> {
    let (segs, base) = op.data(chain);
    let n = usize::try_from(op.len / RANGE_LEN).ok()?;
    if n > max {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = [0u8; RANGE_LEN as usize];
        if read_segments(mem, segs, base + i as u64 * RANGE_LEN, &mut b) != b.len() {
            return None;
        }
        out.push(Range {
            sector: le_u64(&b, 0)?,
            num_sectors: le_u32(&b, 8)?,
            flags: le_u32(&b, 12)?,
        });
    }
    Some(out)
}

/// Byte range `[off, off+len)` of `sectors` sectors at `sector`, if it lies
/// within a disk of `size` bytes.
pub fn byte_range(sector: u64, len: u64, size: u64) -> Option<(u64, u64)> {
    let off = sector.checked_mul(512)?;
    let end = off.checked_add(len)?;
    (end <= size).then_some((off, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_against_the_image() {
        assert_eq!(byte_range(0, 512, 1024), Some((0, 512)));
        assert_eq!(byte_range(1, 512, 1024), Some((512, 512)));
        assert_eq!(byte_range(2, 512, 1024), None);
        assert_eq!(byte_range(1, 1024, 1024), None);
        assert_eq!(byte_range(u64::MAX / 256, 512, u64::MAX), None);
        assert_eq!(byte_range(u64::MAX / 512, u64::MAX, u64::MAX), None);
    }
}

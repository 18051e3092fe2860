//! Explicit byte-order helpers for guest-visible structures.
//!
//! Guest structures have a fixed byte order that is independent of the host:
//! virtio 1.x rings and x86/arm boot structures are little-endian, s390x
//! channel-subsystem and SCLP blocks are big-endian. Code that builds or parses
//! them must never use native-endian transmutes; it goes through these
//! helpers, which are tested on both a little-endian (x86_64) and a
//! big-endian (s390x under qemu-user) host.

/// Reads a little-endian u16 at `off`, or `None` if out of bounds.
pub fn le_u16(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}
/// Reads a little-endian u32 at `off`, or `None` if out of bounds.
pub fn le_u32(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}
/// Reads a little-endian u64 at `off`, or `None` if out of bounds.
pub fn le_u64(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}
/// Reads a big-endian u16 at `off`, or `None` if out of bounds.
pub fn be_u16(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}
/// Reads a big-endian u32 at `off`, or `None` if out of bounds.
pub fn be_u32(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}
/// Reads a big-endian u64 at `off`, or `None` if out of bounds.
pub fn be_u64(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// Writes `v` little-endian at `off`; returns `false` if out of bounds.
pub fn put_le_u16(buf: &mut [u8], off: usize, v: u16) -> bool {
    put(buf, off, &v.to_le_bytes())
}
/// Writes `v` little-endian at `off`; returns `false` if out of bounds.
pub fn put_le_u32(buf: &mut [u8], off: usize, v: u32) -> bool {
    put(buf, off, &v.to_le_bytes())
}
/// Writes `v` little-endian at `off`; returns `false` if out of bounds.
pub fn put_le_u64(buf: &mut [u8], off: usize, v: u64) -> bool {
    put(buf, off, &v.to_le_bytes())
}
/// Writes `v` big-endian at `off`; returns `false` if out of bounds.
pub fn put_be_u16(buf: &mut [u8], off: usize, v: u16) -> bool {
    put(buf, off, &v.to_be_bytes())
}
/// Writes `v` big-endian at `off`; returns `false` if out of bounds.
pub fn put_be_u32(buf: &mut [u8], off: usize, v: u32) -> bool {
    put(buf, off, &v.to_be_bytes())
}
/// Writes `v` big-endian at `off`; returns `false` if out of bounds.
pub fn put_be_u64(buf: &mut [u8], off: usize, v: u64) -> bool {
    put(buf, off, &v.to_be_bytes())
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) -> bool {
    match off
        .checked_add(bytes.len())
        .and_then(|end| buf.get_mut(off..end))
    {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_layout_is_host_independent() {
        let mut b = [0u8; 16];
        assert!(put_le_u32(&mut b, 0, 0x1122_3344));
        assert_eq!(&b[..4], &[0x44, 0x33, 0x22, 0x11]);
        assert!(put_be_u32(&mut b, 4, 0x1122_3344));
        assert_eq!(&b[4..8], &[0x11, 0x22, 0x33, 0x44]);
        assert!(put_be_u64(&mut b, 8, 0x0102_0304_0506_0708));
        assert_eq!(&b[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(le_u32(&b, 0), Some(0x1122_3344));
        assert_eq!(be_u32(&b, 4), Some(0x1122_3344));
        assert_eq!(be_u64(&b, 8), Some(0x0102_0304_0506_0708));
        assert_eq!(le_u64(&b, 8), Some(0x0807_0605_0403_0201));
        assert_eq!(be_u16(&b, 4), Some(0x1122));
        assert_eq!(le_u16(&b, 4), Some(0x2211));
    }

    #[test]
    fn native_order_differs_from_one_of_them() {
        // On every host exactly one of le/be equals native order; this is the
        // test that catches a native-endian shortcut on s390x.
        let v = 0xdead_beef_u32;
        let native = v.to_ne_bytes();
        let is_le = native == v.to_le_bytes();
        let is_be = native == v.to_be_bytes();
        assert!(is_le ^ is_be);
        assert_eq!(is_be, cfg!(target_endian = "big"));
    }

    #[test]
    fn out_of_bounds_is_refused() {
        let mut b = [0u8; 3];
        assert!(!put_le_u32(&mut b, 0, 1));
        assert!(!put_be_u16(&mut b, 2, 1));
        assert!(!put_be_u64(&mut b, usize::MAX, 1));
        assert_eq!(le_u32(&b, 0), None);
        assert_eq!(be_u16(&b, 2), None);
    }
}

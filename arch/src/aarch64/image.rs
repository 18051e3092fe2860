//! The arm64 kernel Image header (Documentation/arch/arm64/booting.rst):
//! 64 bytes at the start of the Image, little-endian fields.

/// `ARM\x64` at offset 56.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Header size.
pub const HEADER_SIZE: usize = 64;

/// Why a file is not a usable arm64 Image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Shorter than the header.
    #[error("kernel image is {0} bytes, shorter than the 64-byte arm64 header")]
    TooShort(usize),
    /// No `ARM\x64` magic (a compressed vmlinuz, or not arm64).
    #[error("not an arm64 Image (no ARM\\x64 magic at offset 56; decompress vmlinuz first)")]
    BadMagic,
    /// A big-endian kernel: zvisor boots little-endian guests.
    #[error("big-endian arm64 kernels are not supported")]
    BigEndian,
}

/// The fields a loader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset from a 2 MiB aligned base where the Image must be loaded.
    pub text_offset: u64,
    /// Effective image size (BSS included); 0 in pre-3.17 kernels, where
    /// the caller must assume something large.
    pub image_size: u64,
    /// Header flags: bit 0 big-endian, bits 1-2 page size, bit 3 placement.
    pub flags: u64,
}

impl ImageHeader {
    /// Parses the first bytes of an Image.
    pub fn parse(b: &[u8]) -> Result<Self, ImageError> {
        let h = b.get(..HEADER_SIZE).ok_or(ImageError::TooShort(b.len()))?;
        let le64 = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&h[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let magic = u32::from_le_bytes([h[56], h[57], h[58], h[59]]);
        if magic != IMAGE_MAGIC {
            return Err(ImageError::BadMagic);
        }
        let flags = le64(24);
        if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        Ok(Self {
            text_offset: le64(8),
            image_size: le64(16),
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 128];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn parses_a_modern_header() {
        let h = ImageHeader::parse(&header(0, 0x2a3_0000, 0xa)).unwrap();
        assert_eq!(h.text_offset, 0);
        assert_eq!(h.image_size, 0x2a3_0000);
        assert_eq!(h.flags, 0xa);
        let old = ImageHeader::parse(&header(0x8_0000, 0, 0)).unwrap();
        assert_eq!(old.text_offset, 0x8_0000);
    }

    #[test]
    fn rejects_bad_images() {
        assert_eq!(ImageHeader::parse(&[0; 10]), Err(ImageError::TooShort(10)));
        let mut h = header(0, 1, 2);
        h[56] = b'X';
        assert_eq!(ImageHeader::parse(&h), Err(ImageError::BadMagic));
        assert_eq!(
            ImageHeader::parse(&header(0, 1, 3)),
            Err(ImageError::BigEndian)
        );
        // Page size "unspecified" with the placement bit is still fine.
        assert_eq!(ImageHeader::parse(&header(0, 1, 8)).unwrap().flags, 8);
        // gzip magic, as in a compressed vmlinuz.
        let mut gz = vec![0u8; 64];
        gz[..2].copy_from_slice(&[0x1f, 0x8b]);
        assert_eq!(ImageHeader::parse(&gz), Err(ImageError::BadMagic));
    }
}

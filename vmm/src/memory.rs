//! Guest RAM, backed by anonymous host mappings (vm-memory).

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// zvisor's guest memory type.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Errors building guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// No regions were asked for.
    #[error("guest memory layout has no regions")]
    NoRegions,
    /// vm-memory refused the layout or the host refused the mapping.
    #[error("cannot map guest memory: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
}

/// Maps anonymous guest RAM for the given `(guest address, size)` regions.
pub fn create(regions: &[(GuestAddress, usize)]) -> Result<GuestMemory, MemoryError> {
    if regions.is_empty() {
        return Err(MemoryError::NoRegions);
    }
    Ok(GuestMemoryMmap::from_ranges(regions)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn maps_and_bounds_checks() {
        let m = create(&[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 30), 1 << 20)]).unwrap();
        assert_eq!(m.iter().count(), 2);
        m.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        // The hole between the regions is not memory.
        assert!(m.write_obj(1u8, GuestAddress(2 << 20)).is_err());
        assert!(matches!(create(&[]), Err(MemoryError::NoRegions)));
    }
}

//! An address-range bus: MMIO on every arch, and port I/O on x86_64.
//!
//! Devices are registered on non-overlapping ranges. An access is routed to
//! the device owning its first byte, with the offset relative to the range's
//! base. Accesses that straddle a range end or hit nothing are reported to the
//! caller, which decides what the guest sees (usually all-ones on read and
//! nothing on write, as real hardware does).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers reads and writes on a bus.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` within the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` within the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared, lockable bus device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors registering devices.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Zero-length range.
    #[error("bus range at {0:#x} has zero length")]
    Empty(u64),
    /// Range wraps past the end of the address space.
    #[error("bus range {0:#x}+{1:#x} overflows the address space")]
    Overflow(u64, u64),
    /// Range overlaps an existing device.
    #[error("bus range {0:#x}+{1:#x} overlaps an existing device")]
    Overlap(u64, u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    dev: SharedDevice,
}

/// A set of devices on disjoint address ranges.
#[derive(Default, Clone)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `dev` on `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, dev: SharedDevice) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base
            .checked_add(len - 1)
            .ok_or(BusError::Overflow(base, len))?;
        if let Some((&b, e)) = self.ranges.range(..=end).next_back() {
            if b + (e.len - 1) >= base {
                return Err(BusError::Overlap(base, len));
            }
        }
        self.ranges.insert(base, Entry { len, dev });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Entry)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        let off = addr - base;
        let size = size as u64;
        (size <= e.len && off <= e.len - size).then_some((off, e))
    }

    /// Routes a read; returns `false` (and leaves `data` alone) if no device
    /// covers the whole access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, e)) => {
                lock(&e.dev).read(off, data);
                true
            }
            None => false,
        }
    }

    /// Routes a write; returns `false` if no device covers the whole access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((off, e)) => {
                lock(&e.dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    // A device that panicked while holding its lock is still the device; the
    // VMM keeps serving the guest rather than cascading the panic.
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Rec {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range() {
        let a = Arc::new(Mutex::new(Rec(vec![])));
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, a.clone()).unwrap();
        let mut d = [0u8; 4];
        assert!(bus.read(0x1010, &mut d));
        assert_eq!(d, [0x10; 4]);
        assert!(bus.write(0x10fc, &[1, 2, 3, 4]));
        assert_eq!(a.lock().unwrap().0, vec![(0xfc, vec![1, 2, 3, 4])]);
        // Straddles the end, and misses entirely.
        assert!(!bus.write(0x10fd, &[1, 2, 3, 4]));
        assert!(!bus.read(0xfff, &mut d));
        assert!(!bus.read(0x1100, &mut d));
    }

    #[test]
    fn refuses_overlap_and_empty() {
        let a: SharedDevice = Arc::new(Mutex::new(Rec(vec![])));
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, a.clone()).unwrap();
        assert_eq!(
            bus.insert(0x10ff, 1, a.clone()),
            Err(BusError::Overlap(0x10ff, 1))
        );
        assert_eq!(
            bus.insert(0xf00, 0x101, a.clone()),
            Err(BusError::Overlap(0xf00, 0x101))
        );
        assert_eq!(bus.insert(0x0, 0, a.clone()), Err(BusError::Empty(0)));
        assert_eq!(
            bus.insert(u64::MAX, 2, a.clone()),
            Err(BusError::Overflow(u64::MAX, 2))
        );
        bus.insert(0x1100, 0x10, a.clone()).unwrap();
        bus.insert(0xf00, 0x100, a).unwrap();
    }
}

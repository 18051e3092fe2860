//! Small port-I/O devices that end the VM: the i8042 reset line, pvpanic and
//! the ACPI sleep control and reset registers. A device that wants the VM
//! to stop records why in an [`ExitLatch`]; the vCPU that made the access
//! checks the latch after every port write.

use std::sync::{Arc, OnceLock};

use tracing::debug;
use zvisor_vmm::bus::BusDevice;
use zvisor_vmm::GuestExit;

use super::layout;

/// First requested exit wins; read by the vCPUs.
#[derive(Default)]
pub struct ExitLatch(OnceLock<GuestExit>);

impl ExitLatch {
    /// Records `exit` unless another exit was recorded first.
    pub fn request(&self, exit: GuestExit) {
        let _ = self.0.set(exit);
    }

    /// The recorded exit, if any (one atomic load when none).
    pub fn get(&self) -> Option<GuestExit> {
        self.0.get().cloned()
    }
}

/// The i8042 keyboard controller, only as far as the reset line: command
/// 0xfe on port 0x64 pulses CPU reset. Registered on ports 0x60..=0x64;
/// port 0x61 (PC speaker / PIT gate) reads as 0 like the rest.
pub struct I8042 {
    latch: Arc<ExitLatch>,
}

impl I8042 {
    /// A controller reporting resets to `latch`.
    pub fn new(latch: Arc<ExitLatch>) -> Self {
        I8042 { latch }
    }
    /// First port.
    pub const BASE: u16 = 0x60;
    /// Ports covered.
    pub const LEN: u64 = 5;
    /// Offset of the command port 0x64.
    const COMMAND: u64 = 4;
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty (ready for commands).
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == Self::COMMAND && data.first() == Some(&0xfe) {
            self.latch.request(GuestExit::Reboot);
        }
    }
}

/// pvpanic (QEMU's ISA device, `QEMU0001`): the guest writes bit 0 when it panics.
pub struct PvPanic {
    latch: Arc<ExitLatch>,
}

/// pvpanic event: the guest panicked.
pub const PVPANIC_PANICKED: u8 = 1;
/// pvpanic event: a crash kernel is loaded.
pub const PVPANIC_CRASH_LOADED: u8 = 2;

impl PvPanic {
    /// A pvpanic device reporting to `latch`.
    pub fn new(latch: Arc<ExitLatch>) -> Self {
        PvPanic { latch }
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        let v = data.first().copied().unwrap_or(0);
        if v & PVPANIC_PANICKED != 0 {
            self.latch.request(GuestExit::Panic(
                "the guest kernel reported a panic (pvpanic)".into(),
            ));
        } else if v & PVPANIC_CRASH_LOADED != 0 {
            debug!("pvpanic: guest is starting its crash kernel");
        }
    }
}

/// ACPI hardware-reduced power management: the sleep control register
/// (offset 0), the sleep status register (offset 1) and the reset register
/// (offset 2), at [`layout::SLEEP_CONTROL_PORT`].
pub struct AcpiPm {
    latch: Arc<ExitLatch>,
}

/// SLP_EN in the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// The S5 sleep type the DSDT's \_S5 announces.
const S5_TYPE: u8 = 5;

impl AcpiPm {
    /// A PM block reporting to `latch`.
    pub fn new(latch: Arc<ExitLatch>) -> Self {
        AcpiPm { latch }
    }
    /// Ports covered, starting at [`layout::SLEEP_CONTROL_PORT`].
    pub const LEN: u64 = 3;
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let v = data.first().copied().unwrap_or(0);
        match offset {
            0 if v & SLP_EN != 0 && (v >> 2) & 7 == S5_TYPE => {
                self.latch.request(GuestExit::PowerOff)
            }
            2 if v == layout::RESET_VALUE => self.latch.request(GuestExit::Reboot),
            _ => debug!(offset, v, "acpi pm write ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits() {
        let l = Arc::new(ExitLatch::default());
        let mut k = I8042::new(l.clone());
        k.write(4, &[0xd1]);
        k.write(0, &[0xfe]);
        assert_eq!(l.get(), None);
        let mut d = [0xffu8];
        k.read(0, &mut d);
        assert_eq!(d, [0]);
        k.write(4, &[0xfe]);
        assert_eq!(l.get(), Some(GuestExit::Reboot));
        // First exit wins.
        PvPanic::new(l.clone()).write(0, &[1]);
        assert_eq!(l.get(), Some(GuestExit::Reboot));

        let l = Arc::new(ExitLatch::default());
        let mut p = PvPanic::new(l.clone());
        p.read(0, &mut d);
        assert_eq!(d, [3]);
        p.write(0, &[2]);
        assert_eq!(l.get(), None);
        p.write(0, &[1]);
        assert!(matches!(l.get(), Some(GuestExit::Panic(_))));

        let l = Arc::new(ExitLatch::default());
        let mut pm = AcpiPm::new(l.clone());
        pm.write(0, &[5 << 2]); // no SLP_EN
        pm.write(0, &[(3 << 2) | SLP_EN]); // S3: not supported, ignored
        assert_eq!(l.get(), None);
        pm.write(0, &[(5 << 2) | SLP_EN]);
        assert_eq!(l.get(), Some(GuestExit::PowerOff));
        let l = Arc::new(ExitLatch::default());
        AcpiPm::new(l.clone()).write(2, &[1]);
        assert_eq!(l.get(), Some(GuestExit::Reboot));
    }
}

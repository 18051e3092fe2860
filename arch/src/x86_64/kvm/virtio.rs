//! virtio-mmio wiring for x86_64: one MMIO window and one GSI per device,
//! an ioeventfd per queue on `QueueNotify` and an irqfd for the line.
//!
//! The guest finds the devices in the DSDT (`LNRO0005`, see
//! [`crate::x86_64::acpi`]). The GSI is an IOAPIC pin that the DSDT marks
//! edge-triggered, active high: every irqfd signal is one edge, and the
//! transport keeps `InterruptStatus` set until the driver acknowledges it, so
//! no resample fd is needed (the way Firecracker wires virtio-mmio on x86).

use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use tracing::debug;
use zvisor_vmm::bus::Bus;
use zvisor_vmm::interrupt::EventFdLine;
use zvisor_vmm::memory::GuestMemory;
use zvisor_vmm::virtio::mmio::{MmioTransport, NOTIFY_OFFSET};
use zvisor_vmm::virtio::VirtioDevice;

use super::{kvm_err, Error};
use crate::x86_64::acpi::VirtioMmioDevice;
use crate::x86_64::layout;

/// Wraps every device in a virtio-mmio transport, registers its notify
/// ioeventfds and its irqfd with KVM, and puts it on `mmio`: device `i` of
/// the list takes slot `i` ([`layout::virtio_mmio_slot`]). Returns what the
/// DSDT must describe, in the same order.
pub(super) fn attach(
    vm: &VmFd,
    mem: &GuestMemory,
    mmio: &mut Bus,
    devices: Vec<Box<dyn VirtioDevice>>,
) -> Result<Vec<VirtioMmioDevice>, Error> {
    let mut out = Vec::with_capacity(devices.len());
    let count = devices.len();
    for (i, dev) in devices.into_iter().enumerate() {
        let (base, size, gsi) = u32::try_from(i)
            .ok()
            .and_then(layout::virtio_mmio_slot)
            .ok_or(Error::TooManyDevices(count))?;
        let dtype = dev.device_type();
        let line = Arc::new(EventFdLine::new().map_err(Error::EventFd)?);
        vm.register_irqfd(line.eventfd(), gsi)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let transport = MmioTransport::new(dev, mem.clone(), line).map_err(Error::EventFd)?;
        for (q, fd) in transport.queue_notifiers() {
            vm.register_ioevent(fd, &IoEventAddress::Mmio(base + NOTIFY_OFFSET), q)
                .map_err(kvm_err("KVM_IOEVENTFD"))?;
        }
        mmio.insert(base, size, Arc::new(Mutex::new(transport)))?;
        debug!(
            slot = i,
            base,
            gsi,
            device_type = dtype,
            "virtio-mmio device"
        );
        out.push(VirtioMmioDevice {
            base,
            size,
            irq: gsi,
        });
    }
    Ok(out)
}

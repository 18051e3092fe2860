//! virtio 1.x device models, independent of the transport.
//!
//! A device implements [`VirtioDevice`]; a transport (virtio-mmio here,
//! virtio-ccw in the s390x backend, PCI later) owns the queues' guest-side
//! configuration, negotiates features, and hands the device its queues, their
//! notification [`EventFd`]s and a [`VirtioInterrupt`] at `DRIVER_OK`. Devices
//! then run on their own worker thread (an epoll loop), off the vCPU threads.
//!
//! The guest is hostile. Everything a device reads from the rings goes
//! through [`queue::pop_chain`], which checks every descriptor against guest
//! RAM and the direction rules. A broken ring or chain puts the device into
//! `NEEDS_RESET` (with a configuration interrupt); a malformed request gets
//! an error status in the device's own protocol.

pub mod block;
pub mod config;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod tap;
pub mod vsock;
pub mod worker;

use std::io;
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// Device type ids (virtio 1.2, 5).
pub mod types {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}

/// Feature bits shared by all devices.
pub mod features {
    /// Indirect descriptors.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// virtio 1.x: little-endian, no legacy layout. Required by zvisor.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// Guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// Guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// Driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// Device hit an error it cannot recover from without a reset.
    pub const NEEDS_RESET: u32 = 0x40;
    /// Driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Why the device interrupts the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptReason {
    /// Used buffers on queue `n`.
    Queue(u16),
    /// The configuration space (or the device status) changed.
    Config,
}

/// What a transport gives an active device to reach the guest.
pub trait VirtioInterrupt: Send + Sync {
    /// Signals the guest, the transport's way (ISR bits + line on MMIO,
    /// indicators + I/O interrupt on CCW).
    fn trigger(&self, reason: InterruptReason) -> io::Result<()>;
    /// Marks the device `NEEDS_RESET` and raises a configuration interrupt.
    fn set_needs_reset(&self);
}

/// A queue handed to an active device.
pub struct ActiveQueue {
    /// Queue index as the driver sees it.
    pub index: u16,
    /// The ring state, configured by the driver through the transport.
    pub queue: Queue,
    /// Readable when the driver notifies this queue (ioeventfd or transport).
    pub notify: EventFd,
}

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver enabled fewer or other queues than the device needs.
    #[error("device needs {need} queues, driver set up {got}")]
    QueueCount {
        /// Queues the device needs.
        need: usize,
        /// Queues handed over.
        got: usize,
    },
    /// A host resource (thread, epoll, backend) failed.
    #[error("cannot start device worker: {0}")]
    Io(#[from] io::Error),
    /// The device is already active.
    #[error("device already active")]
    AlreadyActive,
}

/// Errors a device worker hits while serving the guest; every one of them
/// ends in `NEEDS_RESET`.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The rings or a descriptor chain are malformed.
    #[error("malformed virtqueue: {0}")]
    Queue(#[from] queue::ChainError),
    /// The backend failed in a way the device cannot report in-band.
    #[error("backend failed: {0}")]
    Backend(#[from] io::Error),
}

/// A virtio device, transport-agnostic (the shape Cloud Hypervisor uses).
pub trait VirtioDevice: Send {
    /// virtio device type id, see [`types`].
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// Records the features the driver accepted (a subset of [`Self::features`],
    /// checked by the transport).
    fn ack_features(&mut self, value: u64);
    /// Reads the device configuration space; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; most devices ignore this.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Starts serving the queues on a worker thread.
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError>;
    /// Stops the worker and forgets driver state; returns `false` if the
    /// device cannot be reset (the transport then reports `FAILED`).
    fn reset(&mut self) -> bool;
}

/// Copies `src` (a device's config-space image) into `data` at `offset`,
/// reading zeros past its end. Never panics on any offset/length.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(off) = usize::try_from(offset) else {
        return;
    };
    if off >= src.len() {
        return;
    }
    let n = data.len().min(src.len() - off);
    data[..n].copy_from_slice(&src[off..off + n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let src = [1u8, 2, 3, 4];
        let mut d = [9u8; 4];
        read_config_bytes(&src, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&src, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&src, 4, &mut d);
        assert_eq!(d, [0; 4]);
    }
}

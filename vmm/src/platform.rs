//! The common VMM trait that every architecture backend implements.
//!
//! The core ([`crate::runner`]) owns the vCPU threads, the stop logic and the
//! MMIO bus; a backend owns everything that differs per arch: how the kernel
//! is loaded, which registers a vCPU starts with, the irqchip, the native
//! console, and how KVM's exits are decoded. Arch-only capabilities are
//! extension traits or associated types in `zvisor-arch`, never methods here
//! gated on `target_arch`.

use crate::bus::Bus;
use crate::config::VmConfig;
use crate::exit::GuestExit;
use crate::virtio::VirtioDevice;

/// What one `KVM_RUN` round trip meant to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuExit {
    /// Handled inside the backend (an MMIO/PIO access, an intercept); run again.
    Continue,
    /// `KVM_RUN` was interrupted by a signal (the core kicks vCPUs this way
    /// when the VM must stop); the core checks its stop flag and runs again.
    Interrupted,
    /// The guest stopped for good.
    Stop(GuestExit),
}

/// One virtual CPU of a backend.
pub trait PlatformVcpu: Send + 'static {
    /// The backend's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Enters the guest once and handles the resulting exit. MMIO accesses
    /// that the backend does not own itself go to `mmio`.
    fn run(&mut self, mmio: &Bus) -> Result<VcpuExit, Self::Error>;

    /// Where the vCPU is, in one line (registers, run state, exit counts),
    /// for diagnosing a guest that hangs. Called on the vCPU's own thread,
    /// between two [`run`](Self::run)s, when the host asks for a state dump
    /// (`SIGUSR1` to `zvisor run`).
    fn describe(&mut self) -> String {
        String::from("no state dump for this backend")
    }
}

/// An architecture backend: builds a bootable VM from a [`VmConfig`].
pub trait Platform: Sized + Send + 'static {
    /// `x86_64`, `aarch64` or `s390x`.
    const ARCH: &'static str;
    /// The backend's vCPU type.
    type Vcpu: PlatformVcpu<Error = Self::Error>;
    /// The backend's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens the hypervisor, validates `config` against its limits, maps guest
    /// memory, loads the kernel and initrd, sets up arch devices and returns
    /// the VM with its vCPUs ready to enter the guest.
    ///
    /// `devices` are transport-neutral virtio device models: the backend wraps
    /// each in its own transport (virtio-mmio on x86_64 and aarch64, with an
    /// ioeventfd per queue and an irqfd; virtio-ccw on s390x), describes it to
    /// the guest (ACPI, device tree, channel subsystem) and, for MMIO
    /// transports, inserts it into `mmio`. Their order is the order the guest
    /// sees them in (the first disk is `/dev/vda`).
    fn build(
        config: &VmConfig,
        mmio: &mut Bus,
        devices: Vec<Box<dyn VirtioDevice>>,
    ) -> Result<(Self, Vec<Self::Vcpu>), Self::Error>;

    /// Called once from the core's main thread after all vCPUs stopped.
    fn teardown(self) {}
}

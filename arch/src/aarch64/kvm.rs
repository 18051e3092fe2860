//! KVM glue for aarch64. Not implemented yet: building a VM reports a clear error.

use zvisor_vmm::bus::Bus;
use zvisor_vmm::virtio::VirtioDevice;
use zvisor_vmm::{Platform, PlatformVcpu, VcpuExit, VmConfig};

/// Errors of the aarch64 backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend exists as a type but cannot boot guests yet.
    #[error("running VMs is not implemented yet on aarch64")]
    NotImplemented,
}

/// The aarch64 KVM backend.
pub struct Aarch64Platform;

/// A aarch64 vCPU.
pub struct Aarch64Vcpu;

impl PlatformVcpu for Aarch64Vcpu {
    type Error = Error;
    fn run(&mut self, _mmio: &Bus) -> Result<VcpuExit, Error> {
        Err(Error::NotImplemented)
    }
}

impl Platform for Aarch64Platform {
    const ARCH: &'static str = "aarch64";
    type Vcpu = Aarch64Vcpu;
    type Error = Error;
    fn build(
        _config: &VmConfig,
        _mmio: &mut Bus,
        _devices: Vec<Box<dyn VirtioDevice>>,
    ) -> Result<(Self, Vec<Aarch64Vcpu>), Error> {
        Err(Error::NotImplemented)
    }
}

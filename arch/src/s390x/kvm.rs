//! KVM glue for s390x. Not implemented yet: building a VM reports a clear error.

use zvisor_vmm::bus::Bus;
use zvisor_vmm::virtio::VirtioDevice;
use zvisor_vmm::{Platform, PlatformVcpu, VcpuExit, VmConfig};

/// Errors of the s390x backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend exists as a type but cannot boot guests yet.
    #[error("running VMs is not implemented yet on s390x")]
    NotImplemented,
}

/// The s390x KVM backend.
pub struct S390Platform;

/// A s390x vCPU.
pub struct S390Vcpu;

impl PlatformVcpu for S390Vcpu {
    type Error = Error;
    fn run(&mut self, _mmio: &Bus) -> Result<VcpuExit, Error> {
        Err(Error::NotImplemented)
    }
}

impl Platform for S390Platform {
    const ARCH: &'static str = "s390x";
    type Vcpu = S390Vcpu;
    type Error = Error;
    fn build(
        _config: &VmConfig,
        _mmio: &mut Bus,
        _devices: Vec<Box<dyn VirtioDevice>>,
    ) -> Result<(Self, Vec<S390Vcpu>), Error> {
        Err(Error::NotImplemented)
    }
}

//! KVM glue for x86_64. Not implemented yet: building a VM reports a clear error.

use zvisor_vmm::bus::Bus;
use zvisor_vmm::{Platform, PlatformVcpu, VcpuExit, VmConfig};

/// Errors of the x86_64 backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend exists as a type but cannot boot guests yet.
    #[error("running VMs is not implemented yet on x86_64")]
    NotImplemented,
}

/// The x86_64 KVM backend.
pub struct X86Platform;

/// A x86_64 vCPU.
pub struct X86Vcpu;

impl PlatformVcpu for X86Vcpu {
    type Error = Error;
    fn run(&mut self, _mmio: &Bus) -> Result<VcpuExit, Error> {
        Err(Error::NotImplemented)
    }
}

impl Platform for X86Platform {
    const ARCH: &'static str = "x86_64";
    type Vcpu = X86Vcpu;
    type Error = Error;
    fn build(_config: &VmConfig, _mmio: &Bus) -> Result<(Self, Vec<X86Vcpu>), Error> {
        Err(Error::NotImplemented)
    }
}

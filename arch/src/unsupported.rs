//! The backend of an architecture whose KVM glue is not written yet
//! (aarch64 and s390x today): it has the types the core needs, and building
//! a VM fails with "running VMs is not implemented yet on <arch>".
//!
//! Pure logic, so it compiles and is tested on every host; `HostPlatform`
//! in `lib.rs` picks it for the architectures that need it.

use std::marker::PhantomData;

use zvisor_vmm::bus::Bus;
use zvisor_vmm::virtio::VirtioDevice;
use zvisor_vmm::{Platform, PlatformVcpu, VcpuExit, VmConfig};

/// Names an architecture that has no KVM backend yet.
pub trait Arch: 'static {
    /// `aarch64` or `s390x`, as in [`Platform::ARCH`].
    const NAME: &'static str;
}

/// aarch64.
pub enum Aarch64 {}

impl Arch for Aarch64 {
    const NAME: &'static str = "aarch64";
}

/// s390x.
pub enum S390x {}

impl Arch for S390x {
    const NAME: &'static str = "s390x";
}

/// Why nothing runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("running VMs is not implemented yet on {arch}")]
pub struct NotImplemented {
    /// The architecture.
    pub arch: &'static str,
}

impl NotImplemented {
    fn on<A: Arch>() -> Self {
        NotImplemented { arch: A::NAME }
    }
}

/// The platform of architecture `A`: never builds a VM.
// `fn() -> A`: Send and Sync whatever `A` is.
pub struct Unsupported<A: Arch>(PhantomData<fn() -> A>);

/// A vCPU of architecture `A`: never runs.
pub struct UnsupportedVcpu<A: Arch>(PhantomData<fn() -> A>);

impl<A: Arch> PlatformVcpu for UnsupportedVcpu<A> {
    type Error = NotImplemented;
    fn run(&mut self, _mmio: &Bus) -> Result<VcpuExit, NotImplemented> {
        Err(NotImplemented::on::<A>())
    }
}

impl<A: Arch> Platform for Unsupported<A> {
    const ARCH: &'static str = A::NAME;
    type Vcpu = UnsupportedVcpu<A>;
    type Error = NotImplemented;
    fn build(
        _config: &VmConfig,
        _mmio: &mut Bus,
        _devices: Vec<Box<dyn VirtioDevice>>,
    ) -> Result<(Self, Vec<Self::Vcpu>), NotImplemented> {
        Err(NotImplemented::on::<A>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zvisor_vmm::virtio::rng::Rng;

    fn refuses<A: Arch>() -> String {
        let bus = Bus::new();
        let devices: Vec<Box<dyn VirtioDevice>> = vec![Box::new(Rng::new())];
        let cfg = VmConfig::new("/nonexistent/kernel");
        let e = zvisor_vmm::runner::run::<Unsupported<A>>(&cfg, Bus::new(), devices, |_| {})
            .map(|_| ())
            .unwrap_err();
        // The vCPU type refuses too.
        let v = UnsupportedVcpu::<A>(PhantomData).run(&bus);
        assert_eq!(v.unwrap_err(), NotImplemented { arch: A::NAME });
        e.to_string()
    }

    #[test]
    fn aarch64_and_s390x_report_not_implemented() {
        assert_eq!(Unsupported::<Aarch64>::ARCH, "aarch64");
        assert_eq!(Unsupported::<S390x>::ARCH, "s390x");
        assert_eq!(
            refuses::<Aarch64>(),
            "running VMs is not implemented yet on aarch64"
        );
        assert_eq!(
            refuses::<S390x>(),
            "running VMs is not implemented yet on s390x"
        );
    }
}

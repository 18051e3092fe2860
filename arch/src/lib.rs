//! zvisor's architecture backends.
//!
//! Each arch module holds two kinds of code:
//! - pure logic (boot structures, page tables, ACPI, FDT, CCW, SCLP) that
//!   compiles and is unit-tested on every host;
//! - a thin `kvm` submodule, compiled only for its own target, that
//!   implements [`zvisor_vmm::Platform`] (x86_64 only so far).
//!
//! Architectures without KVM glue yet (aarch64, s390x) share the
//! [`unsupported`] platform, which reports "running VMs is not implemented
//! yet on <arch>". The one place that picks the backend for the host is
//! [`HostPlatform`].

pub mod aarch64;
pub mod s390x;
pub mod unsupported;
pub mod x86_64;

/// The backend for the architecture this binary was built for.
#[cfg(target_arch = "x86_64")]
pub type HostPlatform = x86_64::kvm::X86Platform;
/// The backend for the architecture this binary was built for.
#[cfg(target_arch = "aarch64")]
pub type HostPlatform = unsupported::Unsupported<unsupported::Aarch64>;
/// The backend for the architecture this binary was built for.
#[cfg(target_arch = "s390x")]
pub type HostPlatform = unsupported::Unsupported<unsupported::S390x>;

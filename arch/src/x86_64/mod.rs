//! The x86_64 backend.
//!
//! Pure-logic modules live here and are tested on every host; the KVM glue
//! in [`kvm`] is compiled only for x86_64.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod devices;
pub mod kernel;
pub mod layout;

#[cfg(target_arch = "x86_64")]
pub mod kvm;

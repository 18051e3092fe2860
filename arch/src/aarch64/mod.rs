//! The aarch64 backend.
//!
//! Pure-logic modules live here and are tested on every host; the KVM glue
//! in [`kvm`] is compiled only for aarch64.

#[cfg(target_arch = "aarch64")]
pub mod kvm;

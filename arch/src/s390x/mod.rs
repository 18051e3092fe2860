//! The s390x backend.
//!
//! Pure-logic modules live here and are tested on every host; the KVM glue
//! in [`kvm`] is compiled only for s390x.

#[cfg(target_arch = "s390x")]
pub mod kvm;

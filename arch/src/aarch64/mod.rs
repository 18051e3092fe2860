//! The aarch64 backend.
//!
//! Pure-logic modules live here and are tested on every host:
//! - [`layout`]: the guest physical memory map (QEMU `virt` compatible) and
//!   boot payload placement;
//! - [`image`]: the arm64 kernel Image header;
//! - [`fdt`]: the device tree writer, reader and the guest's tree.
//!
//! The KVM glue in [`kvm`] is compiled only for aarch64.

pub mod fdt;
pub mod image;
pub mod layout;

#[cfg(target_arch = "aarch64")]
pub mod kvm;

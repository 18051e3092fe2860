//! The aarch64 backend.
//!
//! Pure-logic modules live here and are tested on every host:
//! - [`layout`]: the guest physical memory map (QEMU `virt` compatible) and
//!   boot payload placement;
//! - [`image`]: the arm64 kernel Image header;
//! - [`fdt`]: the device tree writer, reader and the guest's tree.
//!
//! There is no KVM glue yet: on an aarch64 host `HostPlatform` is
//! [`crate::unsupported::Unsupported`].

pub mod fdt;
pub mod image;
pub mod layout;

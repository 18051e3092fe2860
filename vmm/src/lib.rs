//! zvisor's arch-neutral core.
//!
//! Nothing in this crate is gated on `target_arch`: the architecture
//! backends in `zvisor-arch` implement [`platform::Platform`] and the core
//! drives them. Everything here compiles and is unit-tested on every host,
//! including big-endian s390x under qemu-user.

pub mod bus;
pub mod config;
pub mod endian;
pub mod exit;
pub mod interrupt;
pub mod memory;
pub mod platform;
pub mod runner;
pub mod virtio;

pub use config::{MemorySize, VmConfig};
pub use exit::GuestExit;
pub use platform::{Platform, PlatformVcpu, VcpuExit};

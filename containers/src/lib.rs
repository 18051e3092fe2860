//! zvisor's container layer: the OCI runtime (`zvisor-runc`), and later the
//! guest agent and tenant sandboxes.
//!
//! Module map: [`config`] (load + validate config.json), [`state`] (state
//! dirs, locks), [`cgroups`] (own v1/v2/hybrid cgroupfs layer), [`rootfs`]
//! over the substitutable [`sys`] layer, [`spawn`] (process stages and
//! namespaces), [`init`] (inside the container), [`caps`], [`seccomp`] (own
//! cBPF compiler), [`hooks`], [`console`], and [`container`] (operations).

pub mod caps;
pub mod cgroups;
pub mod config;
pub mod console;
pub mod container;
pub mod error;
pub mod hooks;
pub mod init;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod state;
pub mod sys;

pub use error::{Error, Result};

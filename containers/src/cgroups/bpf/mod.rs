//! Device cgroup on cgroup v2: OCI device rules compiled to an eBPF
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program ([`devices::compile`], encoded by
//! our own [`insn`] encoder), loaded and attached to the container's cgroup
//! with `bpf(2)` ([`sys`]). On `update`, the new program is attached first
//! and the old ones are detached after (with `BPF_F_ALLOW_MULTI` every
//! attached program must allow, so there is no window with fewer rules).

pub mod devices;
pub mod insn;
pub mod sys;

use std::path::Path;

pub use devices::{compile, decide, DevRule, DevType};

use crate::error::Result;

/// Compiles `rules`, attaches the program to cgroup directory `dir` and
/// detaches the device programs that were attached before. Returns the new
/// program's id list as the kernel reports it afterwards.
pub fn install(dir: &Path, rules: &[DevRule]) -> Result<Vec<u32>> {
    let prog = sys::load(&compile(rules)?)?;
    let cg = sys::open_cgroup(dir)?;
    let old = sys::query(&cg)?;
    sys::attach(&cg, &prog)?;
    for id in old {
        sys::detach(&cg, id)?;
    }
    sys::query(&cg)
}

/// Detaches every device program attached to cgroup directory `dir`.
pub fn remove_all(dir: &Path) -> Result<()> {
    let cg = sys::open_cgroup(dir)?;
    for id in sys::query(&cg)? {
        sys::detach(&cg, id)?;
    }
    Ok(())
}

/// Ids of the device programs attached to cgroup directory `dir`.
pub fn attached(dir: &Path) -> Result<Vec<u32>> {
    sys::query(&sys::open_cgroup(dir)?)
}

#[cfg(test)]
mod tests;

//! Linux capabilities: names, the bounding set, capset(2) v3 and ambient.

use std::collections::HashSet;

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::error::{Context, Error, Result};

/// Capability names in kernel bit order.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Bit number of a capability.
pub fn number(c: &Capability) -> Result<u32> {
    let name = serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
        .ok_or_else(|| Error::Unsupported(format!("capability {name:?}")))
}

/// A set as a 64-bit mask.
pub fn mask(set: &Option<Capabilities>) -> Result<u64> {
    let mut m = 0u64;
    for c in set.iter().flat_map(HashSet::iter) {
        m |= 1 << number(c)?;
    }
    Ok(m)
}

/// The five sets as masks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

impl CapSets {
    /// From the OCI process capabilities.
    pub fn from_oci(c: &LinuxCapabilities) -> Result<CapSets> {
        Ok(CapSets {
            bounding: mask(c.bounding())?,
            effective: mask(c.effective())?,
            permitted: mask(c.permitted())?,
            inheritable: mask(c.inheritable())?,
            ambient: mask(c.ambient())?,
        })
    }
}

/// The highest capability the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Drops every capability outside `bounding` from the bounding set.
pub fn drop_bounding(bounding: u64) -> Result<()> {
    for cap in 0..=last_cap().min(63) {
        if bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc < 0 {
                let e = nix::Error::last();
                if e != nix::Error::EINVAL {
                    return Err(e).ctx(|| format!("dropping {} from the bounding set", name(cap)));
                }
            }
        }
    }
    Ok(())
}

fn name(cap: u32) -> &'static str {
    NAMES.get(cap as usize).copied().unwrap_or("CAP_?")
}

/// Sets effective, permitted and inheritable (capset v3), then ambient.
pub fn apply(sets: &CapSets) -> Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let d = |shift: u32| Data {
        effective: (sets.effective >> shift) as u32,
        permitted: (sets.permitted >> shift) as u32,
        inheritable: (sets.inheritable >> shift) as u32,
    };
    let data = [d(0), d(32)];
    // SAFETY: header and a two-element data array as capset(2) v3 expects;
    // both live across the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) };
    if rc < 0 {
        return Err(nix::Error::last()).ctx(|| "setting capabilities (capset)");
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for cap in 0..64u32 {
        if sets.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc < 0 {
                // Like runc: an ambient capability that is not also
                // permitted and inheritable is skipped, not fatal.
                tracing::debug!(
                    "ambient {} not raised (it must be permitted and inheritable)",
                    name(cap)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_kernel_bit_numbers() {
        let c: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_CHOWN","CAP_KILL","CAP_CHECKPOINT_RESTORE"],"effective":["CAP_SYS_ADMIN"]}"#,
        )
        .unwrap();
        let s = CapSets::from_oci(&c).unwrap();
        assert_eq!(s.bounding, 1 | (1 << 5) | (1 << 40));
        assert_eq!(s.effective, 1 << 21);
        assert_eq!(s.ambient, 0);
    }
}

//! Target architectures of a seccomp filter: AUDIT_ARCH values, byte order
//! and syscall tables (from the `syscalls` crate, one table per arch).

use super::tables;

/// An architecture a filter can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (little-endian).
    X86_64,
    /// aarch64 (little-endian).
    Aarch64,
    /// s390x (big-endian).
    S390x,
}

impl Arch {
    /// The architecture this binary runs on, decided at run time from
    /// `std::env::consts::ARCH` (no cfg in the arch-neutral crate).
    pub fn native() -> Option<Arch> {
        Self::from_rust_name(std::env::consts::ARCH)
    }

    /// Maps a Rust `target_arch` name.
    pub fn from_rust_name(name: &str) -> Option<Arch> {
        match name {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            "s390x" => Some(Arch::S390x),
            _ => None,
        }
    }

    /// Maps an OCI `SCMP_ARCH_*` name.
    pub fn from_oci(arch: &oci_spec::runtime::Arch) -> Option<Arch> {
        use oci_spec::runtime::Arch as A;
        match arch {
            A::ScmpArchX86_64 => Some(Arch::X86_64),
            A::ScmpArchAarch64 => Some(Arch::Aarch64),
            A::ScmpArchS390x => Some(Arch::S390x),
            _ => None,
        }
    }

    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`.
    pub fn audit_arch(self) -> u32 {
        const B64: u32 = 0x8000_0000;
        const LE: u32 = 0x4000_0000;
        match self {
            Arch::X86_64 => 62 | B64 | LE,
            Arch::Aarch64 => 183 | B64 | LE,
            Arch::S390x => 22 | B64,
        }
    }

    /// True when 64-bit syscall arguments are stored big-endian.
    pub fn big_endian(self) -> bool {
        matches!(self, Arch::S390x)
    }

    /// The syscall number of `name` on this arch, if the arch has it.
    pub fn syscall(self, name: &str) -> Option<u32> {
        let table = match self {
            Arch::X86_64 => tables::X86_64,
            Arch::Aarch64 => tables::AARCH64,
            Arch::S390x => tables::S390X,
        };
        table
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| table[i].1)
    }

    /// The x32 ABI bit on x86_64: syscall numbers with it set come from a
    /// different ABI and never match the native table.
    pub fn abi_bit(self) -> Option<u32> {
        match self {
            Arch::X86_64 => Some(0x4000_0000),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_arch_values_match_linux_headers() {
        assert_eq!(Arch::X86_64.audit_arch(), 0xC000_003E);
        assert_eq!(Arch::Aarch64.audit_arch(), 0xC000_00B7);
        assert_eq!(Arch::S390x.audit_arch(), 0x8000_0016);
    }

    #[test]
    fn syscall_tables_differ_per_arch() {
        assert_eq!(Arch::X86_64.syscall("getpid"), Some(39));
        assert_eq!(Arch::Aarch64.syscall("getpid"), Some(172));
        assert_eq!(Arch::S390x.syscall("getpid"), Some(20));
        assert_eq!(Arch::Aarch64.syscall("open"), None);
        assert_eq!(Arch::X86_64.syscall("no_such_call"), None);
        assert_eq!(Arch::Aarch64.syscall("syscalls"), None);
        assert_eq!(Arch::S390x.syscall("newfstatat"), Some(293));
        for t in [tables::X86_64, tables::AARCH64, tables::S390X] {
            assert!(
                t.windows(2).all(|w| w[0].0 < w[1].0),
                "sorted, no duplicates"
            );
        }
    }

    #[test]
    fn native_arch_is_known() {
        assert!(Arch::native().is_some());
    }
}

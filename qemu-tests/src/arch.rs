//! Per-architecture facts the harness needs: QEMU binary and machine,
//! console device, Rust target, and KVM modules for a nested (L1) guest.

/// A guest architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    /// x86_64: q35, nested SVM under TCG (`-cpu max`), kvm-amd.
    X86_64,
    /// aarch64: virt with EL2 (`virtualization=on`), KVM built in.
    Aarch64,
    /// s390x: s390-ccw-virtio; no KVM under TCG (no SIE).
    S390x,
}

impl GuestArch {
    /// The architecture this harness was built for.
    pub fn host() -> Option<Self> {
        Self::from_name(std::env::consts::ARCH)
    }

    /// From `x86_64`/`amd64`, `aarch64`/`arm64`, `s390x`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "x86_64" | "amd64" => Some(Self::X86_64),
            "aarch64" | "arm64" => Some(Self::Aarch64),
            "s390x" => Some(Self::S390x),
            _ => None,
        }
    }

    /// Rust's name, also the directory under `.zvisor-assets/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
            Self::S390x => "s390x",
        }
    }

    /// Rust target triple for static guest binaries.
    pub fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-gnu",
            Self::Aarch64 => "aarch64-unknown-linux-gnu",
            Self::S390x => "s390x-unknown-linux-gnu",
        }
    }

    /// The QEMU system emulator.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Aarch64 => "qemu-system-aarch64",
            Self::S390x => "qemu-system-s390x",
        }
    }

    /// The guest's serial console device name.
    pub fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Aarch64 => "ttyAMA0",
            Self::S390x => "ttysclp0",
        }
    }

    /// QEMU machine and CPU arguments for a TCG guest; `nested` asks for
    /// hardware virtualization inside it (SVM on x86, EL2 on arm).
    pub fn machine_args(self, nested: bool) -> Vec<String> {
        let v: &[&str] = match (self, nested) {
            // -cpu max under TCG has svm, npt and xsave (a VMM that wants
            // KVM_CAP_XCRS needs xsave).
            (Self::X86_64, _) => &["-accel", "tcg,thread=multi", "-M", "q35", "-cpu", "max"],
            (Self::Aarch64, true) => &[
                "-accel",
                "tcg,thread=multi",
                "-M",
                "virt,virtualization=on,gic-version=3",
                "-cpu",
                "max,pauth-impdef=on",
            ],
            (Self::Aarch64, false) => &[
                "-accel",
                "tcg,thread=multi",
                "-M",
                "virt",
                "-cpu",
                "max,pauth-impdef=on",
            ],
            (Self::S390x, _) => &["-accel", "tcg", "-M", "s390-ccw-virtio", "-cpu", "max"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Console plumbing: the serial console on stdio, nothing else.
    pub fn console_args(self) -> Vec<String> {
        let v: &[&str] = match self {
            Self::X86_64 | Self::Aarch64 => &[
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-nic",
                "none",
            ],
            // The SCLP console only comes with -nographic's default wiring.
            Self::S390x => &["-nographic", "-no-user-config", "-nic", "none"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Modules an L1 guest loads to offer /dev/kvm (dependencies are added
    /// by the initramfs builder); empty when KVM is built in or absent.
    pub fn kvm_modules(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &["kvm-amd"],
            Self::Aarch64 | Self::S390x => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in [GuestArch::X86_64, GuestArch::Aarch64, GuestArch::S390x] {
            assert_eq!(GuestArch::from_name(a.name()), Some(a));
            assert!(a.rust_target().starts_with(a.name()));
            assert!(a.qemu_binary().ends_with(if a == GuestArch::X86_64 {
                "x86_64"
            } else {
                a.name()
            }));
        }
        assert_eq!(GuestArch::from_name("amd64"), Some(GuestArch::X86_64));
        assert_eq!(GuestArch::from_name("riscv64"), None);
    }

    #[test]
    fn nested_arm_asks_for_el2() {
        let a = GuestArch::Aarch64.machine_args(true).join(" ");
        assert!(a.contains("virtualization=on"), "{a}");
        assert!(!GuestArch::Aarch64
            .machine_args(false)
            .join(" ")
            .contains("virtualization"));
    }
}

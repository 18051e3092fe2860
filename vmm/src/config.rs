//! The VM configuration shared by every architecture.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A memory size given on the command line: `512M`, `1G`, `1048576`, `64KiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemorySize(pub u64);

/// Why a memory size string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemorySizeError {
    /// Empty string.
    #[error("memory size is empty")]
    Empty,
    /// The numeric part is missing or not a number.
    #[error("invalid memory size {0:?}: expected a number with an optional K, M, G or T suffix")]
    Invalid(String),
    /// Unknown unit suffix.
    #[error("invalid memory size {0:?}: unknown unit {1:?} (use K, M, G or T)")]
    Unit(String, String),
    /// Does not fit in 64 bits.
    #[error("memory size {0:?} is too large")]
    Overflow(String),
}

impl FromStr for MemorySize {
    type Err = MemorySizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(MemorySizeError::Empty);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(MemorySizeError::Invalid(s.to_string()));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| MemorySizeError::Overflow(s.to_string()))?;
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(MemorySizeError::Unit(s.to_string(), unit.to_string())),
        };
        n.checked_mul(1u64 << shift)
            .map(MemorySize)
            .ok_or_else(|| MemorySizeError::Overflow(s.to_string()))
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b.is_multiple_of(1 << 30) {
            write!(f, "{}G", b >> 30)
        } else if b != 0 && b.is_multiple_of(1 << 20) {
            write!(f, "{}M", b >> 20)
        } else if b != 0 && b.is_multiple_of(1 << 10) {
            write!(f, "{}K", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

/// Where the guest console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleMode {
    /// The arch's native console (8250 on x86_64, PL011 on aarch64, SCLP on
    /// s390x) wired to the host's stdin/stdout.
    #[default]
    Native,
    /// No console at all.
    Off,
}

/// Everything needed to build and boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest kernel image.
    pub kernel: PathBuf,
    /// An optional initrd.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Number of vCPUs (at least 1).
    pub cpus: u32,
    /// Guest RAM in bytes.
    pub memory: MemorySize,
    /// The KVM device node; overridable for tests.
    pub kvm_path: PathBuf,
    /// Console wiring.
    pub console: ConsoleMode,
}

impl VmConfig {
    /// A config with the defaults a user of Firecracker would expect:
    /// 1 vCPU, 128 MiB, `/dev/kvm`.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            cpus: 1,
            memory: MemorySize(128 << 20),
            kvm_path: PathBuf::from("/dev/kvm"),
            console: ConsoleMode::Native,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("512M".parse(), Ok(MemorySize(512 << 20)));
        assert_eq!("1G".parse(), Ok(MemorySize(1 << 30)));
        assert_eq!("2gib".parse(), Ok(MemorySize(2 << 30)));
        assert_eq!("4096".parse(), Ok(MemorySize(4096)));
        assert_eq!("64K".parse(), Ok(MemorySize(64 << 10)));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(matches!(
            "12Q".parse::<MemorySize>(),
            Err(MemorySizeError::Unit(_, u)) if u == "Q"
        ));
        assert_eq!("".parse::<MemorySize>(), Err(MemorySizeError::Empty));
        assert!(matches!(
            "G".parse::<MemorySize>(),
            Err(MemorySizeError::Invalid(_))
        ));
        assert!(matches!(
            "99999999999T".parse::<MemorySize>(),
            Err(MemorySizeError::Overflow(_))
        ));
        let msg = "12Q".parse::<MemorySize>().unwrap_err().to_string();
        assert!(msg.contains("12Q") && msg.contains("unit"), "{msg}");
    }

    #[test]
    fn displays_round_trip() {
        for s in ["512M", "1G", "64K", "4097"] {
            let m: MemorySize = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
        }
    }
}

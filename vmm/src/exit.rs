//! How a VM run ends, and the process exit codes that go with it.

use std::fmt;

/// The reason a guest stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest powered itself off (ACPI S5, PSCI SYSTEM_OFF, s390 stop).
    PowerOff,
    /// The guest asked for a reset/reboot (i8042, PSCI SYSTEM_RESET, diag 0x308).
    Reboot,
    /// The guest kernel reported a panic (pvpanic, s390 disabled wait).
    Panic(String),
    /// x86 triple fault (KVM_EXIT_SHUTDOWN) or an equivalent fatal CPU state.
    TripleFault,
    /// The guest did something the VMM cannot continue from.
    Crash(String),
    /// The host asked us to stop (SIGINT/SIGTERM).
    Signalled(i32),
}

/// Process exit codes, documented in the README.
pub mod code {
    /// Guest powered off or rebooted.
    pub const OK: i32 = 0;
    /// VMM error (bad config, KVM failure, I/O error).
    pub const VMM_ERROR: i32 = 1;
    /// Command-line usage error (clap's convention).
    pub const USAGE: i32 = 2;
    /// The guest kernel panicked.
    pub const GUEST_PANIC: i32 = 3;
    /// The guest triple-faulted.
    pub const TRIPLE_FAULT: i32 = 4;
    /// The guest crashed in a way the VMM could not handle.
    pub const GUEST_CRASH: i32 = 5;
    /// Stopped by a signal: 128 + signal number, as shells report it.
    pub const SIGNAL_BASE: i32 = 128;
}

impl GuestExit {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            GuestExit::PowerOff | GuestExit::Reboot => code::OK,
            GuestExit::Panic(_) => code::GUEST_PANIC,
            GuestExit::TripleFault => code::TRIPLE_FAULT,
            GuestExit::Crash(_) => code::GUEST_CRASH,
            GuestExit::Signalled(sig) => code::SIGNAL_BASE + sig,
        }
    }
}

impl fmt::Display for GuestExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestExit::PowerOff => write!(f, "guest powered off"),
            GuestExit::Reboot => write!(f, "guest requested a reboot"),
            GuestExit::Panic(why) => write!(f, "guest panicked: {why}"),
            GuestExit::TripleFault => write!(f, "guest triple-faulted"),
            GuestExit::Crash(why) => write!(f, "guest crashed: {why}"),
            GuestExit::Signalled(sig) => write!(f, "stopped by signal {sig}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            GuestExit::PowerOff.exit_code(),
            GuestExit::Panic("x".into()).exit_code(),
            GuestExit::TripleFault.exit_code(),
            GuestExit::Crash("x".into()).exit_code(),
            GuestExit::Signalled(15).exit_code(),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(GuestExit::Reboot.exit_code(), 0);
        assert_eq!(GuestExit::Signalled(15).exit_code(), 143);
    }
}

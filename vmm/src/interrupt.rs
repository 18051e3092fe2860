//! Interrupt lines: how a device model asks the platform to interrupt the guest.
//!
//! The arch backends implement [`InterruptLine`] with a KVM irqfd (x86_64,
//! aarch64) or an adapter/I-O interrupt injector (s390x); tests implement it
//! with an [`EventFd`] or a counter. Devices never know which.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// One guest interrupt line (or message) that a device can raise.
pub trait InterruptLine: Send + Sync {
    /// Raises the interrupt. Edge semantics: each call is one event.
    fn trigger(&self) -> io::Result<()>;
}

/// An interrupt line backed by an [`EventFd`]: exactly what a KVM irqfd
/// consumes, and what a test can read back.
pub struct EventFdLine(EventFd);

impl EventFdLine {
    /// A fresh, non-blocking eventfd line.
    pub fn new() -> io::Result<Self> {
        Ok(Self(EventFd::new(libc::EFD_NONBLOCK)?))
    }
    /// The eventfd, to register as an irqfd or to poll in tests.
    pub fn eventfd(&self) -> &EventFd {
        &self.0
    }
    /// Reads and clears the number of triggers since the last call (0 if none).
    pub fn take(&self) -> u64 {
        self.0.read().unwrap_or(0)
    }
}

impl InterruptLine for EventFdLine {
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// An interrupt line that only counts; for unit tests and benches.
#[derive(Default)]
pub struct CountingLine(AtomicU64);

impl CountingLine {
    /// Number of triggers so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl InterruptLine for CountingLine {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_line_counts_triggers() {
        let l = EventFdLine::new().unwrap();
        assert_eq!(l.take(), 0);
        l.trigger().unwrap();
        l.trigger().unwrap();
        assert_eq!(l.take(), 2);
        assert_eq!(l.take(), 0);
        let c = CountingLine::default();
        c.trigger().unwrap();
        assert_eq!(c.count(), 1);
    }
}

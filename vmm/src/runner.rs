//! The arch-neutral vCPU loop: one thread per vCPU, first stop wins.
//!
//! Stopping works the way Firecracker and Cloud Hypervisor do it: a flag is
//! set, then every vCPU thread is sent a real-time signal whose handler does
//! nothing. That makes a blocked `KVM_RUN` return `EINTR`; the backend reports
//! [`VcpuExit::Interrupted`], the loop sees the flag and leaves. A signal that
//! lands just before `KVM_RUN` is entered would be lost, so the kick is
//! repeated until each thread has exited.
//!
//! A state dump ([`VmHandle::dump_state`]) uses the same kick: each vCPU
//! thread sees a new dump generation when `KVM_RUN` returns, logs
//! [`PlatformVcpu::describe`] and goes back into the guest.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::bus::Bus;
use crate::config::VmConfig;
use crate::exit::GuestExit;
use crate::platform::{Platform, PlatformVcpu, VcpuExit};
use crate::virtio::VirtioDevice;

/// Errors from a VM run.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + Send + Sync + 'static> {
    /// The backend refused to build or run the VM.
    #[error(transparent)]
    Platform(E),
    /// The host could not start a vCPU thread.
    #[error("cannot start vCPU thread: {0}")]
    Thread(std::io::Error),
}

enum Event<E> {
    /// A vCPU or an external request ended the VM.
    Exit(GuestExit),
    /// A vCPU failed.
    Failed(E),
    /// A vCPU thread ended; sent by a drop guard, so also on unwinding.
    Gone,
    /// The host asked every vCPU to log where it is.
    Dump,
}

/// Sends [`Event::Gone`] when its vCPU thread ends, however it ends, so the
/// runner never waits for a thread that is no longer there.
struct GoneGuard<E>(mpsc::Sender<Event<E>>);

impl<E> Drop for GoneGuard<E> {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Gone);
    }
}

/// The signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn noop_handler(_: libc::c_int) {}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sigaction` with a zeroed struct plus a valid handler
        // pointer is well defined; the handler is async-signal-safe (it does
        // nothing). SA_RESTART is deliberately not set so KVM_RUN returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop_handler as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// A way for the caller (signal handling, an API) to act on a running VM.
/// It sends straight into the runner's event channel; after the run ended,
/// its requests do nothing.
#[derive(Clone)]
pub struct VmHandle(Arc<dyn Fn(Control) + Send + Sync>);

/// A request through a [`VmHandle`].
enum Control {
    Stop(GuestExit),
    Dump,
}

impl VmHandle {
    /// Asks the VM to stop with `reason` as its outcome.
    pub fn stop(&self, reason: GuestExit) {
        (self.0)(Control::Stop(reason))
    }

    /// Asks every vCPU to log where it is (at `warn`, target
    /// `zvisor_vmm::runner`) without stopping the VM: for a guest that hangs.
    pub fn dump_state(&self) {
        (self.0)(Control::Dump)
    }
}

/// Builds the VM with backend `P` and runs it until the guest stops, a vCPU
/// fails, or a stop request arrives through the handle given to `on_start`.
/// `devices` are handed to the backend, which wraps each in its transport.
pub fn run<P: Platform>(
    config: &VmConfig,
    mut mmio: Bus,
    devices: Vec<Box<dyn VirtioDevice>>,
    on_start: impl FnOnce(VmHandle),
) -> Result<GuestExit, RunError<P::Error>> {
    install_kick_handler();
    let (platform, vcpus) = P::build(config, &mut mmio, devices).map_err(RunError::Platform)?;
    let mmio = Arc::new(mmio);
    let stop = Arc::new(AtomicBool::new(false));
    // Dump requests: the generation asked for, and how many vCPUs logged.
    let dump_gen = Arc::new(AtomicU64::new(0));
    let dumped = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Event<P::Error>>();

    let mut threads = Vec::with_capacity(vcpus.len());
    for (i, mut vcpu) in vcpus.into_iter().enumerate() {
        let (tx, flag, mmio) = (tx.clone(), stop.clone(), mmio.clone());
        let (dump_gen, dumped) = (dump_gen.clone(), dumped.clone());
        let h = thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(move || {
                let _gone = GoneGuard(tx.clone());
                let mut seen = 0;
                loop {
                    if flag.load(Ordering::Acquire) {
                        return;
                    }
                    let g = dump_gen.load(Ordering::Acquire);
                    if g != seen {
                        seen = g;
                        let state = vcpu.describe();
                        warn!(vcpu = i, "state: {state}");
                        dumped.fetch_add(1, Ordering::AcqRel);
                    }
                    match vcpu.run(&mmio) {
                        Ok(VcpuExit::Continue) | Ok(VcpuExit::Interrupted) => {}
                        Ok(VcpuExit::Stop(exit)) => {
                            debug!(vcpu = i, %exit, "vcpu stopped");
                            let _ = tx.send(Event::Exit(exit));
                            return;
                        }
                        Err(e) => {
                            error!(vcpu = i, error = %e, "vcpu failed");
                            let _ = tx.send(Event::Failed(e));
                            return;
                        }
                    }
                }
            })
            .map_err(RunError::Thread);
        match h {
            Ok(h) => threads.push(h),
            Err(e) => {
                stop_all(&stop, std::mem::take(&mut threads));
                platform.teardown();
                return Err(e);
            }
        }
    }

    let n_vcpus = threads.len();
    {
        let tx = Mutex::new(tx);
        on_start(VmHandle(Arc::new(move |c| {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(match c {
                Control::Stop(r) => Event::Exit(r),
                Control::Dump => Event::Dump,
            });
        })));
    }

    let mut gone = 0;
    let outcome = loop {
        match rx.recv() {
            Ok(Event::Exit(e)) => break Ok(e),
            Ok(Event::Failed(e)) => break Err(RunError::Platform(e)),
            Ok(Event::Dump) => {
                kick_for_dump(&dump_gen, &dumped, &threads);
                continue;
            }
            Ok(Event::Gone) => {
                gone += 1;
                if gone < n_vcpus {
                    continue;
                }
            }
            Err(_) => {}
        }
        break Ok(GuestExit::Crash(
            "all vCPUs stopped without a reason".into(),
        ));
    };
    stop_all(&stop, threads);
    platform.teardown();
    outcome
}

/// Starts a new dump generation and kicks every vCPU out of `KVM_RUN`
/// until all of them logged it (a kick that lands just before `KVM_RUN`
/// is lost, so it is repeated), giving up after about a second (a vCPU
/// thread stuck outside the guest, in a device access, cannot answer).
fn kick_for_dump(gen: &AtomicU64, dumped: &AtomicUsize, threads: &[thread::JoinHandle<()>]) {
    let live: Vec<_> = threads.iter().filter(|t| !t.is_finished()).collect();
    let before = dumped.load(Ordering::Acquire);
    gen.fetch_add(1, Ordering::AcqRel);
    for _ in 0..100 {
        if dumped.load(Ordering::Acquire) >= before + live.len() {
            return;
        }
        for t in &live {
            kick(t);
        }
        thread::sleep(Duration::from_millis(10));
    }
    warn!("state dump: not every vCPU answered");
}

/// Sends the kick signal to vCPU thread `t`, which makes a blocked
/// `KVM_RUN` return.
fn kick(t: &thread::JoinHandle<()>) {
    // SAFETY: the pthread handle is valid while `t` is not joined (callers
    // hold the handle, unjoined); the kick signal has a no-op handler.
    unsafe {
        libc::pthread_kill(t.as_pthread_t(), kick_signal());
    }
}

fn stop_all(stop: &AtomicBool, threads: Vec<thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for t in threads {
        while !t.is_finished() {
            kick(&t);
            thread::sleep(Duration::from_millis(1));
        }
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Debug, thiserror::Error)]
    #[error("fake failure")]
    struct FakeErr;

    struct FakeVcpu {
        idx: u32,
        runs: Arc<AtomicU32>,
        stop_after: Option<u32>,
    }
    impl PlatformVcpu for FakeVcpu {
        type Error = FakeErr;
        fn run(&mut self, mmio: &Bus) -> Result<VcpuExit, FakeErr> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst);
            let mut b = [0u8; 1];
            mmio.read(0, &mut b);
            match self.stop_after {
                Some(k) if self.idx == 1 && n >= k => Ok(VcpuExit::Stop(GuestExit::PowerOff)),
                _ => {
                    thread::sleep(Duration::from_millis(1));
                    Ok(VcpuExit::Continue)
                }
            }
        }
        fn describe(&mut self) -> String {
            DESCRIBED.fetch_add(1, Ordering::SeqCst);
            format!("fake vcpu {}", self.idx)
        }
    }
    static DESCRIBED: AtomicU32 = AtomicU32::new(0);
    /// The fake platform's settings are global: its tests take turns.
    static FAKE_TESTS: Mutex<()> = Mutex::new(());
    struct Fake;
    static RUNS: std::sync::OnceLock<Arc<AtomicU32>> = std::sync::OnceLock::new();
    static STOP_AFTER: std::sync::Mutex<Option<u32>> = std::sync::Mutex::new(None);
    impl Platform for Fake {
        const ARCH: &'static str = "fake";
        type Vcpu = FakeVcpu;
        type Error = FakeErr;
        fn build(
            c: &VmConfig,
            _: &mut Bus,
            _: Vec<Box<dyn VirtioDevice>>,
        ) -> Result<(Self, Vec<FakeVcpu>), FakeErr> {
            let runs = RUNS.get_or_init(Default::default).clone();
            let stop_after = *STOP_AFTER.lock().unwrap();
            Ok((
                Fake,
                (0..c.cpus)
                    .map(|idx| FakeVcpu {
                        idx,
                        runs: runs.clone(),
                        stop_after,
                    })
                    .collect(),
            ))
        }
    }

    #[test]
    fn first_stop_wins_and_external_stop_works() {
        let _turn = FAKE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let mut cfg = VmConfig::new("/nonexistent");
        cfg.cpus = 3;
        *STOP_AFTER.lock().unwrap() = Some(5);
        let r = run::<Fake>(&cfg, Bus::new(), Vec::new(), |_| {}).unwrap();
        assert_eq!(r, GuestExit::PowerOff);

        *STOP_AFTER.lock().unwrap() = None;
        let r = run::<Fake>(&cfg, Bus::new(), Vec::new(), |s| {
            s.stop(GuestExit::Signalled(15))
        })
        .unwrap();
        assert_eq!(r, GuestExit::Signalled(15));
    }

    #[test]
    fn a_state_dump_reaches_every_vcpu_and_the_vm_goes_on() {
        let _turn = FAKE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let mut cfg = VmConfig::new("/nonexistent");
        cfg.cpus = 3;
        *STOP_AFTER.lock().unwrap() = None;
        let before = DESCRIBED.load(Ordering::SeqCst);
        let r = run::<Fake>(&cfg, Bus::new(), Vec::new(), |h| {
            thread::spawn(move || {
                h.dump_state();
                h.dump_state();
                // The runner handles events in order: both dumps are done
                // (each waits for every vCPU) before the stop is seen.
                h.stop(GuestExit::PowerOff);
            });
        })
        .unwrap();
        assert_eq!(r, GuestExit::PowerOff);
        assert_eq!(DESCRIBED.load(Ordering::SeqCst) - before, 6);
    }

    struct PanicVcpu;
    impl PlatformVcpu for PanicVcpu {
        type Error = FakeErr;
        fn run(&mut self, _: &Bus) -> Result<VcpuExit, FakeErr> {
            panic!("vcpu bug (expected by this test)");
        }
    }
    struct PanicPlatform;
    impl Platform for PanicPlatform {
        const ARCH: &'static str = "fake";
        type Vcpu = PanicVcpu;
        type Error = FakeErr;
        fn build(
            c: &VmConfig,
            _: &mut Bus,
            _: Vec<Box<dyn VirtioDevice>>,
        ) -> Result<(Self, Vec<PanicVcpu>), FakeErr> {
            Ok((PanicPlatform, (0..c.cpus).map(|_| PanicVcpu).collect()))
        }
    }

    #[test]
    fn vcpu_threads_that_die_silently_end_the_run_even_with_a_live_stop_sender() {
        let mut cfg = VmConfig::new("/nonexistent");
        cfg.cpus = 2;
        let kept = std::sync::Mutex::new(None);
        let r = run::<PanicPlatform>(&cfg, Bus::new(), Vec::new(), |s| {
            *kept.lock().unwrap() = Some(s);
        })
        .unwrap();
        assert!(matches!(r, GuestExit::Crash(_)), "{r:?}");
        // A stop after the run ended is harmless.
        kept.lock()
            .unwrap()
            .take()
            .unwrap()
            .stop(GuestExit::PowerOff);
    }
}

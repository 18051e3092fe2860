//! `zvisor run`: boot a microVM with its console on this terminal.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked in every thread and collected by
//! one thread with `sigwait`, which stops the VM through the runner's
//! [`VmHandle`](zvisor_vmm::runner::VmHandle) (or, while the VM is still
//! being built, ends the process); the exit code is then 128 + the signal.
//! SIGUSR1 logs every vCPU's state (registers, run state, exit counts) to
//! stderr and lets the VM go on: for a guest that seems to hang. When stdin is a terminal it is switched to raw mode
//! (so Ctrl-C reaches the guest) and restored on every way out.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Args;
use zvisor_arch::HostPlatform;
use zvisor_vmm::bus::Bus;
use zvisor_vmm::config::ConsoleMode;
use zvisor_vmm::exit::code;
use zvisor_vmm::runner::VmHandle;
use zvisor_vmm::{GuestExit, MemorySize, Platform, VmConfig};

/// Arguments of `zvisor run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Guest kernel: bzImage or ELF vmlinux (x86_64), Image (aarch64), image (s390x).
    #[arg(long)]
    kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest RAM, e.g. 512M or 1G.
    #[arg(long, default_value = "128M")]
    memory: String,
    /// KVM device node.
    #[arg(long, default_value = "/dev/kvm")]
    kvm: PathBuf,
    /// virtio-blk disk: path=FILE[,readonly=on|off][,serial=ID]. Repeatable;
    /// the first is /dev/vda (use root=/dev/vda in --cmdline to boot from it).
    #[arg(long, value_name = "OPTIONS")]
    disk: Vec<String>,
    /// virtio-net NIC: tap=NAME[,mac=MAC] or fd=N[,mac=MAC]. Repeatable.
    #[arg(long, value_name = "OPTIONS")]
    net: Vec<String>,
    /// virtio-vsock: cid=N,socket=PATH (host side: Firecracker's CONNECT protocol).
    #[arg(long, value_name = "OPTIONS")]
    vsock: Option<String>,
    /// Guest console: serial (default; ttyS0) or virtio (hvc0 on stdin/stdout).
    #[arg(long, value_name = "serial|virtio")]
    console: Option<String>,
    /// Host<->guest byte channel on virtio-console: socket=PATH (zvisor
    /// listens there, one client at a time) or file=PATH (guest output
    /// only), optionally name=NAME. Unnamed: hvcN in the guest (after hvc0
    /// with --console virtio; output is dropped while no client is
    /// connected). Named: a port of one multiport device, found in the guest
    /// under /sys/class/virtio-ports/*/name. Repeatable.
    #[arg(long, value_name = "OPTIONS")]
    channel: Vec<String>,
    /// virtio-rng entropy device (/dev/hwrng in the guest).
    #[arg(long)]
    rng: bool,
}

/// Runs a VM and returns the process exit code.
pub fn main(args: RunArgs) -> i32 {
    match run(args) {
        Ok(exit) => {
            let c = exit.exit_code();
            if c != 0 {
                eprintln!("zvisor: {exit}");
            }
            c
        }
        Err(e) => {
            eprintln!("zvisor: error: {e:#}");
            code::VMM_ERROR
        }
    }
}

/// Signals the signal thread waits for: SIGINT, SIGTERM and SIGHUP stop
/// the VM, SIGUSR1 asks for a state dump.
const WAITED_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1];

fn waited_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in WAITED_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the waited-for signals in this thread and every thread it starts later.
fn block_stop_signals() -> Result<()> {
    let set = waited_sigset();
    // SAFETY: `set` is a valid, initialized signal set.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        bail!(
            "cannot block signals: {}",
            std::io::Error::from_raw_os_error(r)
        );
    }
    Ok(())
}

/// Where the signal thread sends its stop once the VM runs.
type StopSlot = Arc<Mutex<Option<VmHandle>>>;

/// Waits for stop signals on its own thread. While the VM is being built
/// (the terminal is not raw yet) a signal ends the process at once, after
/// removing the listening `sockets`; once the VM runs it stops the VM
/// through `slot` (and the sockets go with the normal way out).
fn spawn_signal_waiter(slot: StopSlot, sockets: Vec<PathBuf>) {
    let r = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = waited_sigset();
            loop {
                let mut sig = 0;
                // SAFETY: `set` is valid and `sig` is a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    return;
                }
                match &*slot.lock().unwrap_or_else(|p| p.into_inner()) {
                    Some(vm) if sig == libc::SIGUSR1 => vm.dump_state(),
                    None if sig == libc::SIGUSR1 => {}
                    Some(vm) => vm.stop(GuestExit::Signalled(sig)),
                    None => {
                        for p in &sockets {
                            let _ = std::fs::remove_file(p);
                        }
                        eprintln!("zvisor: {}", GuestExit::Signalled(sig));
                        std::process::exit(code::SIGNAL_BASE + sig);
                    }
                }
            }
        });
    if let Err(e) = r {
        tracing::warn!("no signal thread, SIGINT/SIGTERM will not stop the VM cleanly: {e}");
    }
}

/// Raw mode on stdin while the VM runs; the saved settings come back on drop.
struct RawTerminal(libc::termios);

impl RawTerminal {
    /// Switches stdin to raw mode if it is a terminal.
    fn enter() -> Option<RawTerminal> {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with valid termios
        // pointers; on failure nothing was changed.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawTerminal(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores settings read from the same fd.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}

fn run(args: RunArgs) -> Result<GuestExit> {
    if args.cpus == 0 {
        bail!("--cpus must be at least 1");
    }
    let memory: MemorySize = args.memory.parse().context("--memory")?;
    let mut cfg = VmConfig::new(args.kernel);
    cfg.initrd = args.initrd;
    cfg.cmdline = args.cmdline;
    cfg.cpus = args.cpus;
    cfg.memory = memory;
    cfg.kvm_path = args.kvm;
    // Blocked before any socket exists, so a signal cannot leave one behind.
    block_stop_signals()?;
    let devices = crate::devices::open(&crate::devices::DeviceArgs {
        disks: args.disk,
        nets: args.net,
        vsock: args.vsock,
        console: args.console,
        channels: args.channel,
        rng: args.rng,
    })?;
    if devices.virtio_console {
        cfg.console = ConsoleMode::Off;
    }
    let sockets = devices.socket;
    let slot = StopSlot::default();
    spawn_signal_waiter(slot.clone(), sockets.paths());
    let mut terminal = None;
    let exit = zvisor_vmm::runner::run::<HostPlatform>(&cfg, Bus::new(), devices.devices, |stop| {
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
        terminal = RawTerminal::enter();
    });
    drop(terminal);
    let exit = exit.with_context(|| format!("{} VM", HostPlatform::ARCH))?;
    Ok(exit)
}

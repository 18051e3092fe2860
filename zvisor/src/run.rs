//! `zvisor run`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use zvisor_arch::HostPlatform;
use zvisor_vmm::bus::Bus;
use zvisor_vmm::exit::code;
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
    let exit = zvisor_vmm::runner::run::<HostPlatform>(&cfg, Bus::new(), |_stop| {})
        .with_context(|| format!("{} VM", HostPlatform::ARCH))?;
    Ok(exit)
}

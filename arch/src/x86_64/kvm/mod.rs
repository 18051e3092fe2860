//! KVM glue for x86_64: builds the VM (memory, irqchip, PIT, devices,
//! kernel, boot structures, vCPUs) and runs vCPUs.

mod load;
mod serial;
mod vcpu;
mod virtio;

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use tracing::{debug, warn};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use zvisor_vmm::bus::Bus;
use zvisor_vmm::memory::GuestMemory;
use zvisor_vmm::virtio::VirtioDevice;
use zvisor_vmm::{MemorySize, Platform, VmConfig};

use super::devices::{AcpiPm, ExitLatch, PvPanic, I8042};
use super::layout::{self, MemoryLayout};
use super::{acpi, kernel};
use vcpu::GuestCpuid;
pub use vcpu::X86Vcpu;

/// Errors of the x86_64 backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The KVM device could not be opened.
    #[error("cannot open {0}: {1}")]
    OpenKvm(PathBuf, std::io::Error),
    /// The path opened but is not KVM.
    #[error("{0} is not a KVM device (KVM_GET_API_VERSION failed)")]
    NotKvm(PathBuf),
    /// KVM speaks another API.
    #[error("{0}: unsupported KVM API version {1} (need 12)")]
    KvmApi(PathBuf, i32),
    /// More vCPUs than KVM allows.
    #[error("--cpus {0} exceeds this host's KVM limit of {1} vCPUs (KVM_CAP_MAX_VCPUS)")]
    TooManyCpus(u32, usize),
    /// More vCPUs than the MADT can hold.
    #[error("--cpus {0} is more than the {max} vCPUs zvisor can describe to an x86_64 guest", max = layout::MAX_VCPUS)]
    TooManyApicIds(u32),
    /// The memory size cannot be laid out.
    #[error("--memory {0}: {1}")]
    Memory(MemorySize, layout::LayoutError),
    /// The kernel file cannot be opened.
    #[error("cannot open kernel {0}: {1}")]
    OpenKernel(PathBuf, std::io::Error),
    /// The kernel file is not a bootable kernel.
    #[error("kernel {0}: {1}")]
    BadKernel(PathBuf, kernel::KernelError),
    /// The kernel does not fit.
    #[error("kernel {0} needs {1} MiB of guest RAM below 3 GiB, but --memory is {2}")]
    KernelTooBig(PathBuf, u64, MemorySize),
    /// linux-loader refused the kernel.
    #[error("cannot load kernel {0}: {1}")]
    LoadKernel(PathBuf, linux_loader::loader::Error),
    /// The command line is too long.
    #[error("--cmdline is {0} bytes; this kernel accepts at most {1}")]
    CmdlineTooLong(usize, usize),
    /// The command line has a NUL byte.
    #[error("--cmdline contains a NUL byte")]
    CmdlineNul,
    /// The initrd file cannot be opened or read.
    #[error("cannot read initrd {0}: {1}")]
    Initrd(PathBuf, std::io::Error),
    /// The initrd does not fit.
    #[error("initrd {0} ({1} bytes) does not fit in guest memory after the kernel (--memory {2})")]
    InitrdTooBig(PathBuf, u64, MemorySize),
    /// ACPI table construction failed.
    #[error("ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    /// Guest memory could not be mapped.
    #[error(transparent)]
    GuestMemory(#[from] zvisor_vmm::memory::MemoryError),
    /// Writing boot structures into guest memory failed.
    #[error("cannot write {0} into guest memory: {1}")]
    GuestWrite(&'static str, vm_memory::GuestMemoryError),
    /// A KVM ioctl failed.
    #[error("KVM {0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// An eventfd could not be created.
    #[error("cannot create eventfd: {0}")]
    EventFd(std::io::Error),
    /// Registering a device on the port I/O or MMIO bus failed.
    #[error("device bus: {0}")]
    Bus(#[from] zvisor_vmm::bus::BusError),
    /// More virtio devices than free interrupt lines.
    #[error("{0} virtio devices given; x86_64 has room for at most {max}", max = layout::MAX_VIRTIO_DEVICES)]
    TooManyDevices(usize),
}

/// The x86_64 KVM backend.
pub struct X86Platform {
    _vm: Arc<VmFd>,
    _mem: GuestMemory,
}

pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm(what, e)
}

/// Opens the KVM device and checks it really is one.
pub fn open_kvm(path: &Path) -> Result<Kvm, Error> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::OpenKvm(
            path.into(),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let kvm = Kvm::new_with_path(&c)
        .map_err(|e| Error::OpenKvm(path.into(), std::io::Error::from_raw_os_error(e.errno())))?;
    match kvm.get_api_version() {
        12 => Ok(kvm),
        v if v < 0 => Err(Error::NotKvm(path.into())),
        v => Err(Error::KvmApi(path.into(), v)),
    }
}

impl Platform for X86Platform {
    const ARCH: &'static str = "x86_64";
    type Vcpu = X86Vcpu;
    type Error = Error;

    fn build(
        config: &VmConfig,
        mmio: &mut Bus,
        devices: Vec<Box<dyn VirtioDevice>>,
    ) -> Result<(Self, Vec<X86Vcpu>), Error> {
        // Check the user's files first, then the host.
        if devices.len() > layout::MAX_VIRTIO_DEVICES as usize {
            return Err(Error::TooManyDevices(devices.len()));
        }
        let mem_layout =
            MemoryLayout::new(config.memory.0).map_err(|e| Error::Memory(config.memory, e))?;

        let mut kfile =
            File::open(&config.kernel).map_err(|e| Error::OpenKernel(config.kernel.clone(), e))?;
        let info =
            kernel::inspect(&mut kfile).map_err(|e| Error::BadKernel(config.kernel.clone(), e))?;
        if info.needs_end() > mem_layout.low_end() {
            return Err(Error::KernelTooBig(
                config.kernel.clone(),
                info.needs_end().div_ceil(1 << 20),
                config.memory,
            ));
        }
        let initrd = match &config.initrd {
            Some(p) => {
                let f = File::open(p).map_err(|e| Error::Initrd(p.clone(), e))?;
                let len = f.metadata().map_err(|e| Error::Initrd(p.clone(), e))?.len();
                Some((p.clone(), f, len))
            }
            None => None,
        };

        load::check_cmdline(config, &info)?;

        let kvm = open_kvm(&config.kvm_path)?;
        let max = kvm.get_max_vcpus();
        if config.cpus as usize > max {
            return Err(Error::TooManyCpus(config.cpus, max));
        }
        if config.cpus > layout::MAX_VCPUS {
            return Err(Error::TooManyApicIds(config.cpus));
        }
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        if let Err(e) = vm.set_tss_address(layout::KVM_TSS_ADDR as usize) {
            warn!("KVM_SET_TSS_ADDR failed, continuing: {e}");
        }
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        // KVM's in-kernel PIT, as Firecracker and QEMU provide it: guests
        // booted without ACPI (acpi=off) or without kvmclock calibrate their
        // timers with it. Linux on our hardware-reduced FADT does not use it;
        // its only cost is KVM's PIT kthread at teardown (docs/x86_64.md).
        let pit = kvm_bindings::kvm_pit_config {
            flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let regions: Vec<_> = mem_layout
            .regions
            .iter()
            .map(|&(a, s)| (vm_memory::GuestAddress(a), s as usize))
            .collect();
        let mem = zvisor_vmm::memory::create(&regions)?;
        for (slot, r) in mem.iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
            };
            // SAFETY: the host range belongs to `mem`, which the platform keeps
            // alive for as long as the VM fd exists.
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }

        let virtio = virtio::attach(&vm, &mem, mmio, devices)?;
        let entry = load::load(config, &mem, &mem_layout, &info, &mut kfile, initrd, virtio)?;

        // Devices on the port I/O bus.
        let latch = Arc::new(ExitLatch::default());
        let mut pio = Bus::new();
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
        vm.register_irqfd(&irq, layout::COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let serial = serial::SerialDevice::new(irq, config.console);
        let serial = Arc::new(Mutex::new(serial));
        pio.insert(u64::from(layout::COM1_PORT), 8, serial.clone())?;
        pio.insert(
            u64::from(I8042::BASE),
            I8042::LEN,
            Arc::new(Mutex::new(I8042::new(latch.clone()))),
        )?;
        pio.insert(
            u64::from(layout::PVPANIC_PORT),
            1,
            Arc::new(Mutex::new(PvPanic::new(latch.clone()))),
        )?;
        pio.insert(
            u64::from(layout::SLEEP_CONTROL_PORT),
            AcpiPm::LEN,
            Arc::new(Mutex::new(AcpiPm::new(latch.clone()))),
        )?;

        let pio = Arc::new(pio);
        let supported = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let guest_cpuid = GuestCpuid::new(&supported, config.cpus);
        let vm = Arc::new(vm);
        let mut vcpus = Vec::with_capacity(config.cpus as usize);
        for id in 0..config.cpus {
            vcpus.push(X86Vcpu::new(
                &vm,
                id,
                &guest_cpuid,
                (id == 0).then_some(&entry),
                pio.clone(),
                latch.clone(),
            )?);
        }
        // Last, so a build that fails leaves no thread holding stdin.
        serial::spawn_stdin_reader(serial, config.console);
        debug!(cpus = config.cpus, memory = %config.memory, "x86_64 VM built");
        Ok((X86Platform { _vm: vm, _mem: mem }, vcpus))
    }
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Entry {
    /// 64-bit long mode at `rip`, boot_params in rsi.
    Long(u64),
    /// PVH: 32-bit protected mode at `rip`, hvm_start_info in ebx.
    Pvh(u64),
}

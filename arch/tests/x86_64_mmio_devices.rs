//! The virtio-mmio hook of the x86_64 backend, on this host's /dev/kvm:
//! devices listed in `VmConfig::mmio_devices` appear in the guest's DSDT
//! (as `LNRO0005`), and guest accesses to their windows reach the devices
//! on the MMIO bus. The guest is the tiny test guest (`guest/tiny`).
#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use vmm_sys_util::eventfd::EventFd;
use zvisor_arch::x86_64::kvm::X86Platform;
use zvisor_vmm::bus::{Bus, BusDevice};
use zvisor_vmm::config::{ConsoleMode, MmioDeviceInfo};
use zvisor_vmm::{GuestExit, MemorySize, Platform, VmConfig};

const MAGIC: u32 = 0x7472_6976; // "virt"

fn kvm_usable(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test}: /dev/kvm is not usable: {e}");
            false
        }
    }
}

fn tiny(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-arch");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/tiny/build.sh");
        let st = Command::new("sh")
            .arg(script)
            .arg(&out)
            .status()
            .expect("build.sh");
        assert!(st.success(), "guest/tiny/build.sh failed");
        out
    })
    .join(name)
}

#[derive(Default)]
struct FakeVirtio {
    writes: Vec<(u64, Vec<u8>)>,
}

impl BusDevice for FakeVirtio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&MAGIC.to_le_bytes());
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, data.to_vec()));
    }
}

fn config(kernel: &str, devices: Vec<MmioDeviceInfo>) -> VmConfig {
    let mut cfg = VmConfig::new(tiny(kernel));
    cfg.cmdline = "tiny.action=mmio".into();
    cfg.memory = MemorySize(64 << 20);
    cfg.console = ConsoleMode::Off;
    cfg.mmio_devices = devices;
    cfg
}

fn slot(i: u32) -> MmioDeviceInfo {
    let (base, size, irq) = X86Platform::mmio_slot(i).expect("slot");
    MmioDeviceInfo {
        base,
        size,
        irq,
        irq_fd: Some(Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
    }
}

#[test]
fn guest_finds_and_reaches_virtio_mmio_devices() {
    if !kvm_usable("guest_finds_and_reaches_virtio_mmio_devices") {
        return;
    }
    for kernel in ["tiny.elf", "tiny-pvh.elf"] {
        let devices = vec![slot(0), slot(1)];
        let mut bus = Bus::new();
        let first = Arc::new(Mutex::new(FakeVirtio::default()));
        let second = Arc::new(Mutex::new(FakeVirtio::default()));
        bus.insert(devices[0].base, devices[0].size, first.clone())
            .unwrap();
        bus.insert(devices[1].base, devices[1].size, second.clone())
            .unwrap();
        let exit =
            zvisor_vmm::runner::run::<X86Platform>(&config(kernel, devices), bus, |_| {}).unwrap();
        assert_eq!(exit, GuestExit::PowerOff, "{kernel}");
        // The guest found the first device through the DSDT, read its magic
        // and wrote it back at 0x70; the second device was left alone.
        assert_eq!(
            first.lock().unwrap().writes,
            vec![(0x70, MAGIC.to_le_bytes().to_vec())],
            "{kernel}"
        );
        assert!(second.lock().unwrap().writes.is_empty());
    }
}

#[test]
fn bad_device_lists_are_refused() {
    if !kvm_usable("bad_device_lists_are_refused") {
        return;
    }
    let mut d = slot(0);
    d.irq = 4; // the serial port's
    let e =
        zvisor_vmm::runner::run::<X86Platform>(&config("tiny.elf", vec![d]), Bus::new(), |_| {})
            .map(|_| ())
            .unwrap_err();
    assert!(e.to_string().contains("uses IRQ 4"), "{e}");
    let (a, b) = (slot(0), slot(0));
    let e =
        zvisor_vmm::runner::run::<X86Platform>(&config("tiny.elf", vec![a, b]), Bus::new(), |_| {})
            .map(|_| ())
            .unwrap_err();
    assert!(
        e.to_string().contains("IRQ") || e.to_string().contains("overlaps"),
        "{e}"
    );
}

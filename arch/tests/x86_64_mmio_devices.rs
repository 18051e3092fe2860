//! The virtio-mmio wiring of the x86_64 backend, on this host's /dev/kvm:
//! the virtio devices given to `Platform::build` appear in the guest's DSDT
//! (as `LNRO0005`, in list order), and the guest reaches them through their
//! MMIO windows and queue notifications. The guest is the tiny test guest
//! (`guest/tiny`) running its own virtio-blk driver (`tiny.blk`) against
//! the first device the DSDT lists; the devices are the real virtio-blk and
//! virtio-rng models of `zvisor-vmm`, each wrapped to record what the
//! transport asked of it.
#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use zvisor_arch::x86_64::kvm::X86Platform;
use zvisor_arch::x86_64::layout;
use zvisor_vmm::bus::Bus;
use zvisor_vmm::config::ConsoleMode;
use zvisor_vmm::memory::GuestMemory;
use zvisor_vmm::virtio::block::Block;
use zvisor_vmm::virtio::rng::Rng;
use zvisor_vmm::virtio::{
    features, types, ActivateError, ActiveQueue, VirtioDevice, VirtioInterrupt,
};
use zvisor_vmm::{GuestExit, MemorySize, VmConfig};

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

/// What the transport asked of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    AckFeatures(u64),
    Activate(usize),
}

type Calls = Arc<Mutex<Vec<Call>>>;

/// A real device model that records the transport's calls into it.
struct Recorder {
    inner: Box<dyn VirtioDevice>,
    calls: Calls,
}

fn recorded(inner: impl VirtioDevice + 'static) -> (Box<dyn VirtioDevice>, Calls) {
    let calls = Calls::default();
    let dev = Recorder {
        inner: Box::new(inner),
        calls: calls.clone(),
    };
    (Box::new(dev), calls)
}

impl VirtioDevice for Recorder {
    fn device_type(&self) -> u32 {
        self.inner.device_type()
    }
    fn queue_max_sizes(&self) -> &[u16] {
        self.inner.queue_max_sizes()
    }
    fn features(&self) -> u64 {
        self.inner.features()
    }
    fn ack_features(&mut self, value: u64) {
        self.calls.lock().unwrap().push(Call::AckFeatures(value));
        self.inner.ack_features(value)
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.inner.read_config(offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.inner.write_config(offset, data)
    }
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<ActiveQueue>,
    ) -> Result<(), ActivateError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Activate(queues.len()));
        self.inner.activate(mem, interrupt, queues)
    }
    fn reset(&mut self) -> bool {
        self.inner.reset()
    }
}

const SECTOR_ONE: &[u8; 32] = b"HOST SECTOR ONE 0123456789abcdef";

/// A 16-sector raw image with a known sector 1 and a marker in sector 2.
fn image(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut b = vec![0u8; 16 * 512];
    b[512..512 + 32].copy_from_slice(SECTOR_ONE);
    b[1024..1024 + 8].copy_from_slice(b"OLDOLDOL");
    std::fs::write(&p, &b).unwrap();
    p
}

fn block(img: &Path) -> Block {
    let cfg = zvisor_vmm::virtio::config::parse_disk(&format!("path={}", img.display()))
        .expect("disk option");
    Block::new(&cfg).expect("open image")
}

fn config(kernel: &str, word: &str) -> VmConfig {
    let mut cfg = VmConfig::new(tiny(kernel));
    cfg.cmdline = format!("tiny.blk tiny.blk.write={word}");
    cfg.memory = MemorySize(64 << 20);
    cfg.console = ConsoleMode::Off;
    cfg
}

fn run(cfg: &VmConfig, devices: Vec<Box<dyn VirtioDevice>>) -> GuestExit {
    zvisor_vmm::runner::run::<X86Platform>(cfg, Bus::new(), devices, |_| {}).unwrap()
}

/// Sector 2 of `img` holds exactly `word` (zero padded).
fn sector_two_is(img: &Path, word: &str) -> bool {
    let after = std::fs::read(img).unwrap();
    let mut want = vec![0u8; 512];
    want[..word.len()].copy_from_slice(word.as_bytes());
    after[1024..1536] == want[..] && &after[512..544] == SECTOR_ONE
}

/// The guest negotiated features with the device and started its queue.
fn driven(calls: &Calls) -> bool {
    let c = calls.lock().unwrap();
    matches!(c.as_slice(), [Call::AckFeatures(f), Call::Activate(1)] if f & features::VERSION_1 != 0)
}

#[test]
fn guest_finds_and_drives_the_first_device() {
    if !kvm_usable("guest_finds_and_drives_the_first_device") {
        return;
    }
    for (kernel, word) in [
        ("tiny.elf", "ARCH-ELF64"),
        ("tiny-pvh.elf", "ARCH-PVH"),
        ("tiny.bzImage", "ARCH-BZIMAGE"),
    ] {
        let img = image(&format!("arch-{kernel}.img"));
        let (blk, blk_calls) = recorded(block(&img));
        let (rng, rng_calls) = recorded(Rng::new());
        assert_eq!(blk.device_type(), types::BLOCK);
        let exit = run(&config(kernel, word), vec![blk, rng]);
        assert_eq!(exit, GuestExit::PowerOff, "{kernel}");
        // The guest found the disk as the first LNRO0005 device in the DSDT,
        // negotiated VERSION_1, started its queue, and its write request
        // (notified through the queue's ioeventfd) reached the image.
        assert!(driven(&blk_calls), "{kernel}: {:?}", blk_calls.lock());
        assert!(sector_two_is(&img, word), "{kernel}: sector 2");
        // The second device (slot 1) was described but left alone.
        assert!(rng_calls.lock().unwrap().is_empty(), "{kernel}");
    }
}

/// The DSDT lists the devices in the order they were given: with the rng
/// first, the guest's block driver finds the rng and gives up.
#[test]
fn dsdt_order_is_the_device_list_order() {
    if !kvm_usable("dsdt_order_is_the_device_list_order") {
        return;
    }
    let img = image("arch-order.img");
    let (rng, rng_calls) = recorded(Rng::new());
    let (blk, blk_calls) = recorded(block(&img));
    let exit = run(&config("tiny.elf", "MUST-NOT-LAND"), vec![rng, blk]);
    assert_eq!(exit, GuestExit::PowerOff);
    assert!(blk_calls.lock().unwrap().is_empty());
    assert!(rng_calls.lock().unwrap().is_empty());
    assert!(sector_two_is(&img, "OLDOLDOL"), "the disk was not written");
}

/// All slots in use (the last one on the last IOAPIC pin) still boot, and
/// one device more is refused with a clear error before anything runs.
#[test]
fn device_count_limit() {
    if !kvm_usable("device_count_limit") {
        return;
    }
    let max = layout::MAX_VIRTIO_DEVICES as usize;
    let img = image("arch-max.img");
    let (blk, blk_calls) = recorded(block(&img));
    let mut devices = vec![blk];
    let mut others = Vec::new();
    for _ in 1..max {
        let (rng, calls) = recorded(Rng::new());
        devices.push(rng);
        others.push(calls);
    }
    assert_eq!(devices.len(), 19);
    let exit = run(&config("tiny.elf", "ALL-SLOTS"), devices);
    assert_eq!(exit, GuestExit::PowerOff);
    assert!(driven(&blk_calls), "{:?}", blk_calls.lock());
    assert!(sector_two_is(&img, "ALL-SLOTS"));
    assert!(others.iter().all(|c| c.lock().unwrap().is_empty()));

    let devices: Vec<Box<dyn VirtioDevice>> = (0..=max)
        .map(|_| Box::new(Rng::new()) as Box<dyn VirtioDevice>)
        .collect();
    let e = zvisor_vmm::runner::run::<X86Platform>(
        &config("tiny.elf", "x"),
        Bus::new(),
        devices,
        |_| {},
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert_eq!(e, "20 virtio devices given; x86_64 has room for at most 19");
}

//! Boots Debian's kernel with `zvisor-init` directly under QEMU TCG (no
//! zvisor involved): checks the guest assets, the initramfs builder and the
//! init's marker/nproc/MemTotal logic on a real kernel, for each
//! architecture whose assets and QEMU are present. This is also the
//! stand-in for L2 when `zvisor run` cannot boot Linux yet.

use std::sync::Mutex;
use std::time::Duration;

use zvisor_mkinitramfs::{write_image_file, ImageSpec};
use zvisor_qemu_tests::binaries::{build_static, check_static};
use zvisor_qemu_tests::memory::{elf_load_size, memtotal_bounds_kib};
use zvisor_qemu_tests::qemu::QemuSpec;
use zvisor_qemu_tests::serial::{Kind, Transcript};
use zvisor_qemu_tests::{prerequisites, workdir, GuestArch};

/// TCG guests are CPU-bound: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Boots `arch`'s Debian kernel with zvisor-init; with `nested`, the
/// machine offers hardware virtualization and the guest must have /dev/kvm.
fn boot_direct(arch: GuestArch, cpus: u32, memory_mib: u64, nested: bool) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(k) = prerequisites(arch) else {
        return;
    };
    let bins = build_static(arch, &["zvisor-init"], false).expect("static build");
    let init = bins.join("zvisor-init");
    check_static(&init).expect("zvisor-init must be static");
    let dir = workdir(&format!(
        "tcg-direct-{}{}",
        arch.name(),
        if nested { "-nested" } else { "" }
    ));
    let initrd = dir.join("initrd.cpio");
    write_image_file(
        &ImageSpec {
            init: Some(init),
            ..Default::default()
        },
        &initrd,
    )
    .expect("initramfs");
    let tag = format!("tcg-{}", arch.name());
    let spec = QemuSpec {
        arch,
        nested,
        kernel: k.fast_kernel().to_path_buf(),
        initrd,
        append: format!("panic=-1 quiet zvisor.tag={tag}"),
        cpus,
        memory_mib,
        timeout: Duration::from_secs(180),
        log: Some(dir.join("console.log")),
        echo: false,
    };
    let run = spec.run().expect("qemu");
    let t = Transcript::parse(&run.output);
    let ctx = format!(
        "{} in {:?}; console in {}\n{}",
        arch.name(),
        run.elapsed,
        dir.join("console.log").display(),
        run.output
    );
    assert!(!run.timed_out, "timed out: {ctx}");
    assert_eq!(
        run.exit_code,
        Some(0),
        "QEMU exit (power-off expected): {}\n{ctx}",
        run.stderr
    );
    let ready = t
        .with(Kind::Ready, &tag)
        .next()
        .unwrap_or_else(|| panic!("no marker: {ctx}"));
    let r = t.report(&tag).unwrap_or_else(|| panic!("no report: {ctx}"));
    assert_eq!(r.num("nproc"), Some(u64::from(cpus)), "{ctx}");
    assert_eq!(r.get("arch"), Some(arch.name()), "{ctx}");
    if nested {
        assert_eq!(
            r.get("kvm"),
            Some("yes"),
            "no /dev/kvm with virtualization on: {ctx}"
        );
    }
    let image = k
        .vmlinux
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| elf_load_size(&b))
        .unwrap_or(64 << 20);
    let (lo, hi) = memtotal_bounds_kib(memory_mib, image);
    let mem = r.num("memtotal_kib").unwrap_or(0);
    assert!(
        (lo..=hi).contains(&mem),
        "MemTotal {mem} KiB outside {lo}..={hi}: {ctx}"
    );
    assert!(t.find(Kind::Done, &tag, "status", "ok").is_some(), "{ctx}");
    eprintln!(
        "{}: marker at guest uptime {} s, whole QEMU run {:.1} s, nproc={cpus}, MemTotal={mem} KiB of {memory_mib} MiB",
        arch.name(),
        ready.get("uptime_s").unwrap_or("?"),
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn x86_64_debian_kernel_and_init_under_tcg() {
    boot_direct(GuestArch::X86_64, 2, 512, false);
}

#[test]
fn aarch64_debian_kernel_and_init_under_tcg() {
    boot_direct(GuestArch::Aarch64, 2, 512, false);
}

#[test]
fn s390x_debian_kernel_and_init_under_tcg() {
    boot_direct(GuestArch::S390x, 2, 512, false);
}

/// The aarch64 shape of rung 2's L1: `-M virt,virtualization=on` boots
/// the kernel at EL2 and Debian's built-in KVM offers /dev/kvm. (An aarch64
/// L2 under zvisor waits for zvisor's aarch64 backend.)
#[test]
fn aarch64_l1_with_el2_offers_kvm() {
    boot_direct(GuestArch::Aarch64, 2, 1024, true);
}

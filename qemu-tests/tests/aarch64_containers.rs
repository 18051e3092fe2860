//! The aarch64 build of the OCI runtime's integration tests
//! (`containers/tests/*.rs`) runs inside Debian's arm64 kernel under
//! `qemu-system-aarch64 -M virt` TCG (no KVM), with zvisor-runc, the test
//! executables and busybox-static all for aarch64: the same plan as
//! `s390x_containers`, with both cgroup layouts.

use std::sync::Mutex;

use zvisor_qemu_tests::containers::CgroupLayout;
use zvisor_qemu_tests::GuestArch;

mod emulated;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn aarch64_runtime_tests_cgroup_v1_hybrid() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    emulated::run(GuestArch::Aarch64, CgroupLayout::V1Hybrid);
}

#[test]
fn aarch64_runtime_tests_cgroup_v2() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    emulated::run(GuestArch::Aarch64, CgroupLayout::V2);
}

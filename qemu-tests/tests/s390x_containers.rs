//! Issue 4: the s390x build of the OCI runtime's integration tests
//! (`containers/tests/*.rs`) runs inside an emulated z: Debian's s390x
//! kernel under `qemu-system-s390x` TCG (big-endian, no KVM), with
//! zvisor-runc, the test executables and busybox-static all built or taken
//! for s390x. Once with the CI host's hybrid cgroup layout (the runtime's
//! v1 path) and once with pure cgroup2 (its v2 path).

use std::sync::Mutex;

use zvisor_qemu_tests::containers::CgroupLayout;
use zvisor_qemu_tests::GuestArch;

mod emulated;

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn s390x_runtime_tests_cgroup_v1_hybrid() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    emulated::run(GuestArch::S390x, CgroupLayout::V1Hybrid);
}

#[test]
fn s390x_runtime_tests_cgroup_v2() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    emulated::run(GuestArch::S390x, CgroupLayout::V2);
}

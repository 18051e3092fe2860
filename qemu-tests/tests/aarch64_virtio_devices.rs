//! Issue 3: the zvisor-vmm integration tests (`vmm/tests/*.rs`, the virtio
//! device models driven in-process the way Linux's drivers drive them) run
//! inside Debian's arm64 kernel under `qemu-system-aarch64` TCG (no KVM),
//! built statically for aarch64: virtio-blk's io_uring engine (required, and
//! checked to have run), virtio-net on real taps (tun.ko loaded), vsock,
//! consoles and the hostile-driver tests on a real aarch64 kernel.

#[test]
fn aarch64_vmm_tests_in_emulated_guest() {
    zvisor_qemu_tests::vmmtests::run_and_check(zvisor_qemu_tests::GuestArch::Aarch64);
}

//! Issue 3: the zvisor-vmm integration tests (`vmm/tests/*.rs`, the virtio
//! device models driven in-process the way Linux's drivers drive them) run
//! inside Debian's s390x kernel under `qemu-system-s390x` TCG (no KVM),
//! built statically for s390x: virtio-blk's io_uring engine (required, and
//! checked to have run), virtio-net on real taps (tun.ko loaded), vsock,
//! consoles and the hostile-driver tests on a real s390x kernel.

#[test]
fn s390x_vmm_tests_in_emulated_guest() {
    zvisor_qemu_tests::vmmtests::run_and_check(zvisor_qemu_tests::GuestArch::S390x);
}

#!/usr/bin/env bash
# Stage "rung2": real Linux guests under QEMU.
#  - tcg_direct: Debian's x86_64, aarch64 and s390x kernels boot with
#    zvisor-init under plain QEMU TCG (assets, initramfs builder, init);
#  - x86_64_nested: an L1 Linux under QEMU TCG with nested SVM loads
#    kvm-amd and runs `zvisor run` for two L2 microVMs (1 vCPU/256 MiB,
#    2 vCPUs/512 MiB), each checked for its marker, nproc and MemTotal.
#  - x86_64_virtio: one more L1 (two virtio-pci disks from QEMU) runs four
#    L2s with Debian's virtio drivers: ext4 on virtio-blk (host e2fsck after),
#    a read-only disk, virtio-rng, hvc0, virtio-net TCP both ways (needs
#    e2fsprogs and busybox-static on the host).
#  - x86_64_rootdisk_multi: one more L1 (three virtio-pci disks) runs two
#    L2s: one boots from an ext4 disk as root=/dev/vda (a module-loading
#    initramfs switches root) with two more disks found by serial (one
#    read-only); one has two NICs, each tap in its own L1 netns, TCP both
#    ways through each (host e2fsck/debugfs after; same host tools).
#  - s390x_containers / aarch64_containers: the OCI runtime's integration
#    tests and zvisor-runc, built statically for s390x / aarch64, run inside
#    Debian's s390x / arm64 kernel under qemu-system TCG (emulated z, no
#    KVM), once with the hybrid cgroup layout and once with pure cgroup v2;
#    busybox-static of each arch comes from ci/assets.sh.
#  - s390x_virtio_devices / aarch64_virtio_devices: zvisor-vmm's in-process
#    virtio device tests (vmm/tests/*.rs), built statically for s390x /
#    aarch64, run inside Debian's s390x / arm64 kernel under qemu-system TCG
#    in one boot per arch (~25 s of QEMU each): io_uring is required there
#    (ZVISOR_REQUIRE_IO_URING=1) and checked to have served virtio-blk,
#    tun.ko is loaded so virtio_net's tap tests run; any skip fails.
#  - x86_64_channel: --channel socket/file and a named port with Debian's
#    virtio_console in L2 (64 KiB echo with sha256, reconnect).
#  - aarch64_fdt: Debian's arm64 kernel under QEMU virt TCG boots from
#    zvisor's FDT and finds virtio-blk/rng through our virtio_mmio nodes.
# Nested L1s boot with zvisor.kvm_pin=1 (their init holds an idle KVM VM, so
# no kernel text is live-patched around each L2: QEMU 7.2's TCG can freeze an
# L1 there) and a hung L1 is booted once more, with its CPUs' RIPs printed
# (docs/testing.md). x86_64_l2_soak is #[ignore]d: run it by hand.
# Missing assets or QEMU fail this stage (ZVISOR_REQUIRE_RUNG2=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
ci/assets.sh
export ZVISOR_REQUIRE_RUNG2=${ZVISOR_REQUIRE_RUNG2:-1}
# One test at a time: TCG guests are CPU-bound.
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test -p zvisor-qemu-tests --no-fail-fast -- --test-threads=1 --nocapture

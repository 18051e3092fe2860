#!/usr/bin/env bash
# Stage "rung2": real Linux guests under QEMU.
#  - tcg_direct: Debian's x86_64, aarch64 and s390x kernels boot with
#    zvisor-init under plain QEMU TCG (assets, initramfs builder, init);
#  - x86_64_nested: an L1 Linux under QEMU TCG with nested SVM loads
#    kvm-amd and runs `zvisor run` for two L2 microVMs (1 vCPU/256 MiB,
#    2 vCPUs/512 MiB), each checked for its marker, nproc and MemTotal.
# Missing assets or QEMU fail this stage (ZVISOR_REQUIRE_RUNG2=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
ci/assets.sh
export ZVISOR_REQUIRE_RUNG2=${ZVISOR_REQUIRE_RUNG2:-1}
# One test at a time: TCG guests are CPU-bound.
cargo test -p zvisor-qemu-tests -- --test-threads=1 --nocapture

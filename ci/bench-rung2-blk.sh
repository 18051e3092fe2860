#!/usr/bin/env bash
# Rung 2 virtio-blk benchmark (not a test): dd inside an L2 Debian guest
# under zvisor and under QEMU microvm (virtio-mmio), alternating, in the
# same nested L1 (QEMU TCG with nested SVM on the host).
#
#   ci/bench-rung2-blk.sh [ROUNDS]        (default 3; each round boots L2
#                                          once under each VMM)
#
# Prints one row per L2 boot, the medians and the zvisor/QEMU ratio; exits
# non-zero if any run broke or any data did not verify. Needs the x86_64
# kernel assets (ci/assets.sh x86_64), qemu-system-x86, e2fsprogs and
# busybox-static. Took 350-470 s for 5 rounds here (about 70 s per round
# plus the L1 boot; more with a cold static build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(uname -srm); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg); $(qemu-system-x86_64 --version | head -1)"
cargo build -q --release -p zvisor-qemu-tests --bin rung2-blk-bench
exec target/release/rung2-blk-bench --rounds "$ROUNDS"

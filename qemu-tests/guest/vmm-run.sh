# Runs one zvisor-vmm integration-test executable (argument: its name under
# /zvtest/bin), one test at a time with test output shown, so the host can
# parse every result and skip. ZVISOR_REQUIRE_IO_URING=1: virtio_blk must
# run its io_uring engine here (these kernels have io_uring).
export PATH=/zvtest/sbin:/bin:/sbin:/usr/bin:/usr/sbin
export TMPDIR=/tmp
export RUST_BACKTRACE=1
export ZVISOR_REQUIRE_IO_URING=1
name=${1:?usage: vmm-run.sh NAME}
cd /tmp
exec "/zvtest/bin/$name" --test-threads=1 --nocapture

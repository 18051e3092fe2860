# Runs one zvisor-vmm integration-test executable (first argument: its name
# under /zvtest/bin; second, optional: the directory for its temporary
# files, default /tmp, a tmpfs), one test at a time with test output
# shown, so the host can parse every result and skip. ZVISOR_REQUIRE_IO_URING=1: virtio_blk must
# run its io_uring engine here (these kernels have io_uring).
export PATH=/zvtest/sbin:/bin:/sbin:/usr/bin:/usr/sbin
export TMPDIR=${2:-/tmp}
export RUST_BACKTRACE=1
export ZVISOR_REQUIRE_IO_URING=1
name=${1:?usage: vmm-run.sh NAME}
cd "$TMPDIR"
echo "ZVTEST-INFO tmpdir=$TMPDIR fs=$(stat -f -c %T "$TMPDIR" 2>/dev/null || echo unknown)"
exec "/zvtest/bin/$name" --test-threads=1 --nocapture

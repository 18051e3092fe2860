# Runs one containers integration-test executable (argument: its name under
# /zvtest/bin) chrooted into the root that containers-setup.sh prepared,
# one test at a time, with test output shown so skips are visible.
# ZVISOR_REQUIRE_CLIENTS stays unset: podman and containerd are not here.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export ZVISOR_RUNC=/usr/bin/zvisor-runc
export TMPDIR=/tmp
export RUST_BACKTRACE=1
unset ZVISOR_REQUIRE_CLIENTS
exec chroot /newroot "/zvtest/bin/${1:?usage: containers-run.sh NAME}" --test-threads=1 --nocapture

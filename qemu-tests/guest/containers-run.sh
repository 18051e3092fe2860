# Runs one containers integration-test executable (argument: its name under
# /zvtest/bin) in the root that containers-setup.sh prepared, one test at a
# time, with test output shown so skips are visible. A private mount
# namespace gets /newroot moved over / and enters it (switch_root's way).
# ZVISOR_REQUIRE_CLIENTS stays unset: podman and containerd are not here.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export ZVISOR_RUNC=/usr/bin/zvisor-runc
export TMPDIR=/tmp
export RUST_BACKTRACE=1
unset ZVISOR_REQUIRE_CLIENTS
name=${1:?usage: containers-run.sh NAME}
exec unshare -m sh -c 'cd /newroot && mount --move . / && exec chroot . "$0" --test-threads=1 --nocapture' "/zvtest/bin/$name"

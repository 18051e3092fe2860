# Emulated z / arm64 (qemu-system TCG, no KVM): prepares the root in which
# the containers crate's integration tests (built for this architecture)
# run against zvisor-runc. Argument: the cgroup layout, `v1` (the hybrid
# layout of the CI host: one v1 hierarchy per controller, name=systemd and
# a v2 `unified` mount beside them) or `v2` (pure cgroup2, as a modern
# distro has it).
#
# The initramfs is the kernel's rootfs, where pivot_root(2) refuses to
# work. This prepares /newroot, a bind mount of it with its own /proc,
# /sys, /dev, /tmp and cgroups; containers-run.sh moves it over / in a
# private mount namespace (as switch_root does), so the runtime's
# pivot_root works as on a disk and the tests are not "chrooted" (which
# would make user namespaces fail with EPERM). The cgroup mounts stay here,
# in init's namespace, so v1 hierarchy ids stay the same for every run.
set -eu
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
layout=${1:?usage: containers-setup.sh v1|v2}
R=/newroot
mkdir -p $R
mount --bind / $R
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
C=$R/sys/fs/cgroup
case "$layout" in
v1)
    mount -t tmpfs -o mode=755 tmpfs $C
    # The CI host's order, so hierarchy ids match it (memory is 4).
    for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
        mkdir -p $C/$c
        mount -t cgroup -o $c cgroup $C/$c
    done
    mkdir -p $C/systemd $C/unified
    mount -t cgroup -o none,name=systemd cgroup $C/systemd
    mount -t cgroup2 cgroup2 $C/unified
    ;;
v2)
    mount -t cgroup2 cgroup2 $C
    echo "ZVTEST-INFO cgroup2_controllers=$(tr ' ' , <$C/cgroup.controllers)"
    ;;
*)
    echo "containers-setup.sh: unknown layout '$layout' (want v1 or v2)" >&2
    exit 2
    ;;
esac
echo "ZVTEST-INFO layout=$layout kernel_arch=$(cat /proc/sys/kernel/arch 2>/dev/null || echo none) machine=$(uname -m)"
echo "ZVTEST-INFO self_cgroup=$(tr '\n' ' ' </proc/self/cgroup | tr ' ' ,)"
echo "ZVTEST-INFO time_ns=$([ -e /proc/self/ns/time ] && echo yes || echo no) user_ns_max=$(cat /proc/sys/user/max_user_namespaces)"

# Emulated z / arm64 (qemu-system TCG, no KVM): prepares the guest in which
# the zvisor-vmm integration tests (built for this architecture) drive the
# virtio device models in-process: busybox applets, /dev/net/tun for
# virtio_net's taps (zvisor-init loaded tun.ko from /etc/zvisor/modules;
# devtmpfs normally creates the node), loopback up, the ext4 disk that
# QEMU gives the guest mounted at the argument (virtio_blk's second run
# keeps its images there), and the facts the host checks: whether tun and
# io_uring are usable, where ext4 is mounted.
set -eu
mnt=${1:?usage: vmm-setup.sh MOUNTPOINT}
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# The `ip` the tests call: busybox ip plus `neigh add` (see vmm-ip.sh).
chmod 755 /zvtest/sbin/ip
if [ ! -c /dev/net/tun ] && [ -r /sys/class/misc/tun/dev ]; then
    dev=$(cat /sys/class/misc/tun/dev)
    mkdir -p /dev/net
    mknod /dev/net/tun c "${dev%%:*}" "${dev##*:}"
fi
tun=no
[ -c /dev/net/tun ] && tun=yes
# Linux >= 6.6 has kernel.io_uring_disabled (0 = allowed); 6.1 has no such
# switch, so io_uring is on whenever the kernel is built with it.
iud=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent)
ip link set lo up
# The only virtio disk (virtio-blk-ccw on s390x, virtio-blk-pci on arm64).
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ext4=none
mkdir -p "$mnt"
if [ -b /dev/vda ] && mount -t ext4 /dev/vda "$mnt"; then ext4=/dev/vda; fi
echo "ZVTEST-INFO ext4=$ext4"
echo "ZVTEST-INFO machine=$(uname -m) kernel=$(uname -r) tun=$tun io_uring_disabled=$iud"
echo "ZVTEST-INFO tmp=$(stat -f -c %T /tmp 2>/dev/null || echo unknown)"

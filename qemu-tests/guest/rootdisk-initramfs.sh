#!/bin/busybox sh
# L2 /init for the root-disk boot (rung 2, virtio-blk as root). Debian's
# kernel builds virtio_mmio and virtio_blk as modules (ext4 is built in), so
# the kernel cannot mount root=/dev/vda by itself: this initramfs only loads
# the modules, mounts root= (rootfstype=, rw/ro from the command line) and
# switches to the disk's /sbin/init. Nothing else of it survives.
bb=/bin/busybox
fail() {
  echo "L2-INITRAMFS-ERROR $*"
  $bb sync
  $bb poweroff -f
}
$bb mount -t proc proc /proc || fail "mount /proc"
$bb mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
root=
fstype=ext4
mode=ro
for w in $($bb cat /proc/cmdline); do
  case "$w" in
    root=*) root=${w#root=} ;;
    rootfstype=*) fstype=${w#rootfstype=} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
  esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"
while read -r m; do
  $bb insmod "$m" || fail "insmod $m"
done < /etc/zvisor/modules
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1))
  [ $i -gt 200 ] && fail "$root did not appear"
  $bb sleep 0.1
done
$bb mkdir -p /newroot
$bb mount -t "$fstype" -o "$mode" "$root" /newroot || fail "mount $root"
[ -x /newroot/sbin/init ] || fail "no /sbin/init on $root"
echo "L2-INITRAMFS-SWITCH root=$root fstype=$fstype mode=$mode"
$bb umount /proc
$bb umount /dev
exec $bb switch_root /newroot /sbin/init

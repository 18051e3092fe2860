# L1 (rung 2, virtio-blk as root): QEMU gave L1 three virtio-pci disks with
# serials l1-root, l1-data, l1-ro; find them by serial and run an L2 that
# boots from the first with root=/dev/vda (a module-loading initramfs only).
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
dev() {
  for d in /sys/block/vd*; do
    if [ "$(cat "$d/serial" 2>/dev/null)" = "$1" ]; then
      echo "/dev/${d##*/}"
      return 0
    fi
  done
  echo "L1-NO-DISK-WITH-SERIAL $1" >&2
  return 1
}
root=$(dev l1-root) || exit 1
data=$(dev l1-data) || exit 1
ro=$(dev l1-ro) || exit 1
echo "L1-DISKS root=$root data=$data ro=$ro"
exec /bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-root-initrd --memory 256M \
  --disk "path=$root,serial=zv-root" \
  --disk "path=$data,serial=zv-data" \
  --disk "path=$ro,readonly=on,serial=zv-ro" \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet root=/dev/vda rootfstype=ext4 rw zvisor.tag=rootdisk zvisor.report=0 zvisor.conf=/etc/zvisor/root.conf"

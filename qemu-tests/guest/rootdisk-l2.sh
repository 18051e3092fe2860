# L2 (rung 2, virtio-blk as root): runs from the ext4 root disk the host built
# (zvisor-init is its /sbin/init). Three zvisor disks, found by their serial
# (virtio-blk GET_ID): zv-root (/), zv-data (read-write, raw), zv-ro
# (read-only, raw). Busybox's applets go to /tmp/bin, not into the root fs.
set -e
/bin/busybox mkdir -p /tmp/bin
/bin/busybox --install -s /tmp/bin
export PATH=/tmp/bin
by_serial() {
  for d in /sys/block/vd*; do
    if [ "$(cat "$d/serial")" = "$1" ]; then
      echo "${d##*/}"
      return 0
    fi
  done
  echo "L2-NO-DISK-WITH-SERIAL $1" >&2
  return 1
}
for d in /sys/block/vd*; do
  echo "L2-DISK ${d##*/} serial=$(cat "$d/serial") ro=$(cat "$d/ro") sectors=$(cat "$d/size")"
done
root=$(by_serial zv-root)
data=$(by_serial zv-data)
ro=$(by_serial zv-ro)
# What is mounted on /, and is it the disk whose serial is zv-root?
grep ' / ' /proc/mounts | tail -n 1 | while read -r dev mnt type opts rest; do
  echo "L2-ROOT-MOUNT dev=$dev type=$type opts=$opts"
done
echo "L2-ROOT-DEVNO=$(awk '$5 == "/" { d = $3 } END { print d }' /proc/self/mountinfo) ZV-ROOT-DEVNO=$(cat /sys/block/$root/dev) ZV-ROOT-DEV=$root"
echo "L2-CMDLINE-ROOT=$(tr ' ' '\n' < /proc/cmdline | grep '^root=')"
[ -e /etc/zvisor/modules ] && echo "L2-INITRAMFS-LEFT-BEHIND"
echo "L2-HOST-TOKEN=$(cat /etc/zvisor/host-token)"
# A file written into the root fs; the host reads it back with debugfs.
proof="written-by-L2-on-its-root-disk-$(head -c 16 /dev/urandom | sha256sum | cut -c1-32)"
echo "$proof" > /l2-proof
echo "L2-ROOT-PROOF=$proof"
# Read-write data disk: the host's header, then 1 MiB written at 1 MiB.
echo "L2-DATA-HEAD=$(head -c 16 /dev/$data)"
head -c 1048576 /dev/urandom > /tmp/chunk
dd if=/tmp/chunk of=/dev/$data bs=65536 seek=16 conv=fsync 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
echo "L2-DATA-WROTE $(sha256sum < /tmp/chunk | cut -d' ' -f1)"
echo "L2-DATA-READBACK $(dd if=/dev/$data bs=65536 skip=16 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)"
# Read-only disk: the host's content, and a write must fail.
echo "L2-RO-HEAD=$(head -c 16 /dev/$ro)"
echo "L2-RO-SHA $(sha256sum < /dev/$ro | cut -d' ' -f1)"
echo "L2-RO-FLAG=$(cat /sys/block/$ro/ro)"
if dd if=/tmp/chunk of=/dev/$ro bs=4096 count=1 conv=fsync 2>/dev/null; then
  echo L2-RO-WRITE-SUCCEEDED
else
  echo L2-RO-WRITE-REFUSED
fi
# Leave the root fs clean for the host's e2fsck.
sync
mount -o remount,ro /
echo "L2-ROOT-REMOUNTED-RO"

# L2, boot 2 (rung 2, virtio): the same disk, read-only now: the checksums
# written in boot 1 must match; a read-only second disk must refuse writes;
# virtio-rng must be the hwrng; then a dd read throughput sample.
set -e
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /mnt
mount -t ext4 -o ro /dev/vda /mnt
cd /mnt
sha256sum -c SUMS
echo L2-BLK-VERIFY-OK
cd /
umount /mnt
echo "L2-VDB-RO=$(cat /sys/block/vdb/ro)"
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 conv=fsync 2>/dev/null; then
  echo L2-RO-WRITE-SUCCEEDED
else
  echo L2-RO-WRITE-REFUSED
fi
echo "L2-RNG-CURRENT=$(cat /sys/class/misc/hw_random/rng_current)"
n=$(dd if=/dev/hwrng bs=512 count=1 2>/dev/null | wc -c)
echo "L2-RNG-BYTES=$n"
a=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | sha256sum)
b=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | sha256sum)
[ "$a" != "$b" ] && echo L2-RNG-DIFFERS
echo 3 > /proc/sys/vm/drop_caches
t0=$(cut -d' ' -f1 /proc/uptime | tr -d .)
dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null
t1=$(cut -d' ' -f1 /proc/uptime | tr -d .)
echo "L2-DD-READ bytes=$(cat /sys/block/vda/size)x512 centiseconds=$((t1 - t0))"

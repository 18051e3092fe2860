# L2, boot 1 (rung 2, virtio): ext4 on /dev/vda; write files, record
# their checksums, unmount, sync. Runs under busybox sh.
set -e
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt
i=1
while [ $i -le 4 ]; do
  dd if=/dev/urandom of=/mnt/file$i bs=4096 count=$((i * 32)) 2>/dev/null
  i=$((i + 1))
done
mkdir /mnt/dir
echo "written inside L2" > /mnt/dir/note
t0=$(cut -d' ' -f1 /proc/uptime | tr -d .)
dd if=/dev/zero of=/mnt/big bs=1M count=32 conv=fsync 2>/dev/null
t1=$(cut -d' ' -f1 /proc/uptime | tr -d .)
echo "L2-DD-WRITE bytes=33554432 centiseconds=$((t1 - t0))"
rm /mnt/big
cd /mnt
sha256sum file1 file2 file3 file4 dir/note > SUMS
cat SUMS
cd /
umount /mnt
sync
echo L2-BLK-WRITE-OK

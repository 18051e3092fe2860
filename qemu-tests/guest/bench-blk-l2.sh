# L2 (rung 2, virtio-blk benchmark): the same script under zvisor and under
# QEMU microvm, on the same kind of disk (a file in L1's tmpfs as /dev/vda).
# Writes a random 32 MiB pattern to the raw device (buffered, conv=fsync),
# reads it back after dropping the page cache, reads it again with O_DIRECT,
# and checks the sha256 of what came back against what was written.
# Times are /proc/uptime deltas in centiseconds.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
set -e
MIB=32
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
sectors=$(cat /sys/block/vda/size)
echo "L2-BENCH-DISK sectors=$sectors"
q=/sys/block/vda/queue
echo "L2-BENCH-QUEUE max_segments=$(cat $q/max_segments) max_segment_size=$(cat $q/max_segment_size) max_hw_sectors_kb=$(cat $q/max_hw_sectors_kb) max_sectors_kb=$(cat $q/max_sectors_kb) nr_requests=$(cat $q/nr_requests) hw_queues=$(ls /sys/block/vda/mq | wc -l) features=$(cat /sys/block/vda/device/features)"
[ "$sectors" -ge $((MIB * 2048)) ] || { echo "L2-BENCH-ERROR disk too small"; exit 1; }
head -c $((MIB << 20)) /dev/urandom > /tmp/pattern
want=$(sha256sum < /tmp/pattern | cut -d' ' -f1)
t0=$(now)
dd if=/tmp/pattern of=/dev/vda bs=1M conv=fsync 2>/dev/null
t1=$(now)
echo "L2-BENCH-WRITE bytes=$((MIB << 20)) cs=$((t1 - t0))"
rm /tmp/pattern
sync
echo 3 > /proc/sys/vm/drop_caches
t0=$(now)
dd if=/dev/vda of=/dev/null bs=1M count=$MIB 2>/dev/null
t1=$(now)
echo "L2-BENCH-READ bytes=$((MIB << 20)) cs=$((t1 - t0))"
t0=$(now)
dd if=/dev/vda of=/dev/null bs=1M count=$MIB iflag=direct 2>/dev/null
t1=$(now)
echo "L2-BENCH-READ-DIRECT bytes=$((MIB << 20)) cs=$((t1 - t0))"
echo 3 > /proc/sys/vm/drop_caches
got=$(dd if=/dev/vda bs=1M count=$MIB iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "L2-BENCH-SUM written=$want read=$got"
[ "$want" = "$got" ]
echo L2-BENCH-OK

# L1 (rung 2, virtio-blk benchmark): one L2 boot under zvisor or under QEMU
# microvm (virtio-mmio), both on a fresh 64 MiB file in L1's tmpfs.
#   bench-blk-l1.sh zvisor|qemu ROUND [EXTRA-L2-CMDLINE]
# QEMU comes from /dev/vda (an ext4 image the host built from its own
# qemu-system-x86_64, shared libraries, loader and microvm firmware).
# Prints one summary line:
#   L1-BENCH vmm=V round=R rc=N ready_cs=N total_cs=N l2_ready_uptime=S
#     write_cs=N read_cs=N read_direct_cs=N bytes=N sum=HEX backing=HEX l2_ok=0|1
# ready_cs: VMM launch to L2's init banner (firmware, kernel, modules);
# backing: sha256 of the first `bytes` of the backing file after the VMM
# exited (must equal sum, the pattern L2 wrote).
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
vmm=$1
round=$2
tag=$vmm-r$round
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
if [ "$vmm" = qemu ]; then
  mkdir -p /opt/q
  grep -q ' /opt/q ' /proc/mounts || mount -t ext4 -o ro /dev/vda /opt/q || exit 1
  [ -e /lib64 ] || ln -s /opt/q/lib64 /lib64
fi
rm -f /tmp/disk.img /tmp/l2.log /tmp/rc
truncate -s 64M /tmp/disk.img
args="console=ttyS0 reboot=k panic=-1 quiet zvisor.tag=$tag zvisor.report=0 zvisor.conf=/etc/zvisor/bench.conf ${3:-}"
case $vmm in
zvisor)
  set -- /bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-initrd \
    --cpus 1 --memory 256M --disk path=/tmp/disk.img --cmdline "$args" ;;
qemu)
  # cache=writeback: the host page cache, flush = fdatasync, as zvisor does.
  # force-legacy=false: QEMU 7.2's virtio-mmio is legacy (0.9.5) by
  # default; zvisor's is virtio 1.x (VERSION_1).
  # rtc=on: without it, L2's rtc_cmos probe spent 13 s on the absent CMOS
  # ("rtc_cmos: broken or not accessible"); zvisor's FADT says "no CMOS
  # RTC", so Linux does not probe there.
  set -- env LD_LIBRARY_PATH=/opt/q/lib /opt/q/bin/qemu-system-x86_64 \
    -L /opt/q/share/qemu -M microvm,rtc=on -enable-kvm -cpu host -m 256M -smp 1 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel /boot/l2-kernel -initrd /boot/l2-initrd -append "$args" \
    -drive id=d0,file=/tmp/disk.img,format=raw,if=none,cache=writeback \
    -device virtio-blk-device,drive=d0 -global virtio-mmio.force-legacy=false ;;
*) echo "bench-blk-l1: unknown VMM $vmm"; exit 2 ;;
esac
t0=$(now)
# Serial lines end in CR LF; the CR would stick to the last value.
cr=$(printf '\r')
{ timeout 120 "$@" < /dev/null; echo $? > /tmp/rc; } 2>&1 | while IFS= read -r l; do
  l=${l%"$cr"}
  case $l in
  *ZVISOR-INIT-READY*) echo "L1-READY-CS $(($(now) - t0))" >> /tmp/l2.log ;;
  esac
  echo "$l" >> /tmp/l2.log
  echo "$l"
done
t1=$(now)
rc=$(cat /tmp/rc 2>/dev/null || echo none)
# First value of KEY=... on the first line containing MARK in the L2 log.
val() { sed -n "/$1/{s/.*$2=\([0-9a-zA-Z.]*\).*/\1/p;q}" /tmp/l2.log; }
ready=$(sed -n 's/^L1-READY-CS //p' /tmp/l2.log | head -n1)
bytes=$(val L2-BENCH-WRITE bytes)
backing=none
[ -n "$bytes" ] && backing=$(head -c "$bytes" /tmp/disk.img | sha256sum | cut -d' ' -f1)
l2_ok=0
grep -q 'L2-BENCH-OK' /tmp/l2.log && l2_ok=1
echo "L1-BENCH vmm=$vmm round=$round rc=$rc ready_cs=${ready:-none} total_cs=$((t1 - t0)) l2_ready_uptime=$(val ZVISOR-INIT-READY uptime_s) write_cs=$(val L2-BENCH-WRITE cs) read_cs=$(val 'L2-BENCH-READ ' cs) read_direct_cs=$(val L2-BENCH-READ-DIRECT cs) bytes=${bytes:-none} sum=$(val L2-BENCH-SUM written) backing=$backing l2_ok=$l2_ok"
rm -f /tmp/disk.img
[ "$rc" = 0 ] && [ "$l2_ok" = 1 ] && [ "$(val L2-BENCH-SUM written)" = "$backing" ]

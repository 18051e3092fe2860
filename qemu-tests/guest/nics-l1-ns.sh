# L1, in namespace A: zvisor runs one L2 with two NICs (taps zt0 and zt1,
# distinct MACs). zt0 stays in A (10.0.3.1/24); zt1 moves to a second
# namespace B (10.0.4.1/24), so the only way between B and L2 is NIC b.
# busybox nc carries random bytes both ways through each NIC; sha256 and
# sizes are compared on the host. Results are printed after zvisor exits
# (L2's console shares this output and would split lines).
ip link set lo up
unshare -n /bin/busybox sleep 600 &
bpid=$!
head -c 200000 /dev/urandom > /tmp/to-a
head -c 210000 /dev/urandom > /tmp/to-b
/bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-net-initrd --memory 256M \
  --net tap=zt0,mac=52:54:00:00:0a:01 --net tap=zt1,mac=52:54:00:00:0b:01 \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet zvisor.tag=nics-l2 zvisor.report=0 zvisor.conf=/etc/zvisor/nics.conf" &
zpid=$!
i=0
while ! { ip link show zt0 && ip link show zt1; } >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 600 ] && { echo L1-NO-TAPS; kill $zpid $bpid; exit 1; }
  sleep 0.1
done
[ "$(readlink /proc/self/ns/net)" != "$(readlink /proc/$bpid/ns/net)" ] || { echo L1-NS-B-MISSING; exit 1; }
ip link set zt1 netns $bpid || { echo L1-MOVE-FAILED; exit 1; }
ip addr add 10.0.3.1/24 dev zt0
ip link set zt0 up
nsenter -t $bpid -n sh -c 'ip link set lo up && ip addr add 10.0.4.1/24 dev zt1 && ip link set zt1 up' \
  || { echo L1-NS-B-SETUP-FAILED; exit 1; }
mkfifo /tmp/hold-a /tmp/hold-b
# stdin that never ends: busybox nc quits early once its stdin is at EOF
nc -l -p 7000 <>/tmp/hold-a > /tmp/from-a &
la=$!
nsenter -t $bpid -n nc -l -p 7000 <>/tmp/hold-b > /tmp/from-b &
lb=$!
i=0
until nc 10.0.3.2 7010 < /tmp/to-a; do
  i=$((i + 1)); [ $i -gt 240 ] && { echo L1-CONNECT-A-FAILED; break; }
  sleep 0.5
done
i=0
until nsenter -t $bpid -n nc 10.0.4.2 7011 < /tmp/to-b; do
  i=$((i + 1)); [ $i -gt 240 ] && { echo L1-CONNECT-B-FAILED; break; }
  sleep 0.5
done
wait $la
wait $lb
wait $zpid
rc=$?
echo "L1-TO-A $(sha256sum < /tmp/to-a | cut -d' ' -f1) $(wc -c < /tmp/to-a)"
echo "L1-TO-B $(sha256sum < /tmp/to-b | cut -d' ' -f1) $(wc -c < /tmp/to-b)"
echo "L1-FROM-A $(sha256sum < /tmp/from-a | cut -d' ' -f1) $(wc -c < /tmp/from-a)"
echo "L1-FROM-B $(sha256sum < /tmp/from-b | cut -d' ' -f1) $(wc -c < /tmp/from-b)"
ip link show zt1 >/dev/null 2>&1 && echo L1-ZT1-STILL-IN-A
kill $bpid
echo "L1-NICS-ZVISOR-EXIT=$rc"

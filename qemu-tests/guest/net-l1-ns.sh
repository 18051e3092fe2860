ip link set lo up
head -c 300000 /dev/urandom > /tmp/to-l2
echo "L1-TO-L2 $(sha256sum < /tmp/to-l2 | cut -d' ' -f1) $(wc -c < /tmp/to-l2)"
/bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-initrd --memory 256M \
  --net tap=zt0,mac=52:54:00:00:00:02 \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet zvisor.tag=net-l2 zvisor.report=0 zvisor.conf=/etc/zvisor/net.conf" &
zpid=$!
i=0
while ! ip link show zt0 >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo L1-NO-TAP; exit 1; }
  sleep 0.1
done
ip addr add 10.0.2.1/24 dev zt0
ip link set zt0 up
mkfifo /tmp/hold
# stdin that never ends: busybox nc quits early once its stdin is at EOF
nc -l -p 7000 <>/tmp/hold > /tmp/from-l2 &
lpid=$!
i=0
until nc 10.0.2.2 7001 < /tmp/to-l2; do
  i=$((i + 1)); [ $i -gt 120 ] && { echo L1-CONNECT-FAILED; break; }
  sleep 0.5
done
wait $lpid
echo "L1-FROM-L2 $(sha256sum < /tmp/from-l2 | cut -d' ' -f1) $(wc -c < /tmp/from-l2)"
wait $zpid
echo "L1-ZVISOR-EXIT=$?"

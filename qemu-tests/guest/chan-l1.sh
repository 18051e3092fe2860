/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# L1 (rung 2, virtio-console channel): zvisor listens on /tmp/chan.sock for
# the L2's second console (hvc1; hvc0 is --console virtio) and logs the
# third (hvc2) to /tmp/chan.log. The client waits for L2's hello line, sends
# 64 KiB of random bytes and compares the echo, then reconnects as a second
# client for a ping/pong. A named channel (a port of the multiport device,
# /dev/vportNp0 in L2, found by its name in sysfs) on /tmp/agent.sock gets
# one request and its answer.
head -c 65536 /dev/urandom > /tmp/send
/bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-initrd --memory 256M \
  --console virtio --channel socket=/tmp/chan.sock --channel file=/tmp/chan.log \
  --channel socket=/tmp/agent.sock,name=org.zvisor.agent.0 \
  --cmdline "console=hvc0 reboot=k panic=-1 quiet zvisor.tag=chan-l2 zvisor.report=0 zvisor.conf=/etc/zvisor/chan.conf" \
  </dev/null &
zpid=$!
/bin/zvisor-chan-client agent /tmp/agent.sock > /tmp/agent.out 2>&1 &
apid=$!
/bin/zvisor-chan-client /tmp/chan.sock /tmp/send /tmp/recv > /tmp/client.out 2>&1
cpid=$?
wait $apid
apid=$?
wait $zpid
echo "L1-CHAN-ZVISOR-EXIT=$?"
# Printed only now: L2's console shares this output and would split lines.
echo "L1-CHAN-CLIENT-EXIT=$cpid"
echo "L1-CHAN-AGENT-EXIT=$apid"
sed 's/^/L1-CHAN-/' /tmp/client.out
sed 's/^/L1-CHAN-AGENT-/' /tmp/agent.out
echo "L1-CHAN-SENT $(sha256sum < /tmp/send | cut -d' ' -f1) $(wc -c < /tmp/send)"
echo "L1-CHAN-ECHOED $(sha256sum < /tmp/recv | cut -d' ' -f1) $(wc -c < /tmp/recv)"
tr -d '\r' < /tmp/chan.log | sed 's/^/L1-CHAN-LOG /'
[ -e /tmp/chan.sock ] && echo L1-CHAN-SOCKET-LEFT
[ -e /tmp/agent.sock ] && echo L1-CHAN-SOCKET-LEFT agent
true

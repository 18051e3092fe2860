/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# L1 (rung 2, virtio-vsock): zvisor's host side is Unix sockets. Guest->host
# connections to port 6000 land on /tmp/v.sock_6000 (an echo server here);
# host->guest goes through /tmp/v.sock with "CONNECT 5000". Four concurrent
# connections each way, 100000 bytes each, echoed and compared.
/init vsock serve-unix /tmp/v.sock_6000 4 > /tmp/g2h.out 2>&1 &
spid=$!
/bin/zvisor run --kernel /boot/l2-kernel --initrd /boot/l2-initrd --memory 256M \
  --vsock cid=3,socket=/tmp/v.sock \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet zvisor.tag=vsock-l2 zvisor.report=0 zvisor.conf=/etc/zvisor/vsock.conf" &
zpid=$!
/init vsock connect-unix /tmp/v.sock 5000 4 100000 > /tmp/h2g.out 2>&1
wait $spid
wait $zpid
echo "L1-VSOCK-ZVISOR-EXIT=$?"
# Printed only now: L2's console shares this output and would split lines.
sed 's/^/L1-G2H /' /tmp/g2h.out
sed 's/^/L1-H2G /' /tmp/h2g.out
[ -e /tmp/v.sock ] && echo L1-VSOCK-SOCKET-LEFT
true

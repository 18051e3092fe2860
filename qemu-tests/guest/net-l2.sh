# L2 (rung 2, virtio-net): eth0 = zvisor's virtio-net on L1's tap zt0.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
echo "L2-MAC=$(cat /sys/class/net/eth0/address)"
ip link set lo up
ip addr add 10.0.2.2/24 dev eth0
ip link set eth0 up
mkfifo /tmp/hold
# stdin that never ends: busybox nc quits early once its stdin is at EOF
nc -l -p 7001 <>/tmp/hold > /tmp/got
echo "L2-GOT $(sha256sum < /tmp/got | cut -d' ' -f1) $(wc -c < /tmp/got)"
head -c 200000 /dev/urandom > /tmp/send
echo "L2-SENT $(sha256sum < /tmp/send | cut -d' ' -f1) $(wc -c < /tmp/send)"
i=0
until nc 10.0.2.1 7000 < /tmp/send; do
  i=$((i + 1)); [ $i -gt 60 ] && { echo L2-CONNECT-FAILED; break; }
  sleep 0.5
done
echo L2-NET-DONE

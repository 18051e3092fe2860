/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# With console=hvc0 and virtio_console a module, init started without a
# console: report on hvc0 directly (it reaches L1 through zvisor's stdout).
exec >/dev/hvc0 2>&1
# L2 (rung 2, virtio-console channel). Which hvcN is which device, from
# /sys: virtio_console probes the console devices in bus order and each
# single-port device gets the next hvc number, so the k-th console device
# (device id 0x0003) is hvc(k-1). zvisor orders them --console virtio,
# then the unnamed --channel options: socket (hvc1), file (hvc2), then the
# multiport device with the named channels (no hvc).
k=0
for n in $(seq 0 31); do
  d=/sys/bus/virtio/devices/virtio$n
  [ -e $d ] || continue
  [ "$(cat $d/device)" = 0x0003 ] || continue
  echo "L2-CONSOLE virtio$n hvc$k ports=$(ls $d/virtio-ports | tr '\n' ' ')"
  k=$((k + 1))
done
echo "L2-CONSOLES=$k"
tty=/dev/hvc1
log=/dev/hvc2
# Keep the tty open: hvc resets its termios on the last close.
exec 3<>$tty
stty raw -echo <&3
echo CHAN-HELLO-FROM-L2 >&3
head -c 65536 <&3 | tee /tmp/got >&3
echo "L2-CHAN-GOT $(sha256sum < /tmp/got | cut -d' ' -f1) $(wc -c < /tmp/got)"
read -r line <&3
echo "PONG2 $line" >&3
echo "L2-CHAN-RECONNECT-LINE=$line"
echo "CHAN-LOG-LINE from L2" > $log
# The named port, found by its name as a guest agent would.
vp=""
for f in /sys/class/virtio-ports/*/name; do
  [ "$(cat $f)" = org.zvisor.agent.0 ] || continue
  vp=${f%/name}
  vp=${vp##*/}
done
echo "L2-AGENT-PORT=$vp"
exec 4<>/dev/$vp
read -r req <&4
echo "AGENT-REPLY $req" >&4
echo "L2-AGENT-REQ=$req"
echo L2-CHAN-DONE

# L2 (rung 2, two virtio-net NICs): find each NIC by the MAC zvisor was given,
# address them in two subnets, receive from and send to L1 through each, and
# count the bytes each NIC moved.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
by_mac() {
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = "$1" ] && { echo "${d##*/}"; return 0; }
  done
  echo "L2-NO-NIC-WITH-MAC $1" >&2
  return 1
}
for d in /sys/class/net/eth*; do
  echo "L2-NIC ${d##*/} mac=$(cat "$d/address")"
done
a=$(by_mac 52:54:00:00:0a:01) || exit 1
b=$(by_mac 52:54:00:00:0b:01) || exit 1
ip link set lo up
ip addr add 10.0.3.2/24 dev "$a"
ip link set "$a" up
ip addr add 10.0.4.2/24 dev "$b"
ip link set "$b" up
nstat() { cat "/sys/class/net/$1/statistics/$2"; }
rxa=$(nstat "$a" rx_bytes); txa=$(nstat "$a" tx_bytes)
rxb=$(nstat "$b" rx_bytes); txb=$(nstat "$b" tx_bytes)
mkfifo /tmp/hold-a /tmp/hold-b
# stdin that never ends: busybox nc quits early once its stdin is at EOF
nc -l -p 7010 <>/tmp/hold-a > /tmp/got-a &
pa=$!
nc -l -p 7011 <>/tmp/hold-b > /tmp/got-b &
pb=$!
wait $pa
wait $pb
head -c 220000 /dev/urandom > /tmp/send-a
head -c 230000 /dev/urandom > /tmp/send-b
i=0
until nc 10.0.3.1 7000 < /tmp/send-a; do
  i=$((i + 1)); [ $i -gt 120 ] && { echo L2-CONNECT-A-FAILED; break; }
  sleep 0.5
done
i=0
until nc 10.0.4.1 7000 < /tmp/send-b; do
  i=$((i + 1)); [ $i -gt 120 ] && { echo L2-CONNECT-B-FAILED; break; }
  sleep 0.5
done
echo "L2-GOT-A $(sha256sum < /tmp/got-a | cut -d' ' -f1) $(wc -c < /tmp/got-a)"
echo "L2-GOT-B $(sha256sum < /tmp/got-b | cut -d' ' -f1) $(wc -c < /tmp/got-b)"
echo "L2-SENT-A $(sha256sum < /tmp/send-a | cut -d' ' -f1) $(wc -c < /tmp/send-a)"
echo "L2-SENT-B $(sha256sum < /tmp/send-b | cut -d' ' -f1) $(wc -c < /tmp/send-b)"
echo "L2-NIC-A if=$a rx=$(($(nstat "$a" rx_bytes) - rxa)) tx=$(($(nstat "$a" tx_bytes) - txa))"
echo "L2-NIC-B if=$b rx=$(($(nstat "$b" rx_bytes) - rxb)) tx=$(($(nstat "$b" tx_bytes) - txb))"

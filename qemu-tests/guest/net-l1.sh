# L1 (rung 2, virtio-net): in a network namespace of its own, run an L2 with
# --net tap=zt0, give the tap an address, then TCP both ways with busybox nc
# and sha256 on both ends.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
exec unshare -n /bin/busybox sh /etc/zvisor/net-l1-ns.sh

# L1 (rung 2, two virtio-net NICs in one L2): runs nics-l1-ns.sh in a network
# namespace of its own (namespace A).
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
exec unshare -n /bin/busybox sh /etc/zvisor/nics-l1-ns.sh

/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# L2 (rung 2, virtio-vsock): echo server on port 5000 for four host
# connections, and four concurrent connections to the host's port 6000.
/init vsock serve-vsock 5000 4 | sed 's/^/L2-H2G /' &
spid=$!
/init vsock connect-vsock 2 6000 4 100000 | sed 's/^/L2-G2H /'
wait $spid

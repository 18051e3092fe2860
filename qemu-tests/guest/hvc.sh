# L2, boot 3 (rung 2, virtio): zvisor runs with --console virtio, so the
# serial port is off and only hvc0 reaches L1.
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
exec >/dev/hvc0 2>&1
echo L2-HVC0-OK
echo "L2-HVC0-RNG=$(cat /sys/class/misc/hw_random/rng_current)"

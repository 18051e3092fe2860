#!/bin/busybox sh
# `ip` for the zvisor-vmm tests in busybox-only guests: busybox's ip has
# no `neigh add`, so `ip neigh add ADDR lladdr MAC dev IF [nud permanent]`
# becomes busybox `arp -i IF -s ADDR MAC` (a permanent ARP entry, the same
# neighbour the kernel gets from iproute2); everything else goes to
# busybox ip unchanged.
if [ "${1:-}" = neigh ] && [ "${2:-}" = add ]; then
    shift 2
    addr=${1:?ip neigh add: no address}
    shift
    lladdr= dev=
    while [ $# -gt 0 ]; do
        case "$1" in
        lladdr) lladdr=$2; shift 2 ;;
        dev) dev=$2; shift 2 ;;
        nud)
            [ "$2" = permanent ] || { echo "ip (vmm-ip.sh): only nud permanent" >&2; exit 2; }
            shift 2
            ;;
        *) echo "ip (vmm-ip.sh): unsupported neigh argument '$1'" >&2; exit 2 ;;
        esac
    done
    [ -n "$lladdr" ] && [ -n "$dev" ] || { echo "ip (vmm-ip.sh): need lladdr and dev" >&2; exit 2; }
    exec /bin/busybox arp -i "$dev" -s "$addr" "$lladdr"
fi
exec /bin/busybox ip "$@"

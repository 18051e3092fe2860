#!/usr/bin/env bash
# Boots a real Linux microVM (Debian's kernel, zvisor's test init) with
# zvisor and shows its console.
#
# Where /dev/kvm is hardware KVM, zvisor boots the guest directly. Where it
# is not (no /dev/kvm, or kvm_pvm software nesting as on this project's
# build machines, which cannot run stock Linux guests), the demo takes the
# nested path: QEMU (TCG) emulates an L1 Linux with SVM, L1 loads kvm-amd,
# and zvisor boots the microVM inside L1. Either way the guest's console is
# shown; in the nested path its lines carry an "[l2-...]" prefix.
#
#   ci/demo.sh                 auto-detect
#   ZVISOR_DEMO_MODE=direct|nested ci/demo.sh
#   ZVISOR_DEMO_QUIET=1        boot the guest with `quiet` (faster nested)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }

arch=$(uname -m)
case "$arch" in
    x86_64) console=ttyS0 ;;
    aarch64) console=ttyAMA0 ;;
    s390x) console=ttysclp0 ;;
    *) say "unsupported host architecture $arch"; exit 2 ;;
esac

# What kind of /dev/kvm is this?
kvm_kind() {
    if [ ! -e /dev/kvm ]; then
        echo none
    elif [ -d /sys/module/kvm_pvm ]; then
        echo kvm_pvm
    elif [ "$arch" = x86_64 ] && ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
        echo "no-vmx-svm"
    else
        echo hardware
    fi
}

kind=$(kvm_kind)
mode=${ZVISOR_DEMO_MODE:-}
if [ -z "$mode" ]; then
    if [ "$kind" = hardware ]; then mode=direct; else mode=nested; fi
fi

ci/assets.sh "$arch"
assets=${ZVISOR_ASSETS:-$PWD/.zvisor-assets}/$arch
quiet=""
[ "${ZVISOR_DEMO_QUIET:-0}" = 1 ] && quiet=" quiet"

case "$mode" in
    direct)
        if [ "$kind" = hardware ]; then
            say "/dev/kvm is hardware KVM: zvisor boots the microVM directly"
        else
            say "ZVISOR_DEMO_MODE=direct: booting directly although /dev/kvm is '$kind'"
        fi
        target=$arch-unknown-linux-gnu
        say "building zvisor, and zvisor-init as a static binary"
        cargo build --release --quiet -p zvisor -p zvisor-mkinitramfs
        RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static-guest \
            cargo build --release --quiet --target "$target" -p zvisor-init
        mkdir -p target/demo
        target/release/zvisor-mkinitramfs -o target/demo/initrd.cpio \
            --init "target/static-guest/$target/release/zvisor-init"
        kernel=$assets/vmlinuz
        [ -f "$assets/vmlinux" ] && kernel=$assets/vmlinux
        cmdline="console=$console reboot=k panic=-1$quiet zvisor.tag=demo"
        say "zvisor run --kernel $kernel --initrd target/demo/initrd.cpio --cpus 2 --memory 512M --cmdline \"$cmdline\""
        start=$(date +%s%N)
        rc=0
        target/release/zvisor run --kernel "$kernel" --initrd target/demo/initrd.cpio \
            --cpus 2 --memory 512M --cmdline "$cmdline" || rc=$?
        say "zvisor exited with $rc after $(( ($(date +%s%N) - start) / 1000000 )) ms"
        exit "$rc"
        ;;
    nested)
        case "$kind" in
            kvm_pvm) why="/dev/kvm here is kvm_pvm (software nested virtualization), which cannot run stock Linux guests" ;;
            none) why="there is no /dev/kvm on this host" ;;
            *) why="this CPU shows no vmx/svm flags, so /dev/kvm is not hardware virtualization" ;;
        esac
        [ "$kind" = hardware ] && why="ZVISOR_DEMO_MODE=nested was asked for"
        say "$why."
        say "Taking the nested path: QEMU (TCG) boots an L1 Linux with nested SVM, and zvisor boots the microVM inside it with KVM."
        say "The microVM's console lines are prefixed with [l2-c2m512]."
        args=(--check 2x512)
        [ -z "$quiet" ] && args+=(--verbose-l2)
        exec cargo run --release --quiet -p zvisor-qemu-tests --bin zvisor-nested -- "${args[@]}"
        ;;
    *)
        say "ZVISOR_DEMO_MODE must be direct or nested"
        exit 2
        ;;
esac

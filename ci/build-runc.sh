#!/bin/sh
# Builds zvisor-runc as shipped and benchmarked; prints the binary's path.
#
#   ci/build-runc.sh            (root and qemu-user-static for step 2)
#
# 1. Static (glibc, +crt-static), non-PIE (relocation-model=static), with
#    the `runc` profile (opt-level z, fat LTO, one codegen unit): no loader,
#    no shared libraries, no relocations at each of the many short runs.
# 2. Code layout from a training run: each page fault on the binary maps a
#    64 KiB window of it (the kernel's fault-around), so the peak RSS of a
#    short run is about the number of 64 KiB windows its code touches. The
#    build is run under qemu-user (`-d in_asm` logs every piece of code
#    translated, i.e. executed) through a container lifecycle — create,
#    start, state, exec, kill, delete (-f), run -d, list and an error — with
#    `zvisor-runc spec`'s default config (not the benchmark's), and relinked
#    with lld's --symbol-ordering-file so that the functions used come first,
#    in the order of first use. The code is the same; only its place moves.
#    Without root, qemu-user or lld the step is skipped (with a note on
#    stderr).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST=$(rustc -vV | sed -n 's/^host: //p')
ARCH=$(uname -m)
export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
export CARGO_TARGET_DIR="$ROOT/target/static"
OUT=$CARGO_TARGET_DIR/$HOST/runc
BIN=$OUT/zvisor-runc
build() {
  # cargo keeps a build per set of extra arguments, and links a fresh one to
  # $BIN only when $BIN is missing.
  rm -f "$BIN"
  cargo rustc -q --profile runc -p zvisor --bin zvisor-runc --target "$HOST" \
    --manifest-path "$ROOT/Cargo.toml" -- "$@" >&2
}
build
QEMU=$(command -v "qemu-$ARCH-static" || true)
# --symbol-ordering-file is lld's (rustc links with it on x86_64 Linux).
LLD=$(readelf -p .comment "$BIN" 2>/dev/null | grep -c 'Linker: LLD' || true)
if [ "$(id -u)" != 0 ] || [ -z "$QEMU" ] || [ ! -x /bin/busybox ] || [ "$LLD" = 0 ]; then
  echo "build-runc: no root, qemu-$ARCH-static, busybox-static or lld: code layout not trained" >&2
  echo "$BIN"
  exit 0
fi

W=$(mktemp -d)
# Ids (and so cgroup paths) of their own, in a state root of its own.
T=train-$$
trap 'for c in $T-exec $T-run $T-life $T-force; do "$W/zr" --root "$W/state" delete -f $c >/dev/null 2>&1 || true; done; rm -rf "$W"' EXIT
cp "$BIN" "$W/zr"
B=$W/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in sh true sleep; do ln -s busybox "$B/rootfs/bin/$a"; done
(cd "$B" && "$W/zr" spec)
cp "$B/config.json" "$B/spec.json"
bundle() { # ARGS as a JSON list
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["process"]["terminal"]=False; c["process"]["args"]=json.loads(sys.argv[2]); json.dump(c,open(sys.argv[3],"w"))' \
    "$B/spec.json" "$1" "$B/config.json"
}
zr() { # traced run; failures are part of the training
  (cd "$B" && "$QEMU" -d in_asm -D "$W/log-$N" "$W/zr" --root "$W/state" "$@") >/dev/null 2>&1 || true
  N=$((N + 1))
}
N=10
bundle '["/bin/true"]'
zr create --pid-file "$W/pid" $T-life
[ -s "$W/pid" ] || echo "build-runc: create failed under qemu-user: the layout is trained on less" >&2
zr start $T-life
sleep 0.2
zr state $T-life
zr delete $T-life
zr run -d $T-run
sleep 0.2
zr list
zr delete $T-run
bundle '["/bin/sleep", "10"]'
zr run -d $T-exec
zr exec $T-exec /bin/true
zr kill $T-exec KILL
sleep 0.2
zr delete $T-exec
zr run -d $T-force
zr delete -f $T-force
bundle '["/bin/true"]'
zr state no-such-container
zr run $T-foreground
zr --version

python3 - "$BIN" "$W"/log-* > "$W/order" <<'PY'
import bisect, re, subprocess, sys
# Functions of the binary (mangled names, as lld sees them), by address.
syms = []
nm = subprocess.run(["nm", "-n", "-S", sys.argv[1]], capture_output=True, text=True, check=True)
for l in nm.stdout.splitlines():
    p = l.split()
    if len(p) == 4 and p[2] in "tTwW":
        syms.append((int(p[0], 16), int(p[1], 16), p[3]))
starts = [s[0] for s in syms]
seen, order = set(), []
for log in sorted(sys.argv[2:], key=lambda f: int(f.rsplit("-", 1)[1])):
    for l in open(log, errors="replace"):
        m = re.match(r"0x([0-9a-f]+):", l)
        if not m:
            continue
        a = int(m.group(1), 16)
        i = bisect.bisect_right(starts, a) - 1
        if i >= 0 and a < syms[i][0] + max(syms[i][1], 1) and syms[i][2] not in seen:
            seen.add(syms[i][2])
            order.append(syms[i][2])
# What runs natively but not under qemu-user 7.2 (found with `perf trace
# -F all` on the ordered binary): glibc's vDSO setup at every start (qemu
# gives no vDSO), and `run`'s wait for the container (qemu refuses
# PR_SET_CHILD_SUBREAPER, so training stops there).
native = ["_dl_new_object", "_dl_add_to_namespace_list", "_dl_setup_hash",
          "_dl_lookup_direct", "check_match", "_dl_name_match_p", "__strcmp_sse2",
          "sigemptyset", "__libc_sigaction", "__sigaction", "__waitpid", "__wait4"]
names = {s[2] for s in syms}
order += [n for n in native if n in names and n not in seen]
seen.update(order)
# glibc picks string functions by CPU (ifunc), and qemu's CPU is not the
# host's: every variant of a family used goes along.
fam = lambda n: re.sub(r"_(sse2|ssse3|sse4_1|sse4_2|avx|avx2|avx512|evex|erms|unaligned|rtm|vex|movbe|x86_64|generic|aligned)(_.*)?$", "", n)
used = {fam(n) for n in order if n.startswith("__")}
order += [s[2] for s in syms if s[2] not in seen and s[2].startswith("__") and fam(s[2]) != s[2] and fam(s[2]) in used]
print("\n".join(order))
size = sum(s[1] for s in syms if s[2] in set(order))
print(f"build-runc: {len(order)} functions, {size} bytes of code first", file=sys.stderr)
PY
# cargo does not look into the file: a new order gets a new name.
H=$(sha256sum < "$W/order" | cut -c1-16)
find "$OUT" -maxdepth 1 -name 'zvisor-runc-*.order' ! -name "zvisor-runc-$H.order" -delete
cp "$W/order" "$OUT/zvisor-runc-$H.order"
build -C link-arg=-Wl,--symbol-ordering-file="$OUT/zvisor-runc-$H.order" -C link-arg=-Wl,--no-warn-symbol-ordering
echo "$BIN"

#!/usr/bin/env bash
# Boot benchmark (not a test): zvisor against QEMU microvm with the same
# tiny guest, on this machine's /dev/kvm.
#
#   ci/bench-boot.sh [RUNS]        (default 20 runs per configuration)
#
# For each configuration, over RUNS runs: min/median/max of the time from
# process start to the guest's serial marker ("TINY ready"), to process
# exit, the peak RSS (/usr/bin/time, separate runs), and the syscalls per
# boot (strace -f -c, separate runs). Needs python3, strace, GNU time and
# qemu-system-x86 (Debian packages python3, strace, time, qemu-system-x86).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
[ -w /dev/kvm ] || { echo "bench-boot: /dev/kvm is not usable here" >&2; exit 1; }
for t in python3 strace /usr/bin/time qemu-system-x86_64 gcc objcopy; do
    command -v "$t" >/dev/null || { echo "bench-boot: $t not found" >&2; exit 1; }
done

# The static build is what runs inside L1 in rung 2 and what we ship; the
# dynamic one maps all of libc.so, which shows in its RSS.
cargo build --release -p zvisor >&2
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p zvisor --target x86_64-unknown-linux-gnu >&2
ZVISOR_DYN=$PWD/target/release/zvisor
ZVISOR=$PWD/target/x86_64-unknown-linux-gnu/release/zvisor
OUT=$PWD/target/bench-boot
guest/tiny/build.sh "$OUT/tiny" >&2

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); host: $(uname -srm); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc); kvm modules: $(ls /sys/module | grep '^kvm' | tr '\n' ' ')"
echo "zvisor binaries: static $(stat -c %s "$ZVISOR") bytes, dynamic $(stat -c %s "$ZVISOR_DYN") bytes; $(qemu-system-x86_64 --version | head -1)"

python3 - "$RUNS" "$ZVISOR" "$OUT/tiny" "$ZVISOR_DYN" <<'PY'
import os, re, statistics, subprocess, sys, tempfile, time

runs, zvisor, tiny, zvisor_dyn = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
MARKER = b"TINY ready"
QEMU = ["qemu-system-x86_64", "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities",
        "-m", "128M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
        "-serial", "stdio", "-no-reboot"]

def zv(kernel, cmdline, binary=zvisor):
    return [binary, "run", "--kernel", f"{tiny}/{kernel}", "--memory", "128M", "--cmdline", cmdline]

def qemu(kernel, cmdline):
    return QEMU + ["-kernel", f"{tiny}/{kernel}", "-append", cmdline]

CONFIGS = [
    ("zvisor, PVH ELF, quick", zv("tiny-pvh.elf", "tiny.quick")),
    ("zvisor, 64-bit ELF, quick", zv("tiny.elf", "tiny.quick")),
    ("zvisor, bzImage, quick", zv("tiny.bzImage", "tiny.quick")),
    ("zvisor (dynamic glibc), 64-bit ELF, quick", zv("tiny.elf", "tiny.quick", zvisor_dyn)),
    ("QEMU microvm, PVH ELF, quick", qemu("tiny-pvh.elf", "tiny.quick")),
    ("zvisor, PVH ELF, full report + ACPI poweroff", zv("tiny-pvh.elf", "tiny.action=poweroff")),
    ("QEMU microvm, PVH ELF, full report + ACPI poweroff", qemu("tiny-pvh.elf", "tiny.action=poweroff")),
]

def rss(cmd):
    # Peak RSS from /usr/bin/time, a small parent: measuring from this
    # Python process would count the forked interpreter's pages too.
    with tempfile.NamedTemporaryFile(suffix=".rss") as f:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f.name] + cmd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return int(open(f.name).read().split()[-1]) / 1024.0

def one(cmd):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf, t_marker = b"", None
    while True:
        chunk = os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        if t_marker is None and MARKER in buf:
            t_marker = time.perf_counter()
    p.wait()
    t_exit = time.perf_counter()
    if t_marker is None:
        raise SystemExit(f"no marker from {cmd}: {buf[-300:]!r}")
    return (t_marker - t0) * 1e3, (t_exit - t0) * 1e3

def syscalls(cmd):
    with tempfile.NamedTemporaryFile(suffix=".strace") as f:
        subprocess.run(["strace", "-f", "-c", "-o", f.name] + cmd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = open(f.name).read()
    m = re.search(r"^-+\s.*\n\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total", text, re.M)
    if not m:
        raise SystemExit(f"cannot parse strace -c output:\n{text}")
    return int(m.group(1))

def fmt(xs, unit, prec=1):
    return f"{min(xs):.{prec}f} / {statistics.median(xs):.{prec}f} / {max(xs):.{prec}f} {unit}"

print(f"runs per configuration: {runs}; columns are min / median / max")
print("| configuration | to marker | to exit | peak RSS | syscalls per boot |")
print("|---|---|---|---|---|")
for name, cmd in CONFIGS:
    one(cmd)  # warm the page cache
    m, e = zip(*(one(cmd) for _ in range(runs)))
    r = [rss(cmd) for _ in range(runs)]
    s = [syscalls(cmd) for _ in range(runs)]
    print(f"| {name} | {fmt(m, 'ms')} | {fmt(e, 'ms')} | {fmt(r, 'MiB', 2)} | {fmt(s, '', 0)} |", flush=True)
PY

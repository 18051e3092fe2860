#!/bin/sh
# Benchmark of zvisor-runc beside runc and crun (not a test).
#
#   ci/bench-runc.sh [RUNS]      (default 50; needs root, busybox-static,
#                                 runc, crun; builds zvisor-runc with
#                                 ci/build-runc.sh)
#
# For each runtime, from the same busybox bundle running /bin/true:
#   cycle: create -> start -> wait for the init to exit -> delete
#   run:   run (foreground; it waits and deletes by itself)
# and the peak RSS of the runtime's own processes (GNU time %M, max over
# create/start/delete/run; measured in separate runs). The runtimes take
# turns in rounds of 10 runs.
# Prints a markdown table (min/median/max in ms) for docs/performance.md.
#
# crun 1.8 refuses this host's hybrid cgroup layout, so crun runs in a
# private mount namespace with /sys/fs/cgroup/unified unmounted.
set -eu
RUNS=${1:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# zvisor-runc as shipped: static, non-PIE, profile `runc`, code layout
# trained on a container lifecycle (see ci/build-runc.sh).
ZR=$("$ROOT/ci/build-runc.sh")
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
ln -s "$ZR" "$W/zvisor-runc"
B=$W/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$B/rootfs/bin/$a"; done
cat > "$B/config.json" <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"],
    "env": ["PATH=/bin"], "cwd": "/",
    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": true},
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "bench",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]
  }
}
JSON
cat > "$W/bench.py" <<'PY'
import json, os, statistics, subprocess, sys, time
rt, bundle, runs, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
name = os.path.basename(rt)
peak = 0
measure = False
errf = os.path.join(root, "stderr")
def call(*args):
    # For RSS, GNU time launches the runtime: a child forked from Python
    # would carry Python's own high-water mark into ru_maxrss.
    global peak
    pre = ["/usr/bin/time", "-f", "RSS %M"] if measure else []
    # stderr goes to a file: a created container keeps a pipe open.
    with open(errf, "w+") as ef:
        p = subprocess.run([*pre, rt, "--root", root, *args], cwd=bundle,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=ef)
        ef.seek(0)
        err = ef.read()
    if p.returncode != 0:
        sys.exit(f"{name} {args} failed: {err}")
    if measure:
        rss = [int(l.split()[1]) for l in err.splitlines() if l.startswith("RSS ")]
        peak = max([peak, *rss])
def cycle(i):
    cid = f"bench-{os.getpid()}-{i}"
    pidf = os.path.join(root, f"{cid}.pid")
    call("create", "--pid-file", pidf, cid)
    pid = int(open(pidf).read())
    call("start", cid)
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z":
        time.sleep(0.0002)
    call("delete", cid)
def run(i):
    call("run", f"benchr-{os.getpid()}-{i}")
res = {}
for label, fn in (("cycle", cycle), ("run", run)):
    fn(-1)  # warm-up
    t = []
    for i in range(runs):
        t0 = time.perf_counter(); fn(i); t.append((time.perf_counter() - t0) * 1000)
    res[label] = t
measure = True
for i in range(3):
    cycle(1000 + i)
    run(1000 + i)
print(json.dumps({"name": name, "peak_rss_kib": peak, **res}))
PY
run_rt() { # name runtime [wrapper...]
  n=$1; rt=$2; shift 2
  mkdir -p "$W/root-$n"
  "$@" python3 "$W/bench.py" "$rt" "$B" "$THIS_ROUND" "$W/root-$n"
}
# In rounds of ROUND runs, the runtimes taking turns, so that a change of
# the machine's load (it is shared) falls on all three alike.
ROUND=10
{
  left=$RUNS
  while [ "$left" -gt 0 ]; do
    THIS_ROUND=$((left < ROUND ? left : ROUND))
    run_rt zvisor "$W/zvisor-runc"
    run_rt runc "$(command -v runc)"
    if [ -d /sys/fs/cgroup/unified ]; then
      run_rt crun "$(command -v crun)" unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh
    else
      run_rt crun "$(command -v crun)"
    fi
    left=$((left - THIS_ROUND))
  done
} > "$W/results"
echo "Date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(uname -m), $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r); $RUNS runs each"
echo
echo "| runtime | create→start→wait→delete min / median / max (ms) | run min / median / max (ms) | peak RSS of the runtime (KiB) |"
echo "|---|---|---|---|"
python3 - "$W/results" <<'PY'
import json, statistics, sys
rts = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    a = rts.setdefault(r["name"], {"cycle": [], "run": [], "peak": 0})
    a["cycle"] += r["cycle"]
    a["run"] += r["run"]
    a["peak"] = max(a["peak"], r["peak_rss_kib"])
f = lambda t: " / ".join(f"{x:.1f}" for x in (min(t), statistics.median(t), max(t)))
for name, a in rts.items():
    print(f"| {name} | {f(a['cycle'])} | {f(a['run'])} | {a['peak']} |")
PY

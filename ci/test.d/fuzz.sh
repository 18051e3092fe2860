#!/usr/bin/env bash
# Stage "fuzz": each cargo-fuzz target for a short, bounded time.
# cargo-fuzz needs sanitizer flags that stable rustc only takes with
# RUSTC_BOOTSTRAP=1; that is all it is used for here.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
SECS=${ZVISOR_FUZZ_SECS:-30}
for t in blk_request net_header vsock_packet; do
  echo "fuzz: $t for ${SECS}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 | tail -4
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "fuzz: $t failed ($rc)"; exit 1; }
done

#!/usr/bin/env bash
# Times a whole `flagstore eval` process in daemon mode against a local Redis: 5 warm-up runs,
# then the p50, min and max of 20 more (BENCHMARKS.md's read-path table). Starts its own
# redis-server on a free loopback port and stops it (by PID) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flagstore/target}"
cargo build --release --locked -q -p flagstore-cli
flagstore="$CARGO_TARGET_DIR/release/flagstore"

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" >/dev/null
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do :; done
store="redis://127.0.0.1:$port"
"$flagstore" --store "$store" load crates/flagstore-cli/data/flags.json >/dev/null 2>&1

python3 - "$flagstore" "$store" <<'PY'
import statistics, subprocess, sys, time
flagstore, store = sys.argv[1], sys.argv[2]
command = [flagstore, "--store", store, "eval", "checkout-v2", "--context", "alice", "--json"]
times = []
for run in range(25):
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    if run >= 5:
        times.append((time.perf_counter() - started) * 1000)
print(f"flagstore eval, daemon mode, Redis: p50 {statistics.median(times):.1f} ms "
      f"(min {min(times):.1f}, max {max(times):.1f}) over {len(times)} runs")
PY

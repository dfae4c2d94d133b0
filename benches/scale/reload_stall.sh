#!/usr/bin/env bash
# Reloads a configuration of POOLS pools × 10 backends RELOADS times under
# wrk load, alternating two files that differ in every pool's weights (so
# every pool is rebuilt), and reports the longest pause a reactor took to
# take in a new snapshot (balanciaga4_snapshot_stall_max_seconds, from
# /stats) and the load's latency. Part of `make bench-scale`; needs wrk and
# python3. Ports below the ephemeral range; everything stops by itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
POOLS=${POOLS:-1000}
RELOADS=${RELOADS:-6}
B4=${B4:-target/release/balanciaga4}
DEMO=${DEMO:-target/release/examples/demo_backend}
LISTEN=31200 ADMIN=31290 BACKEND=31201
for tool in wrk python3; do
	command -v "$tool" >/dev/null || { echo "reload_stall: $tool not found (apt package $tool)" >&2; exit 1; }
done
out="${CARGO_TARGET_DIR:-target}/bench-scale"
mkdir -p "$out"
work=$(mktemp -d /tmp/b4-reload-stall.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$POOLS" "$work" "$LISTEN" "$ADMIN" "$BACKEND" <<'PY'
import sys
pools, work, listen, admin, backend = int(sys.argv[1]), sys.argv[2], *sys.argv[3:]
policies = ["round-robin", "least-connections", "source-hash", "random"]
def config(weight):
    items = [f'(name: "p0", health: (enabled: false), backends: [(address: "127.0.0.1:{backend}")])']
    for p in range(1, pools):
        bs = ", ".join(f'(address: "127.0.{p // 200}.{p % 200 + 1}:{9000 + b}", weight: {weight})'
                       for b in range(10))
        items.append(f'(name: "p{p}", policy: "{policies[p % 4]}", health: (enabled: false), backends: [{bs}])')
    return (f'(global: (workers: 2, access_log: false),\n'
            f' listeners: [(name: "web", bind: "127.0.0.1:{listen}", pool: "p0")],\n'
            f' pools: [{", ".join(items)}],\n admin: (bind: "127.0.0.1:{admin}"))\n')
open(f"{work}/a.ron", "w").write(config(1))
open(f"{work}/b.ron", "w").write(config(2))
PY
cp "$work/a.ron" "$work/cur.ron"
"$DEMO" --listen "127.0.0.1:$BACKEND" --name a >/dev/null 2>&1 & pids+=($!)
"$B4" --config "$work/cur.ron" 2>"$work/b4.log" & pids+=($!)
b4=$!
for _ in $(seq 50); do
	(exec 3<>/dev/tcp/127.0.0.1/$ADMIN) 2>/dev/null && break
	sleep 0.2
done
stall() { curl -s "http://127.0.0.1:$ADMIN/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_stall_max_us"])'; }
seconds=$((RELOADS * 2 + 4))
wrk -t1 -c20 -d"${seconds}s" --latency "http://127.0.0.1:$LISTEN/" >"$work/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 2
for i in $(seq "$RELOADS"); do
	if ((i % 2)); then cp "$work/b.ron" "$work/cur.ron"; else cp "$work/a.ron" "$work/cur.ron"; fi
	kill -HUP "$b4"
	sleep 2
done
wait "$wrk_pid"
reloaded=$(grep -c "reloaded " "$work/b4.log" || true)
{
	echo "reload of $POOLS pools × 10 backends, $RELOADS times under wrk -t1 -c20 ($reloaded applied):"
	echo "longest reactor pause to take in a snapshot: $(stall) µs"
	grep -E "Latency|99%|Requests/sec|Non-2xx|Socket errors" "$work/wrk.txt"
} | tee "$out/reload_stall.txt"

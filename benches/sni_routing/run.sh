#!/usr/bin/env bash
# New TLS connections per second through SNI routing: Balanciaga4 and
# HAProxy side by side in one run, in front of the same nginx TLS backends,
# plus the balancer's CPU time per routed connection. Not a test: prints a
# markdown table (see docs/BENCHMARKS.md, "SNI routing").
#
#   cargo build --release
#   benches/sni_routing/run.sh [SECONDS_PER_RUN [ROUNDS [THREADS]]]
#
# Needs haproxy, nginx, openssl, a C compiler and libssl-dev
# (apt-get install -y haproxy nginx libssl-dev). Every connection is a new
# TCP connection and a full TLS 1.3 handshake (no resumption) with SNI
# alpha.example, then `GET /` and the reply; tls_connect.c checks each
# certificate's CN, so a misrouted connection counts as failed.
#
# Subjects: direct (client to nginx, the ceiling), haproxy (mode tcp,
# inspect-delay, req.ssl_sni), b4-sni (a listener with an sni route) and
# b4-plain (a listener without routes, to the same backend).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-3}
THREADS=${3:-8}
B4=${B4:-target/release/balanciaga4}
NGINX_ALPHA=19401 NGINX_DEFAULT=19402
HAPROXY_PORT=19411 B4_SNI_PORT=19412 B4_PLAIN_PORT=19413

for tool in haproxy nginx openssl cc "$B4"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
for port in $NGINX_ALPHA $NGINX_DEFAULT $HAPROXY_PORT $B4_SNI_PORT $B4_PLAIN_PORT; do
    if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "127.0.0.1:$port is in use" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/b4-sni-bench.XXXXXX)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

cc -O2 -o "$work/tls_connect" benches/sni_routing/tls_connect.c -lssl -lcrypto -lpthread

for cn in alpha-backend default-backend; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=$cn" -addext "subjectAltName=DNS:alpha.example" \
        -keyout "$work/$cn.key" -out "$work/$cn.crt" 2>/dev/null
done

cat >"$work/nginx.conf" <<NGINX
daemon off;
worker_processes 2;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {
        listen 127.0.0.1:$NGINX_ALPHA ssl;
        ssl_certificate $work/alpha-backend.crt;
        ssl_certificate_key $work/alpha-backend.key;
        location / { return 200 "alpha\n"; }
    }
    server {
        listen 127.0.0.1:$NGINX_DEFAULT ssl;
        ssl_certificate $work/default-backend.crt;
        ssl_certificate_key $work/default-backend.key;
        location / { return 200 "default\n"; }
    }
}
NGINX

cat >"$work/haproxy.cfg" <<HAPROXY
global
    nbthread 2
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend tls
    bind 127.0.0.1:$HAPROXY_PORT
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend b if { req.ssl_sni -i alpha.example }
    default_backend d
backend b
    server alpha 127.0.0.1:$NGINX_ALPHA
backend d
    server default 127.0.0.1:$NGINX_DEFAULT
HAPROXY

cat >"$work/b4.ron" <<B4
(
    global: (workers: 2),
    listeners: [
        (name: "sni", bind: "127.0.0.1:$B4_SNI_PORT", pool: "d",
         routes: [(name: "alpha", sni: ["alpha.example"], pool: "b")]),
        (name: "plain", bind: "127.0.0.1:$B4_PLAIN_PORT", pool: "b"),
    ],
    pools: [
        (name: "b", health: (enabled: false), backends: [(address: "127.0.0.1:$NGINX_ALPHA")]),
        (name: "d", health: (enabled: false), backends: [(address: "127.0.0.1:$NGINX_DEFAULT")]),
    ],
)
B4

nginx -p "$work" -e "$work/nginx-error.log" -c "$work/nginx.conf" &
pids+=($!)
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
haproxy_pid=$!
pids+=($haproxy_pid)
# The access log goes to a file, as a deployment would keep it.
"$B4" --config "$work/b4.ron" >"$work/b4.log" 2>&1 &
b4_pid=$!
pids+=($b4_pid)

for port in $NGINX_ALPHA $NGINX_DEFAULT $HAPROXY_PORT $B4_SNI_PORT $B4_PLAIN_PORT; do
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.1
    done
done

# utime + stime of PID, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

declare -A port_of=([direct]=$NGINX_ALPHA [haproxy]=$HAPROXY_PORT [b4-sni]=$B4_SNI_PORT [b4-plain]=$B4_PLAIN_PORT)
declare -A pid_of=([haproxy]=$haproxy_pid [b4-sni]=$b4_pid [b4-plain]=$b4_pid)
subjects=(direct haproxy b4-sni b4-plain)

# Warm-up: one short run per subject.
for s in "${subjects[@]}"; do
    "$work/tls_connect" 127.0.0.1 "${port_of[$s]}" alpha.example alpha-backend "$THREADS" 1 >/dev/null
done

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
results="$work/results.txt"
: >"$results"
for round in $(seq "$ROUNDS"); do
    for s in "${subjects[@]}"; do
        pid=${pid_of[$s]:-}
        before=$([ -n "$pid" ] && ticks "$pid" || echo 0)
        out=$("$work/tls_connect" 127.0.0.1 "${port_of[$s]}" alpha.example alpha-backend "$THREADS" "$SECONDS_PER_RUN")
        after=$([ -n "$pid" ] && ticks "$pid" || echo 0)
        read -r _ ok _ failed _ _ _ rate <<<"$out"
        if [ -n "$pid" ]; then
            cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$ok" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
        else
            cpu=n/a
        fi
        echo "$round $s $rate $failed $cpu" | tee -a "$results" >&2
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Median over the rounds per subject, and the ratio to HAProxy per round.
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
subjects = ["direct", "haproxy", "b4-sni", "b4-plain"]
by = {s: [r for r in rows if r[1] == s] for s in subjects}
def med(xs):
    return statistics.median(xs) if xs else float("nan")
print("| subject | new TLS conn/s, median [min–max] | failed | LB CPU µs/conn, median | conn/s ÷ HAProxy, per round |")
print("|---|---:|---:|---:|---|")
for s in subjects:
    rates = [float(r[2]) for r in by[s]]
    fails = sum(int(r[3]) for r in by[s])
    cpus = [float(r[4]) for r in by[s] if r[4] != "n/a"]
    ratios = [float(a[2]) / float(h[2]) for a, h in zip(by[s], by["haproxy"])]
    cpu = f"{med(cpus):.1f}" if cpus else "n/a"
    print(f"| {s} | {med(rates):,.0f} [{min(rates):,.0f}–{max(rates):,.0f}] | {fails} | {cpu} | "
          + " ".join(f"{x:.2f}" for x in ratios) + " |")
PY
echo "raw results and logs: $work" >&2

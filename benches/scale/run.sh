#!/usr/bin/env bash
# `make bench-scale`: the scaling benches (scale, health_scale) and their
# plots. Data and PNGs go to target/bench-scale/ (CARGO_TARGET_DIR honoured).
# Needs gnuplot (Debian: gnuplot-nox); checked first, before anything runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v gnuplot >/dev/null 2>&1; then
	echo "bench-scale: gnuplot not found; install it with:" >&2
	echo "  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnuplot-nox" >&2
	exit 1
fi
out="${CARGO_TARGET_DIR:-target}/bench-scale"
mkdir -p "$out"
cargo build --release --bin balanciaga4 --example demo_backend
cargo bench --bench scale | tee "$out/scale.md"
cargo bench --bench health_scale | tee "$out/health.md"
bash benches/scale/reload_stall.sh
gnuplot -e "dir='$out'" benches/scale/plot.gp
echo "bench-scale: tables in $out/scale.md, $out/health.md and $out/reload_stall.txt, plots:"
ls "$out"/*.png

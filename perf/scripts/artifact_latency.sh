#!/usr/bin/env bash
# Artifact write latency through the API (POST /v1/artifacts, 4 KiB content by
# default), memory backend vs fs backend (temp file + fsync + rename + dir fsync), one
# after the other in one run. orchd pinned to core 0, orchd-load to core 1. Loopback.
#
#   bash perf/scripts/artifact_latency.sh [COUNT] [BYTES] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-2000}; BYTES=${2:-4096}; CONC=${3:-1}
cargo build --release -q -p orchd-http -p orchd-perf
DIR=$(mktemp -d); PORT=18381
echo "fs dir: $DIR/store on $(df -T "$DIR" | awk 'NR==2 {print $2, $1}')"
for backend in memory fs; do
  printf '[artifacts]\nbackend = "%s"\ndir = "%s/store"\n' "$backend" "$DIR" > "$DIR/c.toml"
  ORCHD_LOG=warn taskset -c 0 target/release/orchd --config "$DIR/c.toml" --addr 127.0.0.1:$PORT --shards 1 2>/dev/null & pid=$!
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$PORT/livez >/dev/null && break; sleep 0.05; done
  echo "== backend $backend"
  taskset -c 1 target/release/orchd-load --addr 127.0.0.1:$PORT --artifacts "$COUNT" --artifact-bytes "$BYTES" --concurrency "$CONC"
  kill $pid; wait $pid 2>/dev/null || true
done
rm -rf "$DIR"

#!/usr/bin/env bash
# Artifact write latency through the API (POST /v1/artifacts, 4 KiB content by
# default), memory backend vs fs backend (temp file + fsync + rename + dir fsync), one
# after the other in one run. orchd pinned to core 0, orchd-load to core 1. Loopback.
#
#   bash perf/scripts/artifact_latency.sh [COUNT] [BYTES] [CONCURRENCY]
source "$(dirname "$0")/lib.sh"
COUNT=${1:-2000}; BYTES=${2:-4096}; CONC=${3:-1}
build
PORT=$(free_port 18381)
echo "fs dir: $DIR/store on $(df -T "$DIR" | awk 'NR==2 {print $2, $1}')"
for backend in memory fs; do
  printf '[artifacts]\nbackend = "%s"\ndir = "%s/store"\n' "$backend" "$DIR" > "$DIR/c.toml"
  CPUS=0 orchd_start "$DIR/c.toml" --shards 1
  echo "== backend $backend"
  taskset -c 1 "$LOAD" --addr 127.0.0.1:$PORT --artifacts "$COUNT" --artifact-bytes "$BYTES" --concurrency "$CONC"
  stop "$PID"
done
rm -rf "$DIR"

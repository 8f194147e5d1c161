#!/usr/bin/env bash
# SSE data-plane throughput: CONC concurrent streams of TOKENS tokens each against a
# zero-latency mock engine, closed loop, TASKS tasks in all. Two runs:
#   A) orchd with 1 shard pinned to core 0, orchd-load pinned to core 1
#   B) orchd with 2 shards (2 pools, one per shard), orchd-load unpinned (shares cores)
# Reports orchd-load's summary and orchd's CPU use (utime+stime over wall time).
# Loopback only; bounded by TASKS and 120 s.
#
#   bash perf/scripts/data_plane_load.sh [CONC] [TOKENS] [TASKS]
source "$(dirname "$0")/lib.sh"
CONC=${1:-256}; TOKENS=${2:-256}; TASKS=${3:-4096}
build
PORT=$(free_port 18281)
cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000000
[stream]
retention_ms = 5000
[[pools]]
id = "p0"
slots = 256
queue_capacity = 4096
ctx_max = 8192
[pools.adapter]
ttft_ms = 0
tpot_ms = 0
[[pools]]
id = "p1"
slots = 256
queue_capacity = 4096
ctx_max = 8192
[pools.adapter]
ttft_ms = 0
tpot_ms = 0
TOML

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {
  local label=$1 shards=$2 server_cpus=$3 load_cpus=$4
  CPUS=$server_cpus orchd_start "$DIR/orchd.toml" --shards "$shards"
  local pid=$PID
  local t0 c0 t1 c1
  t0=$(date +%s%N); c0=$(cpu_ticks $pid)
  echo "== $label: orchd --shards $shards on cpus $server_cpus, orchd-load on cpus $load_cpus"
  taskset -c "$load_cpus" "$LOAD" --addr 127.0.0.1:$PORT --concurrency "$CONC" --max-tokens "$TOKENS" --tasks "$TASKS" --duration 120 2>/dev/null
  t1=$(date +%s%N); c1=$(cpu_ticks $pid)
  awk -v c=$((c1 - c0)) -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "orchd CPU: %.2f cores (%.1f s CPU over %.1f s)\n", (c/hz)/(t/1e9), c/hz, t/1e9 }'
  echo "orchd RSS at end: $(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
  stop "$pid"
}
run "A" 1 0 1
run "B" 2 0-1 0-1

#!/usr/bin/env bash
# Plain request throughput: orchd `GET /v1/capabilities` vs the minimal hyper
# hello-world (perf/src/bin/hello_hyper.rs), one after the other in one run, same wrk
# settings. Servers are pinned to core 0 (orchd with one shard), wrk to core 1, so the
# load generator does not steal the server's core. Loopback only; bounded by DURATION.
#
#   bash perf/scripts/http_ceiling.sh [DURATION_S] [CONNECTIONS] [ROUNDS]
source "$(dirname "$0")/lib.sh"
DUR=${1:-10}; CONNS=${2:-64}; ROUNDS=${3:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
build
PORT=$(free_port 18181); PORT_H=$(free_port $((PORT + 1)))
printf '' > "$DIR/orchd.toml"  # the built-in config

rps() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$1" | tee -a "$LOG" | awk '/Requests\/sec/ {print $2}'; }

LOG=$(mktemp)
t0=$(date +%s%N)
CPUS=0 orchd_start "$DIR/orchd.toml" --shards 1; PO=$PID; t1=$(date +%s%N)
echo "orchd startup to first answer: $(( (t1 - t0) / 1000000 )) ms"
echo "orchd idle RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$PO/status)"
taskset -c 0 "$HELLO" 127.0.0.1:$PORT_H 2>/dev/null & track $!
wait_ready $PORT_H /

for r in $(seq "$ROUNDS"); do
  o=$(rps "http://127.0.0.1:$PORT/v1/capabilities")
  h=$(rps "http://127.0.0.1:$PORT_H/")
  echo "round $r: orchd $o req/s, hello-hyper $h req/s, ratio $(awk -v a="$o" -v b="$h" 'BEGIN{printf "%.2f", a/b}')"
done
echo "orchd RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$PO/status)"
echo "(full wrk output: $LOG)"

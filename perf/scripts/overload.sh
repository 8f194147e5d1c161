#!/usr/bin/env bash
# Overload: open-loop arrivals at 0.5x, then 2x a pool's capacity, for SECS seconds
# each, against one orchd. Capacity: 4 slots x (64 tokens x 5 ms) = about 12 tasks/s.
# Reports, per rate: admitted and refused, malformed 429s, frame-order violations,
# errors, TTFT of admitted tasks (from their scheduled arrival: coordinated omission
# corrected), the deepest queue seen by a 50 ms scrape of pool health, and orchd's
# peak RSS (VmHWM). Loopback only; bounded by SECS per rate.
#
#   [QUEUE=16] bash perf/scripts/overload.sh [SECS]     # QUEUE: the pool's queue_capacity
source "$(dirname "$0")/lib.sh"
SECS=${1:-20}; QUEUE=${QUEUE:-16}
build
PORT=$(free_port 18291)
cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000000
[stream]
retention_ms = 2000
[[pools]]
id = "p"
slots = 4
queue_capacity = $QUEUE
policy = "reject"
[pools.adapter]
ttft_ms = 0
tpot_ms = 5
TOML
orchd_start "$DIR/orchd.toml"

depth_watch() {
  local max=0 d
  while [[ -f "$DIR/watch" ]]; do
    d=$(curl -fs http://127.0.0.1:$PORT/v1/pools/p/health | sed -n 's/.*"queue_depth":\([0-9]*\).*/\1/p')
    [[ -n "$d" && "$d" -gt "$max" ]] && max=$d
    sleep 0.05
  done
  echo "$max" > "$DIR/maxdepth"
}

for RATE in 6 24; do
  touch "$DIR/watch"; depth_watch & W=$!
  echo "== open loop at $RATE arrivals/s for ${SECS}s (capacity about 12/s)"
  "$LOAD" --addr 127.0.0.1:$PORT --rate "$RATE" --duration "$SECS" --tasks 100000 --max-tokens 64 2>/dev/null
  rm "$DIR/watch"; wait $W
  echo "deepest queue seen: $(cat "$DIR/maxdepth") (capacity $QUEUE)"
  echo "orchd peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$PID/status)"
done
kill -0 $PID && echo "orchd still running: yes"

#!/usr/bin/env bash
# Cancel latency: streams of up to 1,000 tokens at tpot 5 ms, each canceled after 10
# tokens by a POST .../cancel on a second, kept-alive connection of the same client (and,
# for comparison, on a new connection each time: connect included); the figure is the
# time from sending the cancel to receiving the stream's terminal frame (end, canceled:
# true). Runs at 1 and 256 concurrent streams, closed loop. Loopback only; bounded.
#
#   bash perf/scripts/cancel_latency.sh [TASKS]
source "$(dirname "$0")/lib.sh"
TASKS=${1:-2000}
build
PORT=$(free_port 18331); ADDR=127.0.0.1:$PORT
cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000000
[stream]
retention_ms = 2000
[[pools]]
id = "p"
slots = 512
queue_capacity = 1024
[pools.adapter]
ttft_ms = 0
tpot_ms = 5
TOML
orchd_start "$DIR/orchd.toml"
for RUN in "1 keep" "1 fresh" "256 keep" "256 fresh"; do
  read -r CONC MODE <<<"$RUN"
  echo "== $CONC concurrent streams, cancel after 10 tokens, cancel connection: $MODE"
  "$LOAD" --addr $ADDR --concurrency "$CONC" --tasks "$([[ $CONC == 1 ]] && echo 500 || echo "$TASKS")" \
    --max-tokens 1000 --cancel-after 10 --duration 60 $([[ $MODE == fresh ]] && echo --cancel-fresh) 2>/dev/null
done

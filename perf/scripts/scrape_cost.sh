#!/usr/bin/env bash
# Cost of /metrics: render time with 8 pools on 2 shards, and the inter-token latency
# of a 1,000-stream load without and with a scrape every 100 ms (same run, same
# config). Loopback only; bounded by TASKS and 120 s per run.
#
#   [TPOT=50] [ROUNDS=2] [ORCHD_BIN=path] bash perf/scripts/scrape_cost.sh [STREAMS] [TOKENS] [TASKS]
#
# ORCHD_BIN runs that binary (to compare two builds of orchd); ROUNDS=0 measures the
# idle render time only.
source "$(dirname "$0")/lib.sh"
STREAMS=${1:-1000}; TOKENS=${2:-100}; TASKS=${3:-3000}; TPOT=${TPOT:-50}; ROUNDS=${ROUNDS:-2}
ulimit -n "$(ulimit -Hn)"  # 1,000 streams need more than the usual 1024 fds
build
PORT=$(free_port 18481)
{
  printf '[sessions]\nmax_turns = 1000000\n[stream]\nretention_ms = 2000\n'
  for i in $(seq 0 7); do
    printf '[[pools]]\nid = "p%s"\nslots = 256\nqueue_capacity = 4096\n[pools.adapter]\nttft_ms = 0\ntpot_ms = %s\n' "$i" "$TPOT"
  done
} > "$DIR/c.toml"
orchd_start "$DIR/c.toml" --shards 2

quantiles() { sort -n | awk '{v[NR]=$1} END {printf "n %d  p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", NR, v[int(NR*0.5)+1]*1000, v[int(NR*0.99)+1]*1000, v[NR]*1000}'; }
scrape_times() { for _ in $(seq "$1"); do curl -s -o /dev/null -w '%{time_total}\n' http://127.0.0.1:$PORT/metrics; done; }

echo "== /metrics render, idle (8 pools, 2 shards): $(curl -s http://127.0.0.1:$PORT/metrics | wc -c) bytes"
scrape_times 200 | quantiles
load() { "$LOAD" --addr 127.0.0.1:$PORT --concurrency "$STREAMS" --max-tokens "$TOKENS" --tasks "$TASKS" --duration 120 "$@" 2>/dev/null; }

# Alternating rounds, so that drift in the machine's load hits both sides alike.
for round in $(seq "$ROUNDS"); do
  echo "== round $round, no scrapes: $STREAMS streams x $TOKENS tokens (tpot $TPOT ms), $TASKS tasks"
  load | grep -E "inter-token|tasks "
  echo "== round $round, scraping /metrics every 100 ms on a keep-alive connection"
  load --scrape-every-ms 100 | grep -E "inter-token|tasks |scrapes"
done

#!/usr/bin/env bash
# Tenants sharing a pool (issue 19), side by side in one run, ROUNDS times:
#  - alone:  tenant b alone, one user back to back (closed loop), 16-token tasks;
#  - fair:   the same b while tenant a floods the pool at 10x its capacity (open loop,
#            62 tasks/s of 64 tokens against 4 slots of a 5 ms + 10 ms/token mock:
#            6.2 tasks/s), a and b two tenants of weight 1;
#  - fifo:   the same flood and b's user presenting a's key: one tenant, the queue is
#            first come first served (what every tenant got before issue 19);
#  - shares: a (weight 3, 64-token tasks) and b (weight 1, 16-token tasks) both flooding
#            at 62 tasks/s: the tokens each produced over the window (orchd's own
#            tenant_tokens_out_total) and the tokens granted (produced + prompts, what
#            the fair share counts).
# b's time to first token (orchd-load, from sending the POST to the first token's bytes)
# is what each line reports; the flood starts 3 s before b's user and outlives it.
# A fresh orchd (2 shards) per scenario, so no backlog carries over. Loopback only;
# bounded by DURATION.
#
#   bash perf/scripts/tenants.sh [DURATION_S] [ROUNDS]
source "$(dirname "$0")/lib.sh"
DUR=${1:-15}; ROUNDS=${2:-3}
build
PORT=$(free_port 18291)
U="http://127.0.0.1:$PORT"

start() { # weight_a weight_b
  cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000000
[stream]
retention_ms = 2000
orphan_timeout_ms = 3600000
[[pools]]
id = "p"
slots = 4
queue_capacity = 100000
[pools.adapter]
ttft_ms = 5
tpot_ms = 10
decode_timeout_ms = 3600000
[[tenants]]
name = "a"
keys = ["key-a"]
weight = $1
[[tenants]]
name = "b"
keys = ["key-b"]
weight = $2
TOML
  orchd_start "$DIR/orchd.toml" --shards 2
}
tokens_of() { curl -fs "$U/metrics" | awk -v t="$1" '$1 == "tenant_tokens_out_total{tenant=\"" t "\"}" {print $2}'; }
flood() { # key max_tokens seconds -> background open-loop load, pid in FLOOD
  "$LOAD" --addr "127.0.0.1:$PORT" --api-key "$1" --rate 62 --max-tokens "$2" --tasks 1000000 \
    --duration "$3" --json > "$DIR/flood-$1.json" 2>/dev/null &
  FLOOD=$!; track "$FLOOD"; }
user_b() { # key -> b's one closed-loop user for DUR s; prints "ttft_p50 ttft_p99 tasks"
  "$LOAD" --addr "127.0.0.1:$PORT" --api-key "$1" --concurrency 1 --max-tokens 16 --tasks 1000000 \
    --duration "$DUR" --json > "$DIR/b.json" 2>/dev/null
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); t=s["ttft_ms"]; print(t["p50"], t["p99"], s["tasks"])' "$DIR/b.json"; }

echo "# commit $(git rev-parse --short HEAD), $(nproc) cores, $(uname -r); mock 5 ms + 10 ms/token, 4 slots, 2 shards"
echo "# scenario  b_ttft_p50_ms  b_ttft_p99_ms  b_tasks"
for r in $(seq "$ROUNDS"); do
  start 1 1; echo "alone $(user_b key-b)"; stop "$PID"
  start 1 1; flood key-a 64 $((DUR + 6)); sleep 3; echo "fair $(user_b key-b)"; stop "$FLOOD"; stop "$PID"
  start 1 1; flood key-a 64 $((DUR + 6)); sleep 3; echo "fifo $(user_b key-a)"; stop "$FLOOD"; stop "$PID"
  start 3 1; flood key-a 64 $((DUR + 6)); FA=$FLOOD; flood key-b 16 $((DUR + 6)); FB=$FLOOD
  sleep 3; a0=$(tokens_of a); b0=$(tokens_of b); sleep "$DUR"; a1=$(tokens_of a); b1=$(tokens_of b)
  # Granted = produced + prompts ("load test": 2 tokens a task; a's tasks are 64 tokens,
  # b's 16): what the fair share counts.
  awk -v a="$((a1 - a0))" -v b="$((b1 - b0))" 'BEGIN {ga = a + 2 * a / 64; gb = b + 2 * b / 16
    printf "shares produced a:b=%d:%d=%.3f granted a:b=%.0f:%.0f=%.3f (weights 3:1)\n", a, b, a / b, ga, gb, ga / gb}'
  stop "$FA"; stop "$FB"; stop "$PID"
done

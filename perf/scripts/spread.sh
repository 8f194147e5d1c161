#!/usr/bin/env bash
# One pool over N replicas (issue 20): orchd (two shards, the default here) in front of N
# OpenAI-compatible fake engines (perf/src/bin/fake_engine.rs; TPOT_US between a stream's
# tokens, default 0: none), a closed loop of
# CONC users streaming TOKENS tokens a task; rounds alternate `spread_replicas = false`
# (every replica on the pool's owner) and `true` (spread over the shards). Per round:
# tokens/s, each shard thread's CPU, and (PSTAT=1) sendmsg / io_uring_enter calls of orchd
# in a 2 s window (perf stat). Loopback only; bounded by TASKS.
#
#   bash perf/scripts/spread.sh [N] [ROUNDS]
#   env: CONC=64 TOKENS=256 TASKS=3000 TPOT_US=0 PSTAT= (set: count system calls)
source "$(dirname "$0")/lib.sh"
N=${1:-4}; ROUNDS=${2:-3}; CONC=${CONC:-64}; TOKENS=${TOKENS:-256}; TASKS=${TASKS:-3000}
TPOT_US=${TPOT_US:-0}
build
EP=$(free_port 19300); URLS=()
for i in $(seq "$N"); do
  EP=$(free_port "$EP")
  "$FAKE" "127.0.0.1:$EP" --tpot-us "$TPOT_US" 2>/dev/null & track $!
  wait_ready "$EP" /v1/models
  URLS+=("\"http://127.0.0.1:$EP\""); EP=$((EP + 1))
done
PORT=$(free_port $((EP + 1)))

cpu() { for t in /proc/$1/task/*; do
  case $(cat "$t/comm") in orchd-shard*) echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")";; esac
done | sort -u -k1,1; }

round() {
  local spread=$1 urls
  urls=$(IFS=,; echo "${URLS[*]}")
  printf '[sessions]\nmax_turns = 1000000\n[[pools]]\nid = "engine"\nslots = %s\nqueue_capacity = 4096\n[pools.adapter]\nkind = "openai"\nurls = [%s]\nspread_replicas = %s\n' \
    $((256 / N)) "$urls" "$spread" > "$DIR/c.toml"
  orchd_start "$DIR/c.toml"
  local ps=
  if [[ -n ${PSTAT:-} ]]; then
    perf stat -e syscalls:sys_enter_sendmsg,syscalls:sys_enter_io_uring_enter \
      -p "$PID" -o "$DIR/pstat" -- sleep 2 & ps=$!
  fi
  cpu "$PID" > "$DIR/a"; local t0; t0=$(date +%s%N)
  local line; line=$("$LOAD" --addr "127.0.0.1:$PORT" --concurrency "$CONC" --max-tokens "$TOKENS" \
    --tasks "$TASKS" --duration 120 2>/dev/null | grep -E '^tasks')
  cpu "$PID" > "$DIR/b"; local t1; t1=$(date +%s%N)
  local shards; shards=$(join "$DIR/a" "$DIR/b" | awk -v s=$(( (t1 - t0) / 1000000 )) \
    '{printf "%s %.3f ", $1, ($3 - $2) / 100 / (s / 1000)}')
  echo "spread_replicas=$spread: $line | cores: $shards"
  if [[ -n $ps ]]; then wait "$ps"; awk '/syscalls/ {printf "  %s %s\n", $2, $1}' "$DIR/pstat"; fi
  stop "$PID"
}

echo "N=$N replicas, $CONC users, $TOKENS tokens a task, $TASKS tasks a round, engine tpot $TPOT_US us"
for r in $(seq "$ROUNDS"); do
  round false
  round true
done

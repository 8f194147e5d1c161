#!/usr/bin/env bash
# Replica sets (issue 20) in front of three real llama.cpp servers on 127.0.0.2-4:
# the spread of tasks over replicas, how sticky sessions are, and what happens when one
# server is killed mid-run (perf/scripts/replicas.py does the measuring).
#
#   bash perf/scripts/replicas.sh [SESSIONS TURNS AT_ONCE]     # defaults 24 5 12
#
# Needs the real engine built (../shared/tools/real-engine/setup.sh): RE_HOME (default
# /tmp/real-engine) holds llama-server and the tiny model. Loopback only, bounded.
source "$(dirname "$0")/lib.sh"
build orchd-http
llama_set 18841
pids=("${LLAMA_PIDS[@]}"); urls=("${LLAMA_URLS[@]}"); EP=${LLAMA_ADDRS[0]##*:}
cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000
[[pools]]
id = "set"
engine = "llamacpp"
model_ref = "tiny"
slots = 2
queue_capacity = 1024
[pools.adapter]
kind = "llamacpp"
urls = [$(IFS=,; echo "${urls[*]}")]
health_interval_ms = 200
retries = 0
TOML
PORT=$(free_port 18851)
ORCHD_LOG=info "$ORCHD" --config "$DIR/orchd.toml" --addr "127.0.0.1:$PORT" 2> "$DIR/orchd.log" &
PID=$!; track "$PID"; wait_ready "$PORT"
echo "machine: $(nproc) cpus, $(uname -r); commit $(git rev-parse --short HEAD); $(date -u +%FT%TZ)"
python3 "$(dirname "$0")/replicas.py" --addr "127.0.0.1:$PORT" --log "$DIR/orchd.log" \
  --sessions "${1:-24}" --turns "${2:-5}" --conc "${3:-12}" \
  --kill-pid "${pids[1]}" --kill-id "127.0.0.3:$EP"

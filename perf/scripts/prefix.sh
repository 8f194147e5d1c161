#!/usr/bin/env bash
# Prefix routing (issue 20) measured where it pays or not: the prompt cache hits of three
# real llama.cpp servers on 127.0.0.2-4 behind one orchd pool, for session-less requests
# through the OpenAI door whose prompts share long prefixes (perf/scripts/prefix.py sends
# them and reads the engines' own counters). For each `adapter.prefix_bytes` given, the
# engines are started afresh (empty caches) and get the same requests in the same order.
#
#   bash perf/scripts/prefix.sh [PREFIX_BYTES...]     # default: 0 256
#   CACHE_RAM=0 bash perf/scripts/prefix.sh           # engines without their host-memory
#                                                     # prompt cache (llama-server --cache-ram)
#   PREFIXES=24 PER_PREFIX=8 CONC=6 bash perf/scripts/prefix.sh
#
# Needs the real engine built (../shared/tools/real-engine/setup.sh): RE_HOME (default
# /tmp/real-engine) holds llama-server and the tiny model. Loopback only, bounded.
source "$(dirname "$0")/lib.sh"
build orchd-http
CACHE_RAM=${CACHE_RAM:-8192}
echo "machine: $(nproc) cpus, $(uname -r); commit $(git rev-parse --short HEAD); $(date -u +%FT%TZ)"
echo "engines: 3 x llama-server -c 8192 -np 2 --cache-ram $CACHE_RAM; requests: ${PREFIXES:-24} prefixes x ${PER_PREFIX:-8}, ${CONC:-6} at once"
(($#)) || set -- 0 256
for bytes in "$@"; do
  llama_set 18861 --cache-ram "$CACHE_RAM"
  pids=("${LLAMA_PIDS[@]}"); urls=("${LLAMA_URLS[@]}"); eps=("${LLAMA_ADDRS[@]}")
  cat > "$DIR/orchd.toml" <<TOML
[[pools]]
id = "set"
engine = "llamacpp"
model_ref = "tiny"
slots = 2
queue_capacity = 1024
[pools.adapter]
kind = "llamacpp"
urls = [$(IFS=,; echo "${urls[*]}")]
prefix_bytes = $bytes
health_interval_ms = 200
TOML
  PORT=$(free_port 18871)
  orchd_start "$DIR/orchd.toml"
  python3 "$(dirname "$0")/prefix.py" --addr "127.0.0.1:$PORT" --engines "${eps[@]}" \
    --prefixes "${PREFIXES:-24}" --per-prefix "${PER_PREFIX:-8}" --conc "${CONC:-6}" \
    --label "prefix_bytes = $bytes"
  stop "$PID"
  for p in "${pids[@]}"; do stop "$p"; done
done

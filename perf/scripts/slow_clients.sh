#!/usr/bin/env bash
# Do clients that never read hurt the others? A reference load (orchd-load, closed loop,
# USERS streams of 256 tokens at tpot 5 ms) runs alone, then beside SLOW streams whose
# clients never read a byte (perf/scripts/soak.py; their tasks decode at tpot 50 ms, so
# the engine work they cause is modest and what is measured is the not-reading),
# alternating, ROUNDS times each.
# Reports the reference's inter-token and first-token latency for each round, and
# orchd's RSS. Loopback only; every run bounded.
#
#   bash perf/scripts/slow_clients.sh [SLOW] [USERS] [ROUNDS]
source "$(dirname "$0")/lib.sh"
SLOW=${1:-1000}; USERS=${2:-32}; ROUNDS=${3:-2}
build
PORT=$(free_port 18311); ADDR=127.0.0.1:$PORT
cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000000
[stream]
retention_ms = 5000
orphan_timeout_ms = 60000
[[pools]]
id = "never-read"
slots = 2048
queue_capacity = 1024
[pools.adapter]
ttft_ms = 0
tpot_ms = 50                 # 1,000 such streams: 20k tokens/s that nobody reads
[[pools]]
id = "reference"
engine = "vllm"
slots = 64
[pools.adapter]
ttft_ms = 0
tpot_ms = 5
TOML
orchd_start "$DIR/orchd.toml"

reference() {
  "$LOAD" --addr $ADDR --engine vllm --concurrency "$USERS" --tasks $((USERS * 4)) --max-tokens 256 --duration 60 --json 2>/dev/null \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); i=d["itl_ms"]; t=d["ttft_ms"]; print("tasks %d errors %d violations %d  ITL p50 %.2f p99 %.2f p99.9 %.2f ms  TTFT p50 %.2f p99 %.2f ms" % (d["tasks"], d["errors"], d["frame_violations"], i["p50"], i["p99"], i["p999"], t["p50"], t["p99"]))'
}
for r in $(seq "$ROUNDS"); do
  echo "== round $r, alone:                 $(reference)"
  python3 perf/scripts/soak.py 127.0.0.1 $PORT 25 "$SLOW" 0 > "$DIR/slow.json" 2>"$DIR/slow.err" &
  S=$!
  sleep 5
  echo "== round $r, beside $SLOW never-read: $(reference)   (orchd RSS $(awk '/VmRSS/ {print $2}' /proc/$PID/status) kB)"
  wait $S || true
  echo "   slow clients: $(cat "$DIR/slow.json")"
done

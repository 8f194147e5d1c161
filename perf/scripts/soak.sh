#!/usr/bin/env bash
# Soak: MINUTES of everything at once against one release orchd (not in CI):
#   - open-loop tasks at about half the main pool's capacity (orchd-load --rate), with
#     a /metrics scrape every 500 ms;
#   - a closed loop on a pool whose engine dies after 10 tokens (WORKER_RESET) and one on
#     a pool whose engine stalls after 3 tokens (DECODE_TIMEOUT);
#   - artifact writes to the fs backend;
#   - 100 streams never read and 100 connections trickling their headers (soak.py);
#   - at half time, kill -9 under load and a restart on the same port and directory.
# Then: every artifact acknowledged before the kill is read back (orchd verifies each
# against its id), and a summary: tasks, tokens, errors by kind, frame-order violations,
# malformed 429s, lost artifacts, RSS and file descriptors over time, panics in the log.
# Loopback only; every part stops by itself.
#
#   bash perf/scripts/soak.sh [MINUTES]
source "$(dirname "$0")/lib.sh"
MINUTES=${1:-10}
HALF=$((MINUTES * 30))
build
PORT=$(free_port 18301); ADDR=127.0.0.1:$PORT
mkdir -p "$DIR/artifacts"
cat > "$DIR/orchd.toml" <<TOML
[server]
max_connections = 4096
header_read_timeout_ms = 2000
shutdown_grace_ms = 2000
[sessions]
max_turns = 1000000
[stream]
retention_ms = 5000
orphan_timeout_ms = 5000
[artifacts]
backend = "fs"
dir = "$DIR/artifacts"
[[pools]]
id = "main"
slots = 64
queue_capacity = 256
[pools.adapter]
ttft_ms = 2
tpot_ms = 2
[[pools]]
id = "flaky"
engine = "vllm"
slots = 8
[pools.adapter]
ttft_ms = 0
tpot_ms = 2
fail_after_tokens = 10
[[pools]]
id = "stalling"
engine = "tgi"
slots = 8
[pools.adapter]
ttft_ms = 0
tpot_ms = 2
stall_after_tokens = 3
decode_timeout_ms = 500
TOML

start() {
  orchd_start "$DIR/orchd.toml"
  echo $PID > "$DIR/pid"  # for samples taken in background phases
}
sample() {
  local pid; pid=$(cat "$DIR/pid")
  echo "$(date +%s) rss_kb=$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null) fds=$(ls /proc/$pid/fd 2>/dev/null | wc -l)" >> "$DIR/samples"
}
start

phase() {  # phase SECONDS NAME: every load for SECONDS, outputs under $DIR/NAME-*
  local secs=$1 name=$2
  "$LOAD" --addr $ADDR --rate 200 --duration "$secs" --tasks 10000000 --max-tokens 64 \
    --scrape-every-ms 500 --json > "$DIR/$name-open.json" 2>/dev/null &
  local a=$!
  "$LOAD" --addr $ADDR --engine vllm --concurrency 8 --duration "$secs" --tasks 10000000 \
    --max-tokens 32 --json > "$DIR/$name-flaky.json" 2>/dev/null &
  local b=$!
  "$LOAD" --addr $ADDR --engine tgi --concurrency 8 --duration "$secs" --tasks 10000000 \
    --max-tokens 32 --json > "$DIR/$name-stalling.json" 2>/dev/null &
  local c=$!
  python3 perf/scripts/soak.py 127.0.0.1 $PORT "$secs" 100 > "$DIR/$name-hostile.json" 2>"$DIR/$name-hostile.err" &
  local d=$!
  local end=$((SECONDS + secs)) n=0
  : > "$DIR/$name-acked"
  while ((SECONDS < end)); do
    # Artifact writes, recorded when acknowledged.
    local body="{\"kind\":\"other\",\"content\":{\"phase\":\"$name\",\"n\":$n,\"pad\":\"$(head -c 512 /dev/zero | tr '\0' 'p')\"}}"
    local id
    id=$(curl -fs -m 2 -X POST http://$ADDR/v1/artifacts -H 'content-type: application/json' -d "$body" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p') || true
    [[ -n "$id" ]] && echo "$id" >> "$DIR/$name-acked"
    n=$((n + 1))
    ((n % 20 == 0)) && sample
    sleep 0.05
  done
  wait $a $b $c $d || true
}

echo "== soak: $MINUTES minutes against $ADDR (artifacts in $DIR/artifacts)"
phase "$((HALF + 5))" first &
FIRST=$!
sleep "$HALF"
echo "== kill -9 at half time, under load, then restart"
kill -9 $PID; wait $PID 2>/dev/null || true
start
wait $FIRST || true
lost=0
while read -r id; do
  code=$(curl -s -o /dev/null -w '%{http_code}' http://$ADDR/v1/artifacts/$id)
  [[ "$code" == 200 ]] || lost=$((lost + 1))
done < "$DIR/first-acked"
echo "artifacts acknowledged in the first half (kill -9 among them): $(wc -l < "$DIR/first-acked"), lost: $lost"
phase "$HALF" second
sample
echo "== summary"
for f in "$DIR"/first-*.json "$DIR"/second-*.json; do
  python3 - "$f" <<'PY'
import json, os, sys
p = sys.argv[1]
try:
    d = json.load(open(p))
except Exception as e:
    print(f"{os.path.basename(p)}: no summary ({e})"); sys.exit()
keys = ["tasks", "tokens", "rejected_429", "malformed_429", "errors", "frame_violations", "never_read_streams", "tricklers", "tricklers_cut_off", "submit_failures"]
parts = [f"{k}={d[k]}" for k in keys if k in d]
if "ttft_ms" in d:
    parts.append(f"ttft_p99={d['ttft_ms']['p99']}ms itl_p99={d['itl_ms']['p99']}ms")
if "scrape_ms" in d:
    parts.append(f"scrapes={d['scrape_ms']['n']} scrape_p99={d['scrape_ms']['p99']}ms")
print(f"{os.path.basename(p)}: " + " ".join(parts))
PY
done
echo "RSS / fds over time (first, max, last):"
awk '{split($2,a,"="); split($3,b,"="); if (NR==1) {f=a[2]; ff=b[2]} if (a[2]>m) m=a[2]; if (b[2]>mf) mf=b[2]; l=a[2]; lf=b[2]} END {printf "  rss_kb %d / %d / %d   fds %d / %d / %d\n", f, m, l, ff, mf, lf}' "$DIR/samples"
echo "panics in the log: $(grep -c panicked "$DIR/orchd.log" || true)"
kill -TERM $PID; wait $PID; echo "orchd exit after SIGTERM: $?"

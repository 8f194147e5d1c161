#!/usr/bin/env bash
# Admission throughput, side by side in one run (issue 7 targets):
#  - accepted: `POST /v1/tasks` answered 202 per second, orchd vs the tokio/axum
#    baseline; every task is new (wrk script perf/scripts/submit.lua), has 16 tokens at
#    zero engine latency and runs with nobody streaming it; slots and queue are large
#    enough that nothing is refused (wrk's non-2xx count must be 0);
#  - refused: `POST /v1/tasks` answered 429 (queue full, with retry advice) per second,
#    orchd vs the hello-world hyper ceiling (`GET /`): the pool's one slot is held by a
#    long task (60 s to its first token, well inside the requests' 600 s deadline, so
#    the answer is "queue full", not "deadline unmet") and its queue has no room, so
#    every POST is refused; a probe checks that the answer is a 429 before the load.
# Servers are pinned to core 0 (orchd with one shard), wrk (one thread) to core 1.
# Each accepted-load run also reports the server's CPU per accepted task (us, from
# /proc/PID/stat). With PROFILE=FILE, orchd's accepted-load runs are recorded
# (`perf record -e cpu-clock --call-graph dwarf`, the last round's in FILE; read it with
# `perf report -i FILE`). Loopback only; bounded by DURATION.
#
#   bash perf/scripts/admission.sh [DURATION_S] [CONNECTIONS] [ROUNDS]
source "$(dirname "$0")/lib.sh"
DUR=${1:-5}; CONNS=${2:-64}; ROUNDS=${3:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
build
LUA=perf/scripts/submit.lua
PORT=$(free_port 18191); P=$PORT
# wrk [extra args] URL -> "req/s non-2xx total"
load() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" "$@" > "$DIR/wrk.txt"
  awk '/Requests\/sec/ {r=$2} /Non-2xx/ {n=$5} /requests in/ {t=$1} END {printf "%s %d %d\n", r, n, t}' "$DIR/wrk.txt"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# load_cpu [extra args] URL -> "req/s non-2xx total us-of-server-CPU-per-request" (the
# server is $S; PROFILE_THIS=1 records it into $PROFILE meanwhile)
load_cpu() { local c0 c1 rec="" out
  if [[ -n ${PROFILE:-} && ${PROFILE_THIS:-} == 1 ]]; then
    perf record -e cpu-clock -F 4000 --call-graph dwarf,16384 -p "$S" -o "$PROFILE" 2>/dev/null & rec=$!; sleep 0.3; fi
  c0=$(ticks "$S"); out=$(load "$@"); c1=$(ticks "$S")
  if [[ -n $rec ]]; then kill -INT "$rec"; wait "$rec" 2>/dev/null || true; fi
  awk -v o="$out" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {split(o, f, " "); printf "%s %.1f\n", o, c / hz / f[3] * 1e6}'; }
submit() { # submits one new task with curl, prints the status code
  curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' "http://127.0.0.1:$P/v1/tasks" -d \
    "{\"task_id\":\"$(python3 -c 'import uuid; print(uuid.uuid4())')\",\"session_id\":\"$(python3 -c 'import uuid; print(uuid.uuid4())')\",\"workload\":\"completion\",\"model_ref\":\"m\",\"engine\":\"llamacpp\",\"ctx\":8192,\"priority\":\"interactive\",\"max_tokens\":16,\"deadline_ms\":600000,\"prompt\":\"hold\"}"; }
hold_slot() { # the first task takes the slot; the next must be refused with 429
  local a b; a=$(submit); b=$(submit)
  [ "$a" = 202 ] && [ "$b" = 429 ] || { echo "refusal setup: expected 202 then 429, got $a then $b"; exit 1; }; }

orchd() { # slots queue ttft_ms -> starts orchd, pid in $S
  cat > "$DIR/orchd.toml" <<TOML
[sessions]
max_turns = 1000000
[stream]
retention_ms = 1000
orphan_timeout_ms = 3600000
[[pools]]
id = "p"
slots = $1
queue_capacity = $2
[pools.adapter]
ttft_ms = $3
tpot_ms = 0
decode_timeout_ms = 3600000
TOML
  CPUS=0 orchd_start "$DIR/orchd.toml" --shards 1; S=$PID
}
baseline() { # slots queue ttft_ms
  taskset -c 0 "$BASE" 127.0.0.1:$P --slots "$1" --queue "$2" --ttft-ms "$3" 2>/dev/null &
  S=$!; track "$S"; wait_ready $P /livez
}
hello() { taskset -c 0 "$HELLO" 127.0.0.1:$P 2>/dev/null & S=$!; track "$S"; wait_ready $P /; }

echo "machine: $(nproc) cpus, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), $(uname -r); commit $(git rev-parse --short HEAD); $(date -u +%FT%TZ)"
echo "wrk -t1 -c$CONNS -d${DUR}s; servers on core 0, wrk on core 1"
for r in $(seq "$ROUNDS"); do
  orchd 4096 100000 0;   read -r oa on ot ou < <(PROFILE_THIS=1 load_cpu -s $LUA "http://127.0.0.1:$P/v1/tasks"); stop "$S"
  baseline 4096 100000 0; read -r ba bn bt bu < <(load_cpu -s $LUA "http://127.0.0.1:$P/v1/tasks"); stop "$S"
  orchd 1 0 60000; hold_slot; read -r orf orn ort < <(load -s $LUA "http://127.0.0.1:$P/v1/tasks"); stop "$S"
  hello;                 read -r h _ < <(load "http://127.0.0.1:$P/"); stop "$S"
  printf 'round %d: accepted/s orchd %s (%s of %s refused, %s us CPU each) baseline %s (%s of %s refused, %s us CPU each) ratio %s | 429/s orchd %s (%s of %s refused) hello-world %s ratio %s\n' \
    "$r" "$oa" "$on" "$ot" "$ou" "$ba" "$bn" "$bt" "$bu" "$(awk -v a="$oa" -v b="$ba" 'BEGIN{printf "%.2f", a/b}')" \
    "$orf" "$orn" "$ort" "$h" "$(awk -v a="$orf" -v b="$h" 'BEGIN{printf "%.2f", a/b}')"
done

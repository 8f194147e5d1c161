#!/usr/bin/env bash
# orchd vs the tokio/axum baseline (perf/src/bin/baseline_axum.rs), one after the other
# on this machine, same scenarios, same load generator; prints each figure and the ratio
# orchd/baseline. Loopback only; every run is bounded. Results with date, commit and
# machine go to perf/results/ when OUT is set:
#
#   bash perf/compare.sh                      # print (DISPATCHER=thread|shard0 picks orchd's)
#   OUT=perf/results/$(date +%F)-compare.md bash perf/compare.sh
#   ORCHD_BIN=/tmp/orchd-before bash perf/compare.sh   # another orchd build, same scenarios
#   ONLY="throughput streams1000" bash perf/compare.sh  # some scenarios only
#   RUNTIMES=epoll bash perf/compare.sh       # orchd's runtimes to run (default: io_uring epoll;
#                                             # `default` sets none, for builds without the key)
#   PIN_CORES=false bash perf/compare.sh      # orchd's shards unpinned (`server.pin_cores`): the
#                                             # kernel may move them, as it moves the baseline's workers
#   SHARDS=1 bash perf/compare.sh             # orchd's shard count (`server.shards`; default: one per core)
#   ROUNDS=3 bash perf/compare.sh             # each scenario N times, interleaved (each round: orchd on
#                                             # each runtime, then the baseline): medians, each round's ratio
#   SERVER_CPUS=0 LOAD_CPUS=1 bash perf/compare.sh  # servers and load generator on cores of their own
#                                             # (taskset lists; orchd then runs a shard per server core,
#                                             # the baseline a tokio worker per server core)
#
# With `perf` on the PATH (and perf_event_paranoid <= 2), the server's system calls are
# counted during each run (tracepoint raw_syscalls:sys_enter, all its threads) and
# reported per delivered token.
source "$(dirname "$0")/scripts/lib.sh"
ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a whole number >= 1, not '$ROUNDS'" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"
build
OP=$(free_port 18781); BP=$(free_port $((OP + 1)))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

RUNTIMES=${RUNTIMES:-io_uring epoll}
# `taskset -c LIST` prefixes (exec'ing, so a started server's pid stays its own).
SERVER_ON=(); [[ -z ${SERVER_CPUS:-} ]] || SERVER_ON=(taskset -c "$SERVER_CPUS")
LOAD_ON=(); [[ -z ${LOAD_CPUS:-} ]] || LOAD_ON=(taskset -c "$LOAD_CPUS")
# The runtime is the config's (below); an ORCHD_RUNTIME from the caller would override it.
unset ORCHD_RUNTIME

start_orchd() { # runtime tpot_ms slots_per_pool
  printf '[server]\ndispatcher = "%s"\n' "${DISPATCHER:-shard0}" > "$DIR/orchd.toml"
  [[ $1 == default ]] || printf 'runtime = "%s"\n' "$1" >> "$DIR/orchd.toml"
  [[ -z ${PIN_CORES:-} ]] || printf 'pin_cores = %s\n' "$PIN_CORES" >> "$DIR/orchd.toml"
  [[ -z ${SHARDS:-} ]] || printf 'shards = %s\n' "$SHARDS" >> "$DIR/orchd.toml"
  shift
  printf '[sessions]\nmax_turns = 1000000\n[stream]\nretention_ms = 5000\n[[pools]]\nid = "p0"\nslots = %s\nqueue_capacity = 4096\n[pools.adapter]\nttft_ms = 0\ntpot_ms = %s\n[[pools]]\nid = "p1"\nslots = %s\nqueue_capacity = 4096\n[pools.adapter]\nttft_ms = 0\ntpot_ms = %s\n' "$2" "$1" "$2" "$1" >> "$DIR/orchd.toml"
  CPUS=${SERVER_CPUS:-} PORT=$OP orchd_start "$DIR/orchd.toml"; echo "$PID" > "$DIR/pid"
}
start_baseline() { # tpot_ms slots
  "${SERVER_ON[@]}" "$BASE" 127.0.0.1:$BP --slots "$2" --queue 8192 --tpot-ms "$1" 2>/dev/null & echo $! > "$DIR/pid"
  track "$(cat "$DIR/pid")"; wait_ready $BP /livez
}
stop_server() { stop "$(cat "$DIR/pid")"; }

measure() { # name port conc tokens tasks [extra orchd-load args] -> json file with cpu (and syscalls) added
  local pid; pid=$(cat "$DIR/pid"); local c0 t0 c1 t1 sp=""
  if command -v perf >/dev/null; then
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$DIR/$1.perf" 2>/dev/null & sp=$!
    sleep 0.2
  fi
  c0=$(cpu_ticks "$pid"); t0=$(date +%s%N)
  "${LOAD_ON[@]}" "$LOAD" --addr "127.0.0.1:$2" --concurrency "$3" --max-tokens "$4" --tasks "$5" ${6:-} --duration 120 --json 2>/dev/null > "$DIR/$1.json"
  c1=$(cpu_ticks "$pid"); t1=$(date +%s%N)
  if [[ -n $sp ]]; then kill -INT "$sp"; wait "$sp" 2>/dev/null || true; fi
  python3 - "$DIR/$1.json" $((c1 - c0)) $((t1 - t0)) "$(getconf CLK_TCK)" "$DIR/$1.perf" <<'PY'
import json, os, sys
p, ticks, ns, hz, perf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
d = json.load(open(p)); d["server_cpu_cores"] = (ticks / hz) / (ns / 1e9)
d["server_cpu_us_per_task"] = (ticks / hz) * 1e6 / max(d["tasks"], 1)
if os.path.exists(perf):
    for line in open(perf):
        f = line.split(",")
        if len(f) > 2 and f[2].startswith("raw_syscalls") and f[0].isdigit():
            d["server_syscalls"] = int(f[0])
            d["syscalls_per_token"] = int(f[0]) / max(d["tokens"], 1)
json.dump(d, open(p, "w"))
PY
}

scenario() { # label conc tokens tasks tpot [slots, of each of orchd's 2 pools; 256] [orchd-load args]
  [[ -z ${ONLY:-} || " $ONLY " == *" $1 "* ]] || return 0
  local slots=${6:-256} rt r
  for ((r = 1; r <= ROUNDS; r++)); do
    for rt in $RUNTIMES; do
      start_orchd "$rt" "$5" "$slots"; measure "orchd-$rt-$1-$r" $OP "$2" "$3" "$4" "${7:-}"; stop_server
    done
    start_baseline "$5" $((2 * slots)); measure "base-$1-$r" $BP "$2" "$3" "$4" "${7:-}"; stop_server
  done
}

echo "orchd dispatcher: ${DISPATCHER:-shard0}; runtimes: $RUNTIMES; pin_cores: ${PIN_CORES:-true}; shards: ${SHARDS:-one per core}; rounds: $ROUNDS; server cpus: ${SERVER_CPUS:-any}; load generator cpus: ${LOAD_CPUS:-any}"
echo "machine: $(nproc) cpus, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), $(uname -r); commit $(git rev-parse --short HEAD); $(date -u +%FT%TZ)"
scenario throughput 256 256 4096 0
scenario streams1000 1000 256 8192 0
scenario latency 1 64 2000 0
scenario paced 1000 100 2000 50
scenario paced1000 1000 100 3000 50 1024
# Open loop: 200 new tasks a second, each 100 tokens at 50 ms (5 s), so ~1,000 streams
# run at once once it is under way, without the closed loop's synchronized waves.
scenario open1000 1000 100 3000 50 1024 "--rate 200"
# Paced waves (issue 16): tokens every 20 ms, every user starting at once, a slot for
# every user (so TTFT is scheduling, not queueing); each user runs its tasks back to
# back, so arrivals keep coming in waves.
scenario waves256 256 64 2048 20 256
scenario waves1000 1000 64 4000 20 1024

python3 - "$DIR" "$ROUNDS" $RUNTIMES <<'PY' | tee "${OUT:-/dev/null}"
import json, sys, os, statistics
d, rounds, runtimes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cpu_task = ("server CPU us per task", "server_cpu_us_per_task", None)
rows = [
  ("throughput", "256 streams x 256 tokens, zero engine latency", [("tokens/s", "tokens_per_s", True), ("tasks/s", "tasks_per_s", True), ("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None), ("syscalls per token", "syscalls_per_token", False)]),
  ("streams1000", "1000 streams x 256 tokens, zero engine latency", [("tokens/s", "tokens_per_s", True), ("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None), ("syscalls per token", "syscalls_per_token", False)]),
  ("latency", "1 stream at a time x 64 tokens, zero engine latency", [("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("inter-token p99 ms", ("itl_ms", "p99"), False), ("tasks/s", "tasks_per_s", True)]),
  ("paced1000", "1000 streams x 100 tokens, 50 ms per token, 2048 slots: every stream runs", [("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("inter-token p50 ms", ("itl_ms", "p50"), False), ("inter-token p99 ms", ("itl_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None), cpu_task]),
  ("open1000", "open loop, 200 tasks/s x 100 tokens at 50 ms per token: ~1000 concurrent streams", [("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("inter-token p99 ms", ("itl_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None), ("syscalls per token", "syscalls_per_token", False)]),
  ("waves256", "256 users x 64 tokens, 20 ms per token, all starting together, a slot each", [("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("submit p50 ms", ("submit_ms", "p50"), False), ("submit p99 ms", ("submit_ms", "p99"), False), ("inter-token p99 ms", ("itl_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None), cpu_task, ("syscalls per token", "syscalls_per_token", False)]),
  ("waves1000", "1000 users x 64 tokens, 20 ms per token, all starting together, a slot each", [("TTFT p50 ms", ("ttft_ms", "p50"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("submit p50 ms", ("submit_ms", "p50"), False), ("submit p99 ms", ("submit_ms", "p99"), False), ("inter-token p99 ms", ("itl_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None), cpu_task, ("syscalls per token", "syscalls_per_token", False)]),
  ("paced", "1000 streams x 100 tokens, 50 ms per token", [("inter-token p50 ms", ("itl_ms", "p50"), False), ("inter-token p99 ms", ("itl_ms", "p99"), False), ("TTFT p99 ms", ("ttft_ms", "p99"), False), ("server CPU cores", "server_cpu_cores", None)]),
]
def get(j, k):
    return j[k[0]][k[1]] if isinstance(k, tuple) else j.get(k, float("nan"))
def ratio(a, b):
    return f"{a / b:.2f}" if b else "inf"
# With several rounds: each cell is the median of the rounds, the ratio is of the
# medians, and the last columns give each round's ratio (orchd and baseline of the
# same round ran one after the other), so the reader sees how far the rounds agree.
head = ["scenario", "figure"] + [f"orchd {r}" for r in runtimes] + ["baseline"] + [f"{r}/baseline" for r in runtimes] + ["best"]
if rounds > 1:
    head += [f"{r}/baseline by round" for r in runtimes]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for name, desc, figs in rows:
    if not os.path.exists(os.path.join(d, f"base-{name}-1.json")):
        continue
    load = lambda who: [json.load(open(os.path.join(d, f"{who}-{name}-{i}.json"))) for i in range(1, rounds + 1)]
    os_ = [load(f"orchd-{r}") for r in runtimes]
    b = load("base")
    for label, key, higher in figs:
        each = [[get(j, key) for j in o] for o in os_]
        beach = [get(j, key) for j in b]
        ovs, bv = [statistics.median(e) for e in each], statistics.median(beach)
        ratios = [ratio(ov, bv) for ov in ovs]
        if higher is None:
            best = "-"
        else:
            cands = [(ov, f"orchd {r}") for ov, r in zip(ovs, runtimes)] + [(bv, "baseline")]
            best = (max if higher else min)(cands, key=lambda c: c[0])[1]
        cells = [f"{name} ({desc})", label] + [f"{ov:.3f}" for ov in ovs] + [f"{bv:.3f}"] + ratios + [best]
        if rounds > 1:
            cells += [" / ".join(ratio(x, y) for x, y in zip(e, beach)) for e in each]
        print("| " + " | ".join(cells) + " |")
    for who, js in [(f"orchd {r}", o) for r, o in zip(runtimes, os_)] + [("baseline", b)]:
        errors, violations = sum(j["errors"] for j in js), sum(j["frame_violations"] for j in js)
        if errors or violations:
            print(f"| {name} | {who} errors / frame violations | {errors} / {violations} | | | |")
PY

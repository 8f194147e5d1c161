# The prelude every perf script shares; sourced, not run:
#
#   source "$(dirname "$0")/lib.sh"        # from perf/scripts/ (perf/compare.sh: scripts/lib.sh)
#
# It sets `-euo pipefail`, moves to the repository root, makes DIR (a fresh temp dir),
# and on exit stops every server it started. Then:
#
#   build [PACKAGES...]          cargo build --release of PACKAGES (default: orchd-http
#                                orchd-perf); sets ORCHD (ORCHD_BIN overrides it), LOAD,
#                                BASE, HELLO, FAKE (under $CARGO_TARGET_DIR if set)
#   free_port PORT               PORT if nothing listens on it, else the next free one
#   orchd_start CONFIG [ARGS]    starts $ORCHD --config CONFIG --addr 127.0.0.1:$PORT ARGS
#                                (ORCHD_LOG=warn, stderr appended to $DIR/orchd.log;
#                                CPUS=0 orchd_start ... pins it with taskset), waits for
#                                /readyz; its pid in PID
#   track PID                    stops PID on exit too (a comparator, a fake engine)
#   wait_ready PORT [PATH]       waits (10 s at most) until http://127.0.0.1:PORT/PATH
#                                answers 2xx (default /readyz); exits the script if not
#   stop PID                     kill and reap
#   llama_set PORT [ARGS]        three real llama.cpp servers (RE_HOME, default
#                                /tmp/real-engine) on 127.0.0.2-4, one free port from PORT,
#                                `-c 8192 -np 2 -t 1 --metrics` plus ARGS, waited for; sets
#                                LLAMA_PIDS, LLAMA_URLS (quoted, for a TOML list) and
#                                LLAMA_ADDRS (host:port); logs in $DIR/llama-H.log
#
# Loopback only: every server listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

build() {
  local pkgs=("$@") args=()
  ((${#pkgs[@]})) || pkgs=(orchd-http orchd-perf)
  for p in "${pkgs[@]}"; do args+=(-p "$p"); done
  cargo build --release -q "${args[@]}"
  local bin=${CARGO_TARGET_DIR:-target}/release
  ORCHD=${ORCHD_BIN:-$bin/orchd}
  LOAD=$bin/orchd-load
  BASE=$bin/baseline-axum
  HELLO=$bin/hello-hyper
  FAKE=$bin/fake-engine
}

free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

track() { PIDS+=("$1"); }

wait_ready() {
  local port=$1 path=${2:-/readyz}
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$port$path" >/dev/null && return 0
    sleep 0.05
  done
  echo "no server answering http://127.0.0.1:$port$path (log: $DIR/orchd.log)" >&2
  exit 1
}

orchd_start() {
  local config=$1; shift
  local pin=()
  [[ -n ${CPUS:-} ]] && pin=(taskset -c "$CPUS")
  ORCHD_LOG=warn "${pin[@]}" "$ORCHD" --config "$config" --addr "127.0.0.1:$PORT" "$@" 2>>"$DIR/orchd.log" &
  PID=$!
  track "$PID"
  wait_ready "$PORT"
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

llama_set() {
  local port=$1 h; shift
  local home=${RE_HOME:-/tmp/real-engine}
  local bin=$home/build/bin/llama-server model=$home/tiny-llama.gguf
  [[ -x $bin && -f $model ]] || { echo "no $bin or $model: run ../shared/tools/real-engine/setup.sh" >&2; exit 1; }
  # One port free on every address the servers take.
  while (exec 3<>"/dev/tcp/127.0.0.2/$port") 2>/dev/null \
    || (exec 3<>"/dev/tcp/127.0.0.3/$port") 2>/dev/null \
    || (exec 3<>"/dev/tcp/127.0.0.4/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  LLAMA_PIDS=(); LLAMA_URLS=(); LLAMA_ADDRS=()
  for h in 2 3 4; do
    # Not under `timeout`: a script may kill a server itself. Tracked: stopped on exit.
    "$bin" -m "$model" --host "127.0.0.$h" --port "$port" -c 8192 -np 2 -t 1 --no-ui --metrics \
      "$@" > "$DIR/llama-$h.log" 2>&1 &
    LLAMA_PIDS+=($!); track $!
    LLAMA_URLS+=("\"http://127.0.0.$h:$port\""); LLAMA_ADDRS+=("127.0.0.$h:$port")
  done
  for h in 2 3 4; do
    for _ in $(seq 300); do curl -fs "http://127.0.0.$h:$port/health" >/dev/null && continue 2; sleep 0.1; done
    echo "llama-server on 127.0.0.$h:$port not healthy after 30 s (log: $DIR/llama-$h.log)" >&2
    exit 1
  done
}

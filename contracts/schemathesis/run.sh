#!/usr/bin/env bash
# API fuzzing of a live orchd with schemathesis (issue 9, part 2).
#
# Starts the orchd binary at $ORCHD_BIN (default target/debug/orchd; a release build
# works too) on 127.0.0.1 and a free port, with a config written here that keeps every
# stream finite and short, then runs schemathesis against contracts/openapi/data.yaml
# and contracts/openapi/control.yaml (in that order: the control document drains and
# reloads pools, which would refuse the data plane's tasks), with every check on,
# configured by schemathesis.toml beside this script. Fails if schemathesis reports any
# failure or error, or if orchd died or panicked.
#
#   cargo build --bin orchd && bash contracts/schemathesis/run.sh
#   ORCHD_BIN=target/release/orchd bash contracts/schemathesis/run.sh
#
# Knobs (environment):
#   ST_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   ST_MAX_TIME      seconds one document may take before it counts as a failure (75)
#   ST_SEED          hypothesis seed (default random; printed, so a failure replays)
#   ST_WORKERS       schemathesis workers (default 1: with more, hypothesis's ast.parse
#                    calls race in CPython 3.11 and fail with "AST constructor
#                    recursion depth mismatch", an error of the tool, not of orchd)
#   ST_REPORT_DIR    orchd's config and log, schemathesis' output and JUnit reports
#                    (default target/schemathesis)
#   ORCHD_RUNTIME    the runtime orchd runs on (auto, io_uring, epoll); checked against
#                    its ready line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ST_VERSION="4.32.5"
ORCHD_BIN="$(realpath -m "${ORCHD_BIN:-$ROOT/target/debug/orchd}")"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-100}"
MAX_TIME="${ST_MAX_TIME:-75}"
WORKERS="${ST_WORKERS:-1}"
SEED="${ST_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
OUT="${ST_REPORT_DIR:-$ROOT/target/schemathesis}"
API_KEY="st-fuzz-$(date +%s)-$$"

if [[ ! -x "$ORCHD_BIN" ]]; then
  echo "schemathesis: no orchd binary at $ORCHD_BIN (cargo build --bin orchd, or set ORCHD_BIN)" >&2
  exit 2
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# schemathesis.toml names hooks.py relative to the working directory.
cd "$HERE"
rm -f "$OUT"/*.xml "$OUT"/*.log
# Hypothesis keeps its caches beside the reports, not in the working directory, and
# Python writes no __pycache__ next to hooks.py.
export HYPOTHESIS_STORAGE_DIRECTORY="$OUT/hypothesis" PYTHONDONTWRITEBYTECODE=1

# --- schemathesis, pinned -------------------------------------------------------------
# Used from the current python3 when it has exactly this version; otherwise installed
# with pip into a directory of its own under target/ (no virtualenv module needed, and
# no change to the system Python, which Debian marks externally managed).
PY=python3
ST_DIR="$ROOT/target/schemathesis-$ST_VERSION"
has_st() {
  "$PY" -c "import sys, schemathesis; sys.exit(schemathesis.__version__ != '$ST_VERSION')" 2>/dev/null
}
if ! has_st; then
  export PYTHONPATH="$ST_DIR${PYTHONPATH:+:$PYTHONPATH}"
  if ! has_st; then
    echo "== installing schemathesis $ST_VERSION into $ST_DIR"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-input \
      --upgrade --target "$ST_DIR" "schemathesis==$ST_VERSION"
    has_st
  fi
fi
echo "== schemathesis $("$PY" -c 'import schemathesis; print(schemathesis.__version__)')"

# --- orchd ------------------------------------------------------------------------------
# Mock pools for three of the four engines (a `triton` task gets the documented 503
# POOL_UNAVAILABLE), on both shards, with both queue policies; all serve any model
# ("*") and every workload. ctx_max = 64 bounds max_tokens (<= ctx <= ctx_max; hooks.py
# keeps generated tasks within it), and ttft/tpot 0 make a task a few milliseconds, so
# every stream schemathesis opens ends on its own. Session budgets are on so the
# budget headers and fields are exercised; the API key makes auth checks meaningful.
export ORCHD_ST_CTX_MAX=64
CONF="$OUT/orchd.toml"
{
  cat <<EOF
[server]
addr = "127.0.0.1:0"          # a free port, read back from the "ready" log line
shards = 2
api_keys = ["$API_KEY"]
shutdown_grace_ms = 2000

[sessions]
tokens_budget = 100000
time_budget_ms = 600000
cost_budget = 1000.0

[stream]
heartbeat_ms = 500
orphan_timeout_ms = 1000      # tasks nobody streams are canceled after a second
retention_ms = 5000           # finished tasks are forgotten (404) after 5 s
metrics_every_tokens = 8

[artifacts]
backend = "memory"
max_memory_bytes = 67108864
EOF
  for engine in llamacpp vllm tgi; do
    id="$engine"
    [[ $engine == llamacpp ]] && id="default"   # the id the documents' examples use
    cat <<EOF

[[pools]]
id = "$id"
engine = "$engine"
model_ref = "*"
ctx_max = $ORCHD_ST_CTX_MAX
slots = 4
queue_capacity = 64
policy = "$([[ $engine == vllm ]] && echo drop-lru || echo reject)"
workloads = ["completion", "embedding", "rerank"]
cost_per_token = 0.001

[pools.adapter]
kind = "mock"
ttft_ms = 0
tpot_ms = 0
decode_timeout_ms = 5000
EOF
  done
} >"$CONF"

LOG="$OUT/orchd.log"
# Keys come only from the file: an ORCHD_API_KEYS in the environment would replace them.
env -u ORCHD_API_KEYS -u ORCHD_ADDR -u ORCHD_CONFIG ORCHD_LOG=info \
  "$ORCHD_BIN" --config "$CONF" 2>"$LOG" >/dev/null &
ORCHD_PID=$!
cleanup() {
  if kill -0 "$ORCHD_PID" 2>/dev/null; then
    kill -TERM "$ORCHD_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ORCHD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ORCHD_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

ADDR=""
for _ in $(seq 100); do
  ADDR="$(sed -n 's/.*"message":"ready".*"addr":"\([0-9.:]*\)".*/\1/p; s/.*"addr":"\([0-9.:]*\)".*"message":"ready".*/\1/p' "$LOG" | head -1)"
  [[ -n "$ADDR" ]] && break
  kill -0 "$ORCHD_PID" 2>/dev/null || { echo "orchd exited at startup:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$ADDR" ]] || { echo "orchd did not report ready:" >&2; cat "$LOG" >&2; exit 1; }
BASE="http://$ADDR"
ready=""
for _ in $(seq 100); do
  if "$PY" - "$BASE/readyz" <<'EOF'; then ready=1; break; fi
import sys, urllib.request
try:
    sys.exit(urllib.request.urlopen(sys.argv[1], timeout=1).status != 200)
except Exception:
    sys.exit(1)
EOF
  sleep 0.1
done
[[ -n "$ready" ]] || { echo "orchd at $BASE never became ready" >&2; cat "$LOG" >&2; exit 1; }
RUNTIME="$(sed -n 's/.*"message":"ready".*"runtime":"\([a-z_]*\)".*/\1/p' "$LOG" | head -1)"
if [[ -n "${ORCHD_RUNTIME:-}" && "$ORCHD_RUNTIME" != auto && "$RUNTIME" != "$ORCHD_RUNTIME" ]]; then
  echo "orchd runs on ${RUNTIME:-?}, not on ORCHD_RUNTIME=$ORCHD_RUNTIME" >&2; exit 1
fi
echo "== orchd $("$ORCHD_BIN" --version 2>/dev/null || true) at $BASE (pid $ORCHD_PID) on $RUNTIME; seed $SEED"

# --- schemathesis -----------------------------------------------------------------------
# hooks.py records here each failure it dropped as a documented leniency.
export ORCHD_ST_FILTER_LOG="$OUT/filtered.log"
: >"$ORCHD_ST_FILTER_LOG"
status=0
summary=()
for doc in data control openai; do
  echo "== schemathesis: contracts/openapi/$doc.yaml"
  start=$(date +%s)
  code=0
  # --max-time would make schemathesis repeat its phases until the time is spent; the
  # work is bounded by --max-examples instead, and `timeout` bounds the time.
  timeout --kill-after=10 "$MAX_TIME" \
    "$PY" -m schemathesis.cli --config-file "$HERE/schemathesis.toml" run \
      "$ROOT/contracts/openapi/$doc.yaml" \
      --url "$BASE" \
      --header "X-API-Key: $API_KEY" \
      --max-examples "$MAX_EXAMPLES" \
      --workers "$WORKERS" \
      --seed "$SEED" \
      --report junit --report-junit-path "$OUT/$doc.junit.xml" \
      --report-dir "$OUT" 2>&1 | tee "$OUT/$doc.log" || code=$?
  if [[ $code -eq 124 || $code -eq 137 ]]; then
    echo "schemathesis: $doc.yaml took more than $MAX_TIME s" >&2
    status=1
  elif [[ $code -ne 0 ]]; then
    echo "schemathesis: failures in $doc.yaml (seed $SEED)" >&2
    status=1
  fi
  tested="$(sed -n 's/^ *Tested: \([0-9]*\).*/\1/p' "$OUT/$doc.log" | tail -1)"
  cases="$(sed -n 's/^ *\([0-9]*\) generated.*/\1/p' "$OUT/$doc.log" | tail -1)"
  summary+=("$doc.yaml: ${tested:-?} operations, ${cases:-?} test cases, $(( $(date +%s) - start )) s")
  echo "== ${summary[-1]}"
  if ! kill -0 "$ORCHD_PID" 2>/dev/null; then
    echo "orchd died during the $doc.yaml run; the end of its log:" >&2
    tail -n 20 "$LOG" >&2
    status=1
    break
  fi
done

if [[ -s "$ORCHD_ST_FILTER_LOG" ]]; then
  echo "== failures dropped by hooks.py as documented leniencies:"
  sort "$ORCHD_ST_FILTER_LOG" | uniq -c
fi

# --- orchd must have survived, without a panic -------------------------------------------
if kill -0 "$ORCHD_PID" 2>/dev/null; then
  kill -TERM "$ORCHD_PID"
  code=0
  wait "$ORCHD_PID" || code=$?
  if [[ $code -ne 0 ]]; then
    echo "orchd exited with $code on SIGTERM" >&2
    status=1
  fi
else
  status=1
fi
if grep -q "panicked" "$LOG"; then
  echo "orchd panicked:" >&2
  grep -m5 -A5 "panicked" "$LOG" >&2
  status=1
fi
printf '== %s\n' "${summary[@]}"
if [[ $status -ne 0 ]]; then
  echo "schemathesis: FAILED (orchd log: $LOG; seed $SEED)" >&2
else
  echo "schemathesis: passed (both documents, orchd alive, no panic)"
fi
exit "$status"

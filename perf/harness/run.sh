#!/usr/bin/env bash
# A standard load harness end to end against orchd's OpenAI-compatible routes (issue
# 17): inference-perf (kubernetes-sigs), pinned, installed into a directory of its own
# under target/, with a tokenizer built here (nothing is fetched from a model hub: the
# Hugging Face libraries run offline). 200 streamed completions at concurrency 8 against
# orchd on a mock pool with an API key; fails unless every request succeeded.
#
#   bash perf/harness/run.sh [REPORT_DIR]     # default target/inference-perf
#   ORCHD_BIN=target/release/orchd bash perf/harness/run.sh perf/results/...
#
# The report: REPORT_DIR/reports/summary_lifecycle_metrics.json (TTFT, inter-token
# latency, time per output token, request latency, throughput, token counts) and the
# console tables in REPORT_DIR/inference-perf.log.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VERSION=0.7.0
VENV="$ROOT/target/inference-perf-$VERSION"
OUT="$(realpath -m "${1:-$ROOT/target/inference-perf}")"
ORCHD_BIN="$(realpath -m "${ORCHD_BIN:-$ROOT/target/debug/orchd}")"
KEY="harness-$$"

# --- inference-perf, pinned (every transitive version) ----------------------------------
# It declares Python >= 3.12: a 3.12 interpreter if there is one, else the 3.11 lock
# (resolved for 3.11) installed without its Requires-Python check; it runs on both.
if [[ ! -x "$VENV/bin/inference-perf" ]]; then
  rm -rf "$VENV"
  PY312=""
  for py in /root/.pyenv/versions/3.12*/bin/python3.12 python3.12; do
    if "$py" -c 'import sys, venv; assert sys.version_info >= (3, 12)' 2>/dev/null; then
      PY312=$py
      break
    fi
  done
  if [[ -n "$PY312" ]]; then
    "$PY312" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -r "$HERE/inference-perf.lock"
  else
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      --ignore-requires-python -r "$HERE/inference-perf-py311.lock"
  fi
fi
echo "== inference-perf $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("inference-perf"))') on $("$VENV/bin/python" --version)"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
rm -rf "$OUT"; mkdir -p "$OUT"
"$VENV/bin/python" "$HERE/build_tokenizer.py" "$OUT/tokenizer"

# --- orchd: a mock pool with a slot per concurrent request, keys on -----------------------
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$OUT/orchd.toml" <<TOML
[server]
api_keys = ["$KEY"]
[[pools]]
id = "mock"
model_ref = "*"
slots = 8
[pools.adapter]
kind = "mock"
ttft_ms = 20
tpot_ms = 5
TOML
env -u ORCHD_API_KEYS -u ORCHD_CONFIG ORCHD_LOG=warn "$ORCHD_BIN" --config "$OUT/orchd.toml" \
  --addr "127.0.0.1:$PORT" 2>"$OUT/orchd.log" &
ORCHD_PID=$!
trap 'kill -TERM $ORCHD_PID 2>/dev/null; wait $ORCHD_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/health" && break
  sleep 0.1
done
echo "== orchd $("$ORCHD_BIN" --version) at 127.0.0.1:$PORT"

sed -e "s|@URL@|http://127.0.0.1:$PORT|" -e "s|@KEY@|$KEY|" \
  -e "s|@TOKENIZER@|$OUT/tokenizer|" -e "s|@REPORTS@|$OUT/reports|" \
  "$HERE/config.yaml" >"$OUT/config.yaml"
cd "$OUT"
timeout --kill-after=10 180 "$VENV/bin/inference-perf" -c "$OUT/config.yaml" 2>&1 | tee "$OUT/inference-perf.log"

# --- every request answered, streamed and counted -----------------------------------------
python3 - "$OUT/reports/summary_lifecycle_metrics.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok, failed = s["successes"], s["failures"]
n = ok["count"] if "count" in ok else None
print("== inference-perf summary:", json.dumps({
    "successes": n, "failures": failed.get("count"),
    "ttft_p50_ms": round(ok["latency"]["time_to_first_token"]["median"] * 1000, 2),
    "ttft_p99_ms": round(ok["latency"]["time_to_first_token"]["p99"] * 1000, 2),
    "itl_p50_ms": round(ok["latency"]["inter_token_latency"]["median"] * 1000, 2),
    "output_tokens_per_s": round(ok["throughput"]["output_tokens_per_sec"], 1),
}))
assert n == 200, f"{n} successful requests, expected 200"
assert not failed.get("count"), f"failures: {failed}"
PY

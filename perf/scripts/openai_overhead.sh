#!/usr/bin/env bash
# What orchd's OpenAI-compatible door adds in front of a real engine (issue 17, item 8),
# measured as the field does: the same OpenAI-mode client (`orchd-load --target openai`:
# streamed `POST /v1/completions`, time to the first text chunk, tokens/s), the same
# prompt, straight at a real llama.cpp server and through orchd (one `openai` pool on
# it), in interleaved pairs per concurrency (the order alternates between pairs), plus
# three direct-vs-direct pairs per concurrency for the noise floor.
#
# llama.cpp (../shared/tools/real-engine: built from PyPI, a tiny random-weight model)
# runs pinned to core 1 with one thread and a slot per concurrent request (so it, not
# orchd, is where requests wait); orchd runs one shard pinned to core 0 with as many
# slots, a pass-through; the load generator runs on core 0 too, for both.
#
#   bash perf/scripts/openai_overhead.sh [PAIRS] [REQUESTS] [CONCURRENCIES] [TOKENS]
#   (defaults: 5 pairs, 2000 requests a run, "1 8 32", 16 tokens)
#
# Prints one line per run and a table: the median over the pairs of (through orchd -
# direct) for TTFT p50 and p99 with the spread (min..max), and the median ratio of
# tokens/s. RE_HOME (default /tmp/real-engine) holds the engine; setup.sh builds it.
source "$(dirname "$0")/lib.sh"
PAIRS=${1:-5}; REQUESTS=${2:-2000}; CONCS=${3:-"1 8 32"}; TOKENS=${4:-16}
RE_HOME=${RE_HOME:-/tmp/real-engine}
SERVER="$RE_HOME/build/bin/llama-server"; MODEL="$RE_HOME/tiny-llama.gguf"
if [[ ! -x $SERVER || ! -f $MODEL ]]; then
  bash ../shared/tools/real-engine/setup.sh >/dev/null
fi
build
MAXC=$(for c in $CONCS; do echo "$c"; done | sort -n | tail -1)
EP=$(free_port 18791)
taskset -c 1 "$SERVER" -m "$MODEL" --host 127.0.0.1 --port "$EP" -c $((MAXC * 256)) \
  -np "$MAXC" -t 1 --no-ui >"$DIR/llama.log" 2>&1 & track $!
wait_ready "$EP" /health
cat >"$DIR/c.toml" <<EOF
[server]
shards = 1
[sessions]
max_turns = 1000000
[[pools]]
id = "llama"
model_ref = "*"
slots = $MAXC
queue_capacity = 4096
ctx_max = 1000000
[pools.adapter]
kind = "openai"
url = "http://127.0.0.1:$EP"
EOF
PORT=$(free_port $((EP + 1))); OP=$PORT
CPUS=0 orchd_start "$DIR/c.toml"
echo "== llama.cpp $("$SERVER" --version 2>&1 | grep -m1 version || true) on core 1; orchd $(git rev-parse --short HEAD) on core 0"

# One run: ttft p50, ttft p99 (ms), tokens/s.
run() {
  local addr=$1 conc=$2
  taskset -c 0 "$LOAD" --addr "$addr" --target openai --concurrency "$conc" \
    --max-tokens "$TOKENS" --tasks "$REQUESTS" --duration 120 --json 2>/dev/null |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["ttft_ms"]["p50"], s["ttft_ms"]["p99"], s["tokens_per_s"])'
}

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(round(statistics.median(v),3), round(min(v),3), round(max(v),3))' "$@"; }

for conc in $CONCS; do
  # Warm both paths (llama.cpp's first requests, orchd's keep-alive pool).
  run "127.0.0.1:$EP" "$conc" >/dev/null; run "127.0.0.1:$OP" "$conc" >/dev/null
  d50=(); d99=(); ratio=()
  for pair in $(seq "$PAIRS"); do
    if (( pair % 2 )); then
      read -r a50 a99 atps < <(run "127.0.0.1:$EP" "$conc")
      read -r o50 o99 otps < <(run "127.0.0.1:$OP" "$conc")
    else
      read -r o50 o99 otps < <(run "127.0.0.1:$OP" "$conc")
      read -r a50 a99 atps < <(run "127.0.0.1:$EP" "$conc")
    fi
    echo "c=$conc pair $pair: direct ttft p50 $a50 p99 $a99 tok/s $atps | orchd ttft p50 $o50 p99 $o99 tok/s $otps"
    d50+=("$(python3 -c "print($o50 - $a50)")"); d99+=("$(python3 -c "print($o99 - $a99)")")
    ratio+=("$(python3 -c "print($otps / $atps)")")
  done
  f50=(); f99=()
  for _ in 1 2 3; do
    read -r n50 n99 _ < <(run "127.0.0.1:$EP" "$conc")
    read -r m50 m99 _ < <(run "127.0.0.1:$EP" "$conc")
    f50+=("$(python3 -c "print($m50 - $n50)")"); f99+=("$(python3 -c "print($m99 - $n99)")")
  done
  echo "c=$conc noise floor, direct minus direct (median, min, max over 3 pairs): p50 $(median "${f50[@]}") ms; p99 $(median "${f99[@]}") ms"
  echo "c=$conc added TTFT p50 (median, min, max): $(median "${d50[@]}") ms; p99: $(median "${d99[@]}") ms; tokens/s ratio: $(median "${ratio[@]}")"
done

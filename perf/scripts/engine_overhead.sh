#!/usr/bin/env bash
# What orchd adds in front of an engine: time to first token and inter-token gaps of
# the same streamed completions, called directly on an OpenAI-compatible engine
# (perf/src/bin/fake_engine.rs, no model, no delay) and through orchd (one `openai`
# pool pointing at it). Alternating rounds in one run. Loopback only, bounded.
#
#   bash perf/scripts/engine_overhead.sh [CONCURRENCY] [TOKENS] [TASKS]
source "$(dirname "$0")/lib.sh"
CONC=${1:-1}; TOKENS=${2:-32}; TASKS=${3:-2000}
build
EP=$(free_port 18591)
"$FAKE" 127.0.0.1:$EP 2>/dev/null & track $!
wait_ready "$EP" /v1/models
printf '[sessions]\nmax_turns = 1000000\n[[pools]]\nid = "engine"\nslots = 256\nqueue_capacity = 4096\n[pools.adapter]\nkind = "openai"\nurl = "http://127.0.0.1:%s"\n' $EP > "$DIR/c.toml"
PORT=$(free_port $((EP + 1))); OP=$PORT
orchd_start "$DIR/c.toml"
run() { "$LOAD" --concurrency "$CONC" --max-tokens "$TOKENS" --tasks "$TASKS" --duration 60 "$@" 2>/dev/null | grep -E "tasks |first token|inter-token"; }
for round in 1 2; do
  echo "== round $round: direct to the engine ($CONC concurrent, $TOKENS tokens, $TASKS completions)"
  run --addr 127.0.0.1:$EP --target openai
  echo "== round $round: through orchd"
  run --addr 127.0.0.1:$OP
done

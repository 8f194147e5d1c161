#!/usr/bin/env bash
# Fuzz smoke pass (docs/FUZZING.md): builds every cargo-fuzz target (libFuzzer +
# AddressSanitizer) on the stable toolchain, runs each for a bounded time from a
# temporary copy of its committed seed corpus, and fails if any target crashes, leaks,
# times out or fails to build. A crashing input is left in the crate's artifacts/ dir
# (engine/fuzz/artifacts/<target>/, engine/shards/fuzz/artifacts/<target>/).
#
# Knobs (environment): FUZZ_SECS (per target, default 20), FUZZ_RUNS (executions per
# target, default 1000000), FUZZ_PARALLEL (targets run at once, default: cores, at most
# 4), FUZZ_SANITIZER (address | none, default address), FUZZ_TARGET_DIR (build dir,
# default target/fuzz, shared by both fuzz crates), CARGO_BUILD_JOBS as usual.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(
  "engine/fuzz task_request"
  "engine/fuzz sse_frame"
  "engine/fuzz config"
  "engine/shards/fuzz upstream_sse"
)
CRATES=(engine/fuzz engine/shards/fuzz)

root=$(cd "$(dirname "$0")/.." && pwd)
secs=${FUZZ_SECS:-20}
runs=${FUZZ_RUNS:-1000000}
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-$root/target/fuzz}
cores=$(nproc 2>/dev/null || echo 1)
parallel=${FUZZ_PARALLEL:-$((cores < 4 ? cores : 4))}
# cargo-fuzz passes -Z flags (sanitizer, coverage instrumentation); a stable rustc
# accepts them with this. No nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

started=$SECONDS
stamp() { echo "[fuzz-smoke +$((SECONDS - started))s] $*"; }

if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  stamp "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
stamp "$(cargo fuzz --version), $(rustc --version), sanitizer $sanitizer"

for crate in "${CRATES[@]}"; do
  stamp "building $crate"
  (cd "$root/$crate" && cargo fuzz build -s "$sanitizer" --target-dir "$target_dir")
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One target: a copy of its corpus (libFuzzer adds to the first corpus dir), bounded
# by time and runs; the log goes to $work/<target>.log.
run_target() {
  local crate=$1 target=$2
  mkdir -p "$work/corpus"
  cp -r "$root/$crate/corpus/$target" "$work/corpus/$target"
  (cd "$root/$crate" && cargo fuzz run -s "$sanitizer" --target-dir "$target_dir" \
    "$target" "$work/corpus/$target" -- \
    -max_total_time="$secs" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1) >"$work/$target.log" 2>&1
}

report() {
  local target=$1 rc=$2 log="$work/$1.log"
  local execs rate
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [[ $rc -eq 0 ]]; then
    stamp "ok   $target: ${execs:-?} runs, ${rate:-?} exec/s"
  else
    stamp "FAIL $target (exit $rc), ${execs:-?} runs:"
    # The panic or sanitizer report, then the input and how to reproduce it; the log's
    # end when there is neither (a build failure).
    if grep -q -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$log"; then
      grep -m1 -A8 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" "$log"
      sed -n '/^SUMMARY:/,/^Minimize test case/p' "$log" | head -n 40
    else
      tail -n 40 "$log"
    fi
  fi
}

stamp "running ${#TARGETS[@]} targets, ${secs}s or $runs runs each, $parallel at a time"
failed=0
declare -A pid_target=()
for entry in "${TARGETS[@]}"; do
  read -r crate target <<<"$entry"
  while ((${#pid_target[@]} >= parallel)); do
    rc=0
    wait -n -p done_pid "${!pid_target[@]}" || rc=$?
    report "${pid_target[$done_pid]}" "$rc"
    ((rc == 0)) || failed=1
    unset "pid_target[$done_pid]"
  done
  run_target "$crate" "$target" &
  pid_target[$!]=$target
done
for pid in "${!pid_target[@]}"; do
  rc=0
  wait "$pid" || rc=$?
  report "${pid_target[$pid]}" "$rc"
  ((rc == 0)) || failed=1
done

if ((failed)); then
  stamp "fuzz smoke FAILED (inputs: engine/fuzz/artifacts/, engine/shards/fuzz/artifacts/)"
  exit 1
fi
stamp "fuzz smoke passed"

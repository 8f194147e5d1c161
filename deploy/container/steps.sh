#!/bin/sh
# The steps of deploy/container/Dockerfile, in one script that the Dockerfile runs and
# that `.ci/run` runs directly on the machine (no container engine is reachable from
# CI), so the recipe cannot rot:
#
#   steps.sh build PROFILE OUT   cargo build of the orchd binary (--locked), copied to OUT/
#   steps.sh user                the unprivileged system user `orchd` the image runs as
#   steps.sh check BIN           CI only: runs BIN as the image does (user orchd, the
#                                image's environment) under a seccomp filter that denies
#                                io_uring as Docker's default profile does, and checks
#                                that it serves on epoll and stops cleanly on SIGTERM
set -eu

ORCHD_USER=orchd

build() {
  profile=$1 out=$2
  cargo build --locked --profile "$profile" --bin orchd
  dir=$profile
  [ "$profile" = dev ] && dir=debug
  mkdir -p "$out"
  cp "${CARGO_TARGET_DIR:-target}/$dir/orchd" "$out/orchd"
}

user() {
  if ! id "$ORCHD_USER" >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$ORCHD_USER"
  fi
}

# The environment the image sets (keep in step with the Dockerfile's ENV).
image_env() {
  echo "ORCHD_ADDR=0.0.0.0:$1 ORCHD_LOG=info"
}

check() {
  bin=$1
  deny=${DENY_IO_URING:-target/debug/deny-io-uring}
  [ -x "$deny" ] || { echo "no seccomp wrapper at $deny (cargo build --workspace --bin deny-io-uring)" >&2; exit 1; }
  dockerfile="$(dirname "$0")/Dockerfile"
  grep -qx "ENV $(image_env 8080)" "$dockerfile" \
    || { echo "the Dockerfile's ENV is not image_env's (ENV $(image_env 8080))" >&2; exit 1; }
  grep -q '^USER '"$ORCHD_USER"'$' "$dockerfile" || { echo "the Dockerfile does not run as $ORCHD_USER" >&2; exit 1; }
  user
  work=$(mktemp -d)
  # The binary (and the seccomp wrapper) where the image's user can read them.
  install -m 0755 "$bin" "$work/orchd"
  install -m 0755 "$deny" "$work/deny-io-uring"
  chmod 0755 "$work"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  key="ci-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
  log="$work/orchd.log"
  : >"$log"
  # shellcheck disable=SC2046 # image_env is words on purpose
  env -i PATH=/usr/bin:/bin $(image_env "$port") ORCHD_API_KEYS="$key" \
    setpriv --reuid="$ORCHD_USER" --regid="$ORCHD_USER" --init-groups \
    "$work/deny-io-uring" EPERM "$work/orchd" 2>"$log" &
  pid=$!
  trap 'kill -KILL $pid 2>/dev/null || true; echo "orchd log:" >&2; cat "$log" >&2; rm -rf "$work"' EXIT
  i=0
  until grep -q '"message":"ready"' "$log"; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
      echo "orchd did not start as the image runs it" >&2; exit 1
    fi
    sleep 0.1
  done
  grep '"message":"ready"' "$log" | grep -q '"runtime":"epoll"' \
    || { echo "not on epoll under the filter" >&2; exit 1; }
  [ "$(ps -o user= -p $pid)" = "$ORCHD_USER" ] || { echo "not running as $ORCHD_USER" >&2; exit 1; }
  base="http://127.0.0.1:$port"
  curl -fsS "$base/readyz" >/dev/null
  task=$(python3 -c 'import uuid; print(uuid.uuid4())')
  curl -fsS -H "X-API-Key: $key" -H 'Content-Type: application/json' "$base/v1/tasks" \
    -d "{\"task_id\":\"$task\",\"session_id\":\"$task\",\"workload\":\"completion\",\"model_ref\":\"m\",\"engine\":\"llamacpp\",\"ctx\":4096,\"priority\":\"interactive\",\"prompt\":\"hello\",\"max_tokens\":4,\"deadline_ms\":60000,\"seed\":7}" >/dev/null
  frames=$(curl -fsS -N --max-time 10 -H "X-API-Key: $key" "$base/v1/tasks/$task/stream")
  echo "$frames" | grep -q '^event: end' || { echo "no end frame: $frames" >&2; exit 1; }
  kill -TERM $pid
  code=0
  wait $pid || code=$?
  [ $code -eq 0 ] || { echo "orchd exited $code on SIGTERM" >&2; exit 1; }
  trap 'rm -rf "$work"' EXIT
  echo "container recipe: orchd as user $ORCHD_USER, io_uring denied (EPERM), served a task on epoll, SIGTERM exit 0"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  build) build "$@" ;;
  user) user ;;
  check) check "$@" ;;
  *) echo "usage: steps.sh build PROFILE OUT | user | check BIN" >&2; exit 2 ;;
esac

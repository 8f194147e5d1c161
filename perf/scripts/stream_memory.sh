#!/usr/bin/env bash
# Memory per open stream: N tasks queued behind one long task (one slot), each with an
# open SSE stream that reads its frames (started, metrics), against a release orchd.
# Reports orchd's RSS before the tasks, after admitting them, and with every stream open,
# and the cost per stream. Loopback only; bounded.
#
#   bash perf/scripts/stream_memory.sh [N]
source "$(dirname "$0")/lib.sh"
N=${1:-10000}
build orchd-http
PORT=$(free_port 18321)
cat > "$DIR/orchd.toml" <<TOML
[server]
max_connections = $((N + 1000))
header_read_timeout_ms = 600000
[sessions]
max_turns = 1000000
[stream]
heartbeat_ms = 600000
orphan_timeout_ms = 600000
[[pools]]
id = "one"
slots = 1
queue_capacity = $((N + 10))
[pools.adapter]
ttft_ms = 3000               # each task holds the slot 3 s: the queue barely moves
tpot_ms = 0
TOML
orchd_start "$DIR/orchd.toml"
python3 - "$PORT" "$N" "$PID" <<'PY'
import json, socket, sys, uuid
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def post(task):
    body = json.dumps({"task_id": task, "session_id": str(uuid.uuid4()), "workload": "completion",
        "model_ref": "m", "engine": "llamacpp", "ctx": 8192, "priority": "interactive",
        "max_tokens": 1, "deadline_ms": 86400000, "prompt": "queued"}).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/tasks HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
idle = rss()
tasks = [str(uuid.uuid4()) for _ in range(n + 1)]
for t in tasks:
    post(t)
admitted = rss()
print(f"orchd with {n + 1} tasks admitted (1 running, {n} queued): {admitted} kB")
streams = []
for t in tasks[1:]:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /v1/tasks/{t}/stream HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    streams.append(s)
for s in streams:  # each gets its head, started and a metrics frame
    s.settimeout(10)
    got = b""
    while b"event: metrics" not in got:
        got += s.recv(4096)
opened = rss()
print(f"orchd with {n} streams open: {opened} kB")
print(f"per queued task: {(admitted - idle) * 1024 / n:.0f} B; per open stream on it: {(opened - admitted) * 1024 / n:.0f} B; both: {(opened - idle) * 1024 / n:.0f} B")
PY

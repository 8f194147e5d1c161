"""Probes one orchd's first-token path while something else loads it: N tasks, one at a
time, each on a new connection: POST /v1/tasks -> 202, then GET its stream up to the
first token frame. Prints both latencies (p50, p90, max) and the queue places the 202s
reported (a probe that was queued measures the queue, not the server).

    python3 perf/scripts/ttft_probe.py PORT [N]

Loopback only; bounded by N (default 50), 20 probes a second.
"""
import json
import socket
import sys
import time
import uuid

port = int(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
posts, firsts, queued = [], [], []
for _ in range(n):
    task = str(uuid.uuid4())
    body = json.dumps({"task_id": task, "session_id": str(uuid.uuid4()), "workload": "completion",
                       "model_ref": "m", "engine": "llamacpp", "ctx": 8192, "priority": "interactive",
                       "max_tokens": 100, "deadline_ms": 600000, "prompt": "probe"}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t0 = time.perf_counter()
    s.sendall(b"POST /v1/tasks HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        got += s.recv(4096)
    t1 = time.perf_counter()
    place = json.loads(got.split(b"\r\n\r\n", 1)[1])["queue_position"]
    if place:
        queued.append(place)
    s.sendall(f"GET /v1/tasks/{task}/stream HTTP/1.1\r\nHost: m\r\n\r\n".encode())
    got = b""
    while b"event: token" not in got:
        got += s.recv(65536)
    t2 = time.perf_counter()
    s.close()
    posts.append((t1 - t0) * 1000)
    firsts.append((t2 - t1) * 1000)
    time.sleep(0.05)


def q(a, p):
    a = sorted(a)
    return a[min(len(a) - 1, int(p * len(a)))]


print(f"{n} probes; queued at admission: {len(queued)} (places {queued})")
print(f"POST -> 202 ms:         p50 {q(posts, .5):.2f}  p90 {q(posts, .9):.2f}  max {max(posts):.2f}")
print(f"GET -> first token ms:  p50 {q(firsts, .5):.2f}  p90 {q(firsts, .9):.2f}  max {max(firsts):.2f}")

"""Hostile clients for perf/scripts/soak.sh and slow_clients.sh, standard library only:
streams that are never read, and connections that trickle their request head a byte at
a time. Runs until SECS pass, keeping COUNT never-read streams and TRICKLERS tricklers
(default COUNT) open, and prints what it saw.

    python3 perf/scripts/soak.py HOST PORT SECS COUNT [TRICKLERS]
"""

import json
import socket
import sys
import time
import uuid

host, port, secs, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
trickle_count = int(sys.argv[5]) if len(sys.argv) > 5 else count
end = time.time() + secs
stats = {"never_read_streams": 0, "tricklers": 0, "tricklers_cut_off": 0, "submit_failures": 0}


def request(method, path, body=b""):
    s = socket.create_connection((host, port), timeout=5)
    head = f"{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}\r\n"
    s.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
    return s


def never_read():
    task = str(uuid.uuid4())
    body = json.dumps({
        "task_id": task, "session_id": str(uuid.uuid4()), "workload": "completion",
        "model_ref": "soak", "engine": "llamacpp", "ctx": 8192, "priority": "batch",
        "max_tokens": 2000, "deadline_ms": 600000, "prompt": "never read", "kv_hint": "cold",
    }).encode()
    s = request("POST", "/v1/tasks", body)
    answer = s.recv(4096)
    s.close()
    if not answer.startswith(b"HTTP/1.1 202"):
        stats["submit_failures"] += 1
        return None
    stats["never_read_streams"] += 1
    return request("GET", f"/v1/tasks/{task}/stream")  # and never read


stuck, tricklers = [], []
head = b"GET /v1/capabilities HTTP/1.1\r\nHost: soak\r\nX-Slow: " + b"z" * 200
stats["connect_failures"] = 0
while time.time() < end:
    try:
        while len(stuck) < count:
            s = never_read()
            if s is None:
                break
            stuck.append(s)
        while len(tricklers) < trickle_count:
            tricklers.append([socket.create_connection((host, port), timeout=5), 0])
            stats["tricklers"] += 1
    except OSError:
        # orchd restarting (the soak kills it once): try again on the next round.
        stats["connect_failures"] += 1
    for t in list(tricklers):
        try:
            t[0].send(head[t[1]:t[1] + 1])
            t[1] = (t[1] + 1) % len(head)
        except OSError:
            stats["tricklers_cut_off"] += 1
            tricklers.remove(t)
    # Streams of finished tasks end; replace them so COUNT stay open.
    time.sleep(0.2)
    if len(stuck) >= count and int(time.time()) % 30 == 0:
        for s in stuck[: count // 4]:
            s.close()
        stuck = stuck[count // 4:]
for s in stuck:
    s.close()
for t in tricklers:
    t[0].close()
print(json.dumps(stats))

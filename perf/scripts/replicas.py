#!/usr/bin/env python3
"""Replica sets (issue 20) in front of real engines: spread, stickiness, and a replica's death.

Run by perf/scripts/replicas.sh, which starts three llama.cpp servers and orchd (its log at
info level, where each "task started" line names the task's replica). Phase 1: SESSIONS
sessions of TURNS turns each, CONC of them at once (more than the set's slots, so some
turns find their replica full and spill). Phase 2: the same, and one engine is killed a
moment in; how long its sessions take to run again elsewhere, and what else failed.
"""
import argparse, http.client, json, os, signal, statistics, sys, threading, time, uuid

ap = argparse.ArgumentParser()
ap.add_argument("--addr", required=True)
ap.add_argument("--log", required=True)
ap.add_argument("--sessions", type=int, default=24)
ap.add_argument("--turns", type=int, default=5)
ap.add_argument("--conc", type=int, default=12)
ap.add_argument("--tokens", type=int, default=32)
ap.add_argument("--kill-pid", type=int, required=True)
ap.add_argument("--kill-id", required=True)
a = ap.parse_args()
host, port = a.addr.split(":")


def turn(session):
    """One task of `session`: (task id, last event, time it ended)."""
    task = str(uuid.uuid4())
    body = json.dumps({"task_id": task, "session_id": session, "workload": "completion",
                       "model_ref": "tiny", "engine": "llamacpp", "ctx": 4096,
                       "priority": "interactive", "max_tokens": a.tokens,
                       "deadline_ms": 60000, "prompt": "replica sets", "seed": 1})
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("POST", "/v1/tasks", body, {"Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 202:
        return task, f"http {r.status}", time.monotonic()
    c.request("GET", f"/v1/tasks/{task}/stream")
    r = c.getresponse()
    last, ev = None, None
    for line in r:
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            ev = line[7:]
        if line.startswith("data: ") and ev in ("end", "error"):
            last = ev if ev == "end" else json.loads(line[6:]).get("code")
    c.close()
    return task, last, time.monotonic()


def run(sessions, kill_at=None):
    """Runs every session's turns, CONC sessions at once; returns [(session, task, outcome, t)]."""
    out, lock, queue = [], threading.Lock(), list(sessions)
    killed = {}

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                s = queue.pop(0)
            for _ in range(a.turns):
                task, last, t = turn(s)
                with lock:
                    out.append((s, task, last, t))

    ts = [threading.Thread(target=worker) for _ in range(a.conc)]
    start = time.monotonic()
    for t in ts:
        t.start()
    if kill_at is not None:
        time.sleep(kill_at)
        os.kill(a.kill_pid, signal.SIGKILL)
        killed["at"] = time.monotonic()
    for t in ts:
        t.join()
    return out, killed.get("at"), start


def replicas_of(tasks):
    """task id -> replica, from orchd's "task started" log lines."""
    want, found = set(tasks), {}
    with open(a.log) as f:
        for line in f:
            if '"task started"' not in line:
                continue
            j = json.loads(line)  # tracing's JSON: fields beside the message
            if j.get("task_id") in want:
                found[j["task_id"]] = j.get("replica")
    return found


# Phase 1: spread and stickiness.
s1 = [str(uuid.uuid4()) for _ in range(a.sessions)]
out, _, start1 = run(s1)
phase1_s = time.monotonic() - start1
time.sleep(0.5)
rep = replicas_of([t for _, t, _, _ in out])
per_replica, sticky, turns = {}, 0, 0
for s in s1:
    mine = [rep.get(t) for ss, t, last, _ in out if ss == s and last == "end"]
    for r in mine:
        per_replica[r] = per_replica.get(r, 0) + 1
    if mine:
        home = max(set(mine), key=mine.count)
        sticky += sum(1 for r in mine if r == home)
        turns += len(mine)
homes = {}
for s in s1:
    mine = [rep.get(t) for ss, t, last, _ in out if ss == s and last == "end"]
    if mine:
        h = max(set(mine), key=mine.count)
        homes[h] = homes.get(h, 0) + 1
failed1 = sum(1 for _, _, last, _ in out if last != "end")
print(json.dumps({"phase": "spread", "seconds": round(phase1_s, 2), "sessions": a.sessions, "turns_each": a.turns,
                  "at_once": a.conc, "tasks_by_replica": per_replica,
                  "sessions_by_home_replica": homes,
                  "stickiness": round(sticky / max(turns, 1), 4), "failed": failed1}))

# Phase 2: a replica dies a moment in.
s2 = [str(uuid.uuid4()) for _ in range(a.sessions)]
# Killed about a third of the way in (phase 1 took phase1_s with every engine up).
out, killed_at, start = run(s2, kill_at=phase1_s / 3)
time.sleep(0.5)
rep = replicas_of([t for _, t, _, _ in out])
by_session = {}
for s, t, last, at in out:
    by_session.setdefault(s, []).append((at, rep.get(t), last))
moved, lost = [], {}
for s, turns_ in by_session.items():
    before = [r for at, r, last in turns_ if at < killed_at and last == "end"]
    if not before or max(set(before), key=before.count) != a.kill_id:
        continue
    after = [at for at, r, last in turns_ if at >= killed_at and last == "end" and r != a.kill_id]
    if after:
        moved.append(min(after) - killed_at)
for _, _, last, at in out:
    if last != "end":
        lost[last] = lost.get(last, 0) + 1
others_failed = sum(1 for s, turns_ in by_session.items()
                    for at, r, last in turns_
                    if last != "end" and r != a.kill_id and r is not None)
print(json.dumps({"phase": "death", "killed": a.kill_id, "killed_after_s": round(killed_at - start, 3),
                  "its_sessions_moved": len(moved),
                  "death_to_first_turn_elsewhere_ms": {
                      "min": round(min(moved) * 1000, 1) if moved else None,
                      "median": round(statistics.median(moved) * 1000, 1) if moved else None,
                      "max": round(max(moved) * 1000, 1) if moved else None},
                  "failed_turns_by_outcome": lost,
                  "failed_turns_on_other_replicas": others_failed}))

#!/usr/bin/env python3
"""Prefix routing (issue 20): requests whose prompts share long prefixes, without sessions,
through orchd's OpenAI door (streamed `/v1/completions`, no `X-Session-Id`), and the prompt
cache hits of the engines behind it, read from their own counters (llama.cpp `/metrics`:
`llamacpp:prompt_tokens_total` evaluated, `llamacpp:prompt_tokens_cached_total` taken from
cache). Run by perf/scripts/prefix.sh, which starts the engines and orchd.

PREFIXES distinct prefixes (~1,500 bytes of seeded words each, "Document K: " and then
their own words), PER_PREFIX requests each with a prompt of its own after the prefix, in one seeded
random order, CONC at once; every run of the same arguments sends the same requests.
"""
import argparse, http.client, json, random, statistics, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--addr", required=True)
ap.add_argument("--engines", nargs="+", required=True)
ap.add_argument("--prefixes", type=int, default=24)
ap.add_argument("--per-prefix", type=int, default=8)
ap.add_argument("--conc", type=int, default=6)
ap.add_argument("--tokens", type=int, default=8)
ap.add_argument("--label", default="")
a = ap.parse_args()
host, port = a.addr.split(":")

rng = random.Random(20)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]
prefixes = [f"Document {k}: " + " ".join(rng.choice(words) for _ in range(220))
            for k in range(a.prefixes)]
requests = [(k, f"{prefixes[k]}\nQuestion {j}: what does line {j} say?")
            for k in range(a.prefixes) for j in range(a.per_prefix)]
rng.shuffle(requests)


def counters():
    out = {}
    for e in a.engines:
        h, p = e.split(":")
        c = http.client.HTTPConnection(h, int(p), timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        vals = {}
        for line in text.splitlines():
            if line.startswith("llamacpp:") and " " in line:
                k, v = line.split(" ", 1)
                vals[k] = float(v)
        out[e] = vals
    return out


lock = threading.Lock()
ttft, failed = [], []


def worker():
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    while True:
        with lock:
            if not requests:
                return
            k, prompt = requests.pop()
        body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": a.tokens,
                           "stream": True, "temperature": 0})
        t0 = time.monotonic()
        try:
            c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                r.read()
                failed.append(r.status)
                continue
            first = None
            for line in r:
                if line.startswith(b"data: ") and first is None:
                    first = time.monotonic() - t0
                if line.strip() == b"data: [DONE]":
                    break
            r.read()
        except (OSError, http.client.HTTPException) as e:
            failed.append(type(e).__name__)
            c.close()
            c = http.client.HTTPConnection(host, int(port), timeout=60)
            continue
        with lock:
            ttft.append(first)


before = counters()
n = len(requests)
t0 = time.monotonic()
threads = [threading.Thread(target=worker) for _ in range(a.conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.monotonic() - t0
after = counters()


def delta(e, k):
    return after[e].get(k, 0) - before[e].get(k, 0)


evaluated = sum(delta(e, "llamacpp:prompt_tokens_total") for e in a.engines)
cached = sum(delta(e, "llamacpp:prompt_tokens_cached_total") for e in a.engines)
seconds = sum(delta(e, "llamacpp:prompt_seconds_total") for e in a.engines)
per = [int(delta(e, "llamacpp:tokens_predicted_total") / a.tokens) for e in a.engines]
ok = [x for x in ttft if x is not None]
print(json.dumps({
    "label": a.label, "requests": n, "failed": len(failed),
    "prompt_tokens_evaluated": int(evaluated), "prompt_tokens_cached": int(cached),
    "cache_hit_ratio": round(cached / max(evaluated + cached, 1), 3),
    "engine_prompt_seconds": round(seconds, 3),
    "tasks_per_replica": per,
    "ttft_p50_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
    "ttft_p90_ms": round(sorted(ok)[int(len(ok) * 0.9) - 1] * 1000, 1) if ok else None,
    "wall_s": round(wall, 2),
}))

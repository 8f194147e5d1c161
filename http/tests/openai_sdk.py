"""The official `openai` Python SDK against a live orchd (issue 17).

Run by `http/tests/openai_sdk.rs`, which starts orchd with the pools named below and
sets ORCHD_URL (the server's base URL), ORCHD_KEY (its API key, sent by the SDK as a
Bearer token) and ORCHD_MODE: `mock` runs every check; `real` (orchd in front of a real
llama.cpp server) all but the queue overflow, which needs the mock's timing.

Pools of the mock run: `m` (no latency), `small` (2 slots, 2 queue places, 20 ms per
token: 3 x (slots + queue) requests overflow it), `paced` (20 ms per token), `embedder`
(embeddings). The real
run has one pool serving model `real` through the OpenAI-compatible adapter.

Plain Python, no test framework: each `check_*` function is a test; the script prints
one line per test and exits non-zero if any failed.
"""

import os
import sys
import threading
import time
import traceback
import urllib.request

import openai

URL = os.environ["ORCHD_URL"]
KEY = os.environ["ORCHD_KEY"]
MODE = os.environ.get("ORCHD_MODE", "mock")
MODEL = "m" if MODE == "mock" else "real"
# A model whose tokens come paced (mock: 20 ms each), so a stream is still running when
# it is canceled or left.
PACED = "paced" if MODE == "mock" else "real"

client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0, timeout=60)


def http(method, path):
    """(status, headers, body) of a request to orchd with the key, by the standard library."""
    req = urllib.request.Request(URL + path, method=method, headers={"Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read().decode()


def metric(name, label):
    """Sum of a series' samples whose labels contain `label`."""
    text = http("GET", "/metrics")[2]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_for(what, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("gave up waiting for " + what)


def check_completion_whole_and_streamed_agree():
    raw = client.completions.with_raw_response.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, seed=1, temperature=0
    )
    whole = raw.parse()
    assert whole.id == raw.headers["x-request-id"], (whole.id, raw.headers)
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason in ("length", "stop")
    assert whole.usage.completion_tokens >= 1 and whole.usage.prompt_tokens >= 1, whole.usage
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="The capital of France is",
            max_tokens=8,
            seed=1,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text, (text, whole.choices[0].text)
    assert len({c.id for c in chunks}) == 1, "one id for the whole stream"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason


def check_chat_whole_and_streamed_agree():
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, seed=2, temperature=0
    )
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    content = whole.choices[0].message.content
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, seed=2, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == content, (streamed, content)
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def check_models_list():
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids, ids


def check_errors_are_sdk_exceptions():
    try:
        client.completions.create(model=MODEL, prompt="x", n=2)
        raise AssertionError("n=2 was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400
        assert e.body["param"] == "n", e.body
        assert e.body["code"] == "INVALID_PARAMS", e.body
    wrong = openai.OpenAI(base_url=URL + "/v1", api_key="sk-wrong", max_retries=0)
    try:
        wrong.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.PermissionDeniedError as e:
        assert e.status_code == 403


def check_full_queue_429s_are_retried_by_the_sdk():
    """3 x (slots + queue) concurrent requests at pool `small`: some are refused with
    429, and the SDK's own retries (driven by retry-after-ms) complete every one."""
    before = metric("tasks_rejected_total", 'reason="ADMISSION_REJECT"')
    retrying = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=10)
    results, errors = [], []

    def one(i):
        try:
            r = retrying.completions.create(model="small", prompt="p%d" % i, max_tokens=10)
            results.append(r.usage.completion_tokens)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    refused = metric("tasks_rejected_total", 'reason="ADMISSION_REJECT"') - before
    assert not errors, errors
    assert results == [10] * 12, results
    assert refused > 0, "no 429 was observed"
    print("    %d requests, %d refused with 429 and retried by the SDK" % (len(results), refused))


def check_cancel_through_the_request_id():
    with client.chat.completions.with_streaming_response.create(
        model=PACED,
        messages=[{"role": "user", "content": "go on"}],
        max_tokens=500,
        extra_body={"ignore_eos": True},
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        task = response.headers["x-request-id"]
        chunks = []
        stream = response.parse()
        for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 2:
                status, headers, body = http("POST", "/v1/tasks/%s/cancel" % task)
                assert status == 204, body
                tokens_out = int(headers["x-tokens-out"])
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == tokens_out, (len(content), tokens_out)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["abort"], finish
    assert chunks[-1].usage.completion_tokens == tokens_out


def check_embeddings():
    """The SDK asks for base64 by default and decodes it; floats on request."""
    r = client.embeddings.create(model="embedder", input=["hello world", "bye"])
    assert len(r.data) == 2 and r.data[1].index == 1, r
    v = r.data[0].embedding
    assert len(v) == 16 and abs(sum(x * x for x in v) - 1) < 1e-4, v
    f = client.embeddings.create(model="embedder", input="hello world", encoding_format="float")
    assert [round(x, 5) for x in f.data[0].embedding] == [round(x, 5) for x in v]
    assert r.usage.prompt_tokens == 3, r.usage


def check_a_closed_stream_cancels_its_task():
    before = metric("tasks_canceled_total", 'reason="orphaned"')
    stream = client.completions.create(
        model=PACED, prompt="x", max_tokens=1000, extra_body={"ignore_eos": True}, stream=True
    )
    next(iter(stream))
    stream.close()
    wait_for(
        "the task canceled after its client left",
        lambda: metric("tasks_canceled_total", 'reason="orphaned"') > before,
    )


CHECKS = [
    check_completion_whole_and_streamed_agree,
    check_chat_whole_and_streamed_agree,
    check_models_list,
    check_errors_are_sdk_exceptions,
    check_cancel_through_the_request_id,
    check_a_closed_stream_cancels_its_task,
]
if MODE == "mock":
    CHECKS += [check_full_queue_429s_are_retried_by_the_sdk, check_embeddings]

failed = 0
print("openai SDK %s against %s (%s)" % (openai.__version__, URL, MODE))
for check in CHECKS:
    try:
        check()
        print("ok   " + check.__name__)
    except Exception:  # noqa: BLE001 - every failure is printed
        failed += 1
        print("FAIL " + check.__name__)
        traceback.print_exc()
sys.exit(1 if failed else 0)

"""schemathesis hooks for orchd (loaded by schemathesis.toml).

- `before_call` keeps generated tasks within the rules the schema cannot state
  (`ctx <= ctx_max` of the configured pools, `max_tokens <= ctx`, a deadline the
  predicted start and decode fit in) and generated drains short, moving only values that
  are already valid and only within the valid range, so no case changes what it tests.
- `filter_failure` drops a failure only when the request itself shows that a documented
  leniency the schema cannot express explains the answer, and records it in
  $ORCHD_ST_FILTER_LOG.
- `sse_frames_conform` is a check: every stream's frames against the documents'
  `x-sse-events` schemas, which OpenAPI 3.0 has no place for.
"""

from __future__ import annotations

import json
import os

import jsonschema_rs
import schemathesis

# ctx_max of the pools run.sh configures (passed by run.sh; 64 is its default).
CTX_MAX = int(os.environ.get("ORCHD_ST_CTX_MAX", "64"))
U32_MAX = 4294967295

# Optional fields the server reads an explicit JSON null of as "absent" (data.yaml note 5,
# control.yaml note 7). The convention of the documents is no `nullable` (their schemas
# validate as plain draft-4 JSON Schema), so the schemas cannot say so.
NULL_MEANS_ABSENT = {
    ("POST", "/v1/tasks"): {
        "seed",
        "determinism",
        "sampler_profile_version",
        "prompt",
        "inputs",
        "expected_tokens",
        "kv_hint",
    },
    ("POST", "/v1/artifacts"): {"parent", "metadata"},
}

def _key(case) -> tuple[str, str]:
    return (case.operation.method.upper(), case.operation.path)


def _u32(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= U32_MAX


# Shortest deadline a generated task keeps, in ms (see _admissible_task): far above any
# predicted start + decode of run.sh's pools, far below the schema's 86400000.
TASK_DEADLINE_MIN_MS = 600000

# Longest deadline a generated drain keeps, in ms (see _short_drain).
DRAIN_MAX_MS = 300


@schemathesis.hook
def before_call(context, case, kwargs):
    """Keeps generated tasks admissible and drains short; see the two functions below."""
    key = _key(case)
    if key == ("POST", "/v1/tasks"):
        _admissible_task(case)
    elif key == ("POST", "/v1/pools/{id}/drain"):
        _short_drain(case)
    elif key in OPENAI_GENERATION or key == ("POST", "/v1/embeddings"):
        _mock_generation(case)


# The OpenAI-compatible generation routes (openai.yaml).
OPENAI_GENERATION = {("POST", "/v1/completions"), ("POST", "/v1/chat/completions")}
OPENAI_FIELDS = {
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
    "n", "stream", "stream_options", "ignore_eos", "user", "prompt", "messages",
    "metadata", "store", "service_tier", "input", "encoding_format", "dimensions",
}


def _unset(value) -> bool:
    return value is None or value is False or value == 0 or value in ("", [], {})


def _mock_generation(case) -> None:
    """POST /v1/completions, /v1/chat/completions, /v1/embeddings: what run.sh's mock
    pools accept.

    openai.yaml lets a body carry fields orchd does not interpret: they are forwarded to
    HTTP engines, and where only the mock serves the model (every pool here) a field that
    would change the output is 400 naming it (openai.yaml note 4), which no schema can
    say. Such generated fields are dropped. `max_tokens` (and `max_completion_tokens`)
    already valid is lowered to at most 16, so that the prompt fits the pools' `ctx_max`
    (64) beside it: that limit is configuration, as for `POST /v1/tasks`.
    """
    body = case.body
    if not isinstance(body, dict):
        return
    for k in [k for k, v in body.items() if k not in OPENAI_FIELDS and not _unset(v)]:
        del body[k]
    for k in ("max_tokens", "max_completion_tokens"):
        if _u32(body.get(k)):
            body[k] = min(body[k], 16)


def _short_drain(case) -> None:
    """POST /v1/pools/{id}/drain: deadlines above DRAIN_MAX_MS become DRAIN_MAX_MS.

    A drain keeps its pool refusing reloads (409) until its deadline, and the schema
    allows a day: the first drain of each pool would leave reloads nothing to test but
    409 for the rest of the run. A shorter deadline is as valid, so the case stays what it
    was generated as; only values already valid are lowered.
    """
    body = case.body
    if isinstance(body, dict):
        deadline = body.get("deadline_ms")
        valid = isinstance(deadline, int) and not isinstance(deadline, bool)
        if valid and DRAIN_MAX_MS < deadline <= 86400000:
            body["deadline_ms"] = DRAIN_MAX_MS


def _admissible_task(case) -> None:
    """POST /v1/tasks: keep `ctx` within the pools' `ctx_max`, `max_tokens <= ctx`, and
    `deadline_ms` at least TASK_DEADLINE_MIN_MS.

    These are rules the schema cannot state: `ctx_max` is configuration (GET
    /v1/capabilities), `max_tokens <= ctx` relates two fields, and whether a deadline is
    met depends on the predicted start and decode time, which come from the service times
    the server has observed (a `deadline_ms` of 1 is admitted or `400 DEADLINE_UNMET`
    depending on how fast the machine ran the tasks before it). Without this almost
    every schema-valid task is refused 400, so no task would ever run and the stream,
    cancel and session operations would only see unknown ids. Only values that are
    already schema-valid integers are moved (`ctx` and `max_tokens` lowered, `deadline_ms`
    raised), and only within the valid range, so a negative case stays exactly as
    negative as it was generated.
    """
    body = case.body
    if not isinstance(body, dict):
        return
    ctx, max_tokens = body.get("ctx"), body.get("max_tokens")
    if _u32(ctx) and _u32(max_tokens):
        body["ctx"] = min(ctx, CTX_MAX)
        body["max_tokens"] = min(max_tokens, body["ctx"])
    deadline = body.get("deadline_ms")
    if _u32(deadline) and deadline <= 86400000:
        body["deadline_ms"] = max(deadline, TASK_DEADLINE_MIN_MS)


def _body_schema_accepts(case, body) -> bool:
    for alternative in case.operation.body:
        if alternative.media_type.startswith("application/json"):
            return alternative.is_valid(body)
    return False


def _explicit_null_only(case) -> bool:
    """The body is schema-valid once its explicit nulls of optional fields are dropped."""
    fields = NULL_MEANS_ABSENT.get(_key(case))
    body = case.body
    if not fields or not isinstance(body, dict):
        return False
    nulls = {k for k, v in body.items() if v is None and k in fields}
    if not nulls:
        return False
    return _body_schema_accepts(case, {k: v for k, v in body.items() if k not in nulls})


def _note(case, response, why: str) -> None:
    """Records a dropped failure in $ORCHD_ST_FILTER_LOG (run.sh prints them)."""
    path = os.environ.get("ORCHD_ST_FILTER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{case.operation.method.upper()} {case.operation.path} -> {response.status_code}: {why}\n")


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except the documented leniency above (False drops it)."""
    kind = type(failure).__name__
    if kind == "AcceptedNegativeData" and 200 <= response.status_code < 300:
        if _explicit_null_only(case):
            nulls = sorted(k for k, v in case.body.items() if v is None)
            _note(case, response, f"explicit null taken as absent: {', '.join(nulls)}")
            return False
    return True


# --- Server-Sent Events ---------------------------------------------------------------
# OpenAPI 3.0 has no schema for the events of a text/event-stream body, so the stream's
# 200 is only "string or {id, event, data}" to schemathesis; the documents give each
# event's `data` schema under `x-sse-events`. This check holds every stream schemathesis
# reads to them, as features/tests/provider.rs does, plus the framing of SPEC section 2.

TERMINAL = ("end", "error")
_sse_validators: dict[tuple[int, str, str], dict[str, jsonschema_rs.Validator]] = {}


def _event_validators(case) -> dict[str, jsonschema_rs.Validator]:
    raw = case.operation.schema.raw_schema
    key = (id(raw), case.operation.method.lower(), case.operation.path)
    if key not in _sse_validators:
        events = raw["paths"][case.operation.path][key[1]]["responses"]["200"]["x-sse-events"]
        components = raw.get("components", {})
        _sse_validators[key] = {
            name: jsonschema_rs.Draft4Validator({"allOf": [schema], "components": components})
            for name, schema in events.items()
        }
    return _sse_validators[key]


def _frames(content: bytes) -> list[dict[str, str]]:
    frames = []
    text = content.decode("utf-8").replace("\r\n", "\n")
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue  # comments are heartbeats
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[name] = f"{fields[name]}\n{value}" if name in fields else value
        if fields:
            frames.append(fields)
    return frames


@schemathesis.check
def sse_frames_conform(ctx, response, case):
    """Each frame: id/event/data, data valid for its event; ids consecutive; terminal last.

    The OpenAI routes' streams: unnamed events (`message`) with `id` and `data`, ids
    never decreasing, each `data` valid (a chunk, the usage chunk, an error, or
    `[DONE]`), ending with `[DONE]` or an error.
    """
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code != 200 or not content_type.startswith("text/event-stream"):
        return None
    validators = _event_validators(case)
    frames = _frames(response.content)
    if _key(case) in OPENAI_GENERATION:
        _openai_events_conform(validators, frames)
        return None
    expected_id = None
    last_event_id = (case.headers or {}).get("Last-Event-ID")
    if isinstance(last_event_id, (int, str)) and str(last_event_id).strip().isdigit():
        expected_id = int(str(last_event_id).strip()) + 1
    elif last_event_id is None:
        expected_id = 0
    for n, frame in enumerate(frames):
        where = f"frame {n} {frame!r}"
        assert set(frame) == {"id", "event", "data"}, f"{where}: fields must be id, event, data"
        assert frame["event"] in validators, f"{where}: event not in x-sse-events"
        assert frame["id"].isdigit(), f"{where}: id is not a frame number"
        if expected_id is not None:
            assert int(frame["id"]) == expected_id + n, f"{where}: expected id {expected_id + n}"
        if n == 0 and frame["id"] == "0":
            assert frame["event"] == "started", f"{where}: frame 0 must be `started`"
        if frame["event"] in TERMINAL:
            assert n == len(frames) - 1, f"{where}: frames after the terminal frame"
        errors = [e.message for e in validators[frame["event"]].iter_errors(json.loads(frame["data"]))]
        assert not errors, f"{where}: {'; '.join(errors)}"
    if frames and not response.stream_cut_short:
        assert frames[-1]["event"] in TERMINAL, "the stream closed without a terminal frame"
    return None


def _openai_events_conform(validators, frames) -> None:
    assert frames, "an empty stream"
    last = -1
    for n, frame in enumerate(frames):
        where = f"event {n} {frame!r}"
        assert set(frame) == {"id", "data"}, f"{where}: fields must be id and data"
        assert frame["id"].isdigit() and int(frame["id"]) >= last, f"{where}: id went back"
        last = int(frame["id"])
        data = frame["data"] if frame["data"] == "[DONE]" else json.loads(frame["data"])
        errors = [e.message for e in validators["message"].iter_errors(data)]
        assert not errors, f"{where}: {errors}"
        final = data == "[DONE]" or (isinstance(data, dict) and "error" in data)
        assert not final or n == len(frames) - 1, f"{where}: events after the end"
    end = frames[-1]["data"]
    assert end == "[DONE]" or "error" in json.loads(end), "the stream did not end"

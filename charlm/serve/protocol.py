"""The HTTP requests and answers: each body checked field by field, turned into an engine `Job`, and the
engine's output written in OpenAI's completions format (a whole answer, or server-sent event chunks).

Every problem a client can cause is a `Problem`: an HTTP status and an OpenAI-shaped error that names the
field (`{"error": {"message", "type", "param", "code"}}`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from charlm.inference.engine import CharLogprob, Job


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much the server takes on at once."""

    max_prompt_chars: int = 8192  # the longest prime (read at about 20 us a character on a CPU)
    max_tokens: int = 4096  # the most characters per sample
    default_max_tokens: int = 256  # characters per sample when a request does not say
    max_n: int = 16  # the most samples per request
    max_chars_per_request: int = 32768  # n x max_tokens at most
    max_streams: int = 256  # samples in the batch at once
    max_queue: int = 256  # requests waiting for a place in the batch
    max_body_bytes: int = 2 * 1024 * 1024  # a request body
    max_score_chars: int = 500_000  # text scored by /v1/score
    max_explain_chars: int = 20_000  # text explained by /v1/explain (the `charlm explain --max-chars` default)
    max_logprobs: int = 20  # top alternatives per character
    max_stops: int = 4  # stop strings per request (OpenAI's limit)


class Problem(Exception):
    """A request the server will not serve: the HTTP status and OpenAI's error object."""

    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error", code: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        doc = json.loads(raw.decode("utf-8"))  # NaN and Infinity parse, and fail the field's own check
    except UnicodeDecodeError:
        raise Problem(400, "the request body is not UTF-8") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise Problem(400, f"the request body is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise Problem(400, f"the request body must be a JSON object, not {_kind(doc)}")
    return doc


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}.get(
        type(v), "an object"
    )


class Fields:
    """Typed reads of a JSON object's fields, each failure a 400 naming the field; `unknown()` lists the rest."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc, self.read = doc, set()

    def get(self, name: str) -> Any:
        self.read.add(name)
        return self.doc.get(name)

    def integer(self, name: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise Problem(400, f"{name} must be an integer, not {_kind(v)}", name)
        if lo is not None and v < lo:
            raise Problem(400, f"{name} must be at least {lo} (got {v})", name)
        if hi is not None and v > hi:
            raise Problem(400, f"{name} must be at most {hi} on this server (got {v})", name)
        return v

    def number(self, name: str, default: float | None) -> float | None:
        v = self.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise Problem(400, f"{name} must be a number, not {_kind(v)}", name)
        if not math.isfinite(v):
            raise Problem(400, f"{name} must be a finite number (got {v})", name)
        return float(v)

    def boolean(self, name: str, default: bool = False) -> bool:
        v = self.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise Problem(400, f"{name} must be true or false, not {_kind(v)}", name)
        return v

    def string(self, name: str, default: str | None = None) -> str | None:
        v = self.get(name)
        if v is None:
            return default
        if not isinstance(v, str):
            raise Problem(400, f"{name} must be a string, not {_kind(v)}", name)
        return v

    def neutral(self, name: str, *allowed: Any) -> None:
        """A field OpenAI defines that charlm does not implement: accepted only at its no-op values."""
        v = self.get(name)
        if v is not None and not any(v == a and type(v) is type(a) for a in allowed):
            shown = " or ".join(json.dumps(a) for a in allowed)
            raise Problem(400, f"{name} is not supported by this server (only {shown} or null)", name)

    def unknown(self) -> None:
        extra = [k for k in self.doc if k not in self.read]
        if extra:
            raise Problem(400, f"unknown field {extra[0]!r}", extra[0])


def _stops(f: Fields, limits: Limits) -> tuple[str, ...]:
    v = f.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise Problem(400, "stop must be a string or an array of strings", "stop")
    if len(items) > limits.max_stops:
        raise Problem(400, f"stop takes at most {limits.max_stops} strings (got {len(items)})", "stop")
    if any(s == "" for s in items):
        raise Problem(400, "stop strings must not be empty", "stop")
    return tuple(items)


def _prompt(f: Fields, limits: Limits) -> str:
    v = f.get("prompt")
    if isinstance(v, list):
        if len(v) != 1 or not isinstance(v[0], str):
            raise Problem(400, "prompt must be a string (or an array of one string)", "prompt")
        v = v[0]
    if v is None:
        v = ""
    if not isinstance(v, str):
        raise Problem(400, f"prompt must be a string, not {_kind(v)}", "prompt")
    if len(v) > limits.max_prompt_chars:
        raise Problem(
            413, f"prompt is {len(v):,} characters; this server takes at most {limits.max_prompt_chars:,}", "prompt"
        )
    return v


@dataclass(frozen=True)
class CompletionRequest:
    job: Job
    stream: bool
    echo: bool
    include_usage: bool


def completion_request(doc: dict[str, Any], limits: Limits, vocab: int) -> CompletionRequest:
    """POST /v1/completions's body checked and read."""
    f = Fields(doc)
    f.string("model")
    f.string("user")
    prompt = _prompt(f, limits)
    length = f.integer("max_tokens", limits.default_max_tokens, 0, limits.max_tokens)
    n = f.integer("n", 1, 1, limits.max_n)
    assert length is not None and n is not None
    if n * length > limits.max_chars_per_request:
        raise Problem(
            400,
            f"n x max_tokens is {n * length:,} characters; this server takes at most {limits.max_chars_per_request:,}"
            " per request",
            "max_tokens",
        )
    temperature = f.number("temperature", 1.0)
    if temperature is not None and temperature < 0:
        raise Problem(400, f"temperature must be 0 or more (got {temperature})", "temperature")
    top_p = f.number("top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise Problem(400, f"top_p must be in (0, 1] (got {top_p})", "top_p")
    top_k = f.integer("top_k", None, 1)
    seed = f.integer("seed", None, 0)
    logprobs = f.integer("logprobs", None, 0, min(limits.max_logprobs, vocab))
    stream, echo, skip = f.boolean("stream"), f.boolean("echo"), f.boolean("skip_unknown")
    opts = f.get("stream_options")
    include_usage = False
    if opts is not None:
        if (
            not isinstance(opts, dict)
            or set(opts) - {"include_usage"}
            or not isinstance(opts.get("include_usage", False), bool)
        ):
            raise Problem(400, 'stream_options must be {"include_usage": true|false}', "stream_options")
        include_usage = bool(opts.get("include_usage", False))
    stop = _stops(f, limits)
    for name in ("presence_penalty", "frequency_penalty"):
        f.neutral(name, 0, 0.0)
    f.neutral("best_of", 1)
    f.neutral("logit_bias", {})
    f.neutral("suffix", "")
    f.unknown()
    job = Job(prompt, length, n, temperature or 0.0, top_k, top_p, seed, stop, logprobs, "skip" if skip else "error")
    return CompletionRequest(job, stream, echo, include_usage)


def new_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def logprobs_block(entries: list[CharLogprob], offset: int) -> dict[str, Any]:
    """OpenAI's completions `logprobs` object for these characters, the first at text offset `offset`."""
    return {
        "tokens": [e.char for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries],
        "text_offset": list(range(offset, offset + len(entries))),
    }


def completion(
    cid: str, model: str, created: int, choices: list[dict[str, Any]], prompt_chars: int, generated: int
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_chars,
            "completion_tokens": generated,
            "total_tokens": prompt_chars + generated,
        },
    }


def chunk(cid: str, model: str, created: int, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
    """One server-sent event: a completion chunk (OpenAI sends the same object, a piece of text per choice)."""
    doc: dict[str, Any] = {"id": cid, "object": "text_completion", "created": created, "model": model}
    doc["choices"] = choices
    if usage is not None:
        doc["usage"] = usage
    return b"data: " + json.dumps(doc, ensure_ascii=False).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def now() -> int:
    return int(time.time())


def json_safe(value: Any) -> Any:
    """NaN and infinity as null (JSON has no other way to say them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value

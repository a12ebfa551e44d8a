"""The HTTP layer: Starlette routes that read a request, call the engine or the library, and write the answer.

Routes: POST /v1/completions (OpenAI's completions, streamed as server-sent events with `stream: true`),
GET /v1/models, POST /v1/score, POST /v1/explain, GET /health, GET /metrics, GET / (the playground).
With an API key every route but /health needs `Authorization: Bearer KEY` (compared in constant time).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from charlm.errors import CharlmError, UsageError
from charlm.inference.engine import Engine, Piece, QueueFullError, Served, Ticket
from charlm.serve import protocol as p
from charlm.serve.metrics import CONTENT_TYPE, Metrics
from charlm.serve.protocol import Limits, Problem

ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/score", "/v1/explain")
RETRY_AFTER_S = 1


@dataclass
class State:
    """What the routes share: the engine (which holds the served model), the limits, the key, the counters."""

    engine: Engine
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    ready: bool = True
    # scoring and explaining run torch on worker threads, this many at once
    heavy: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))

    @property
    def served(self) -> Served:
        return self.engine.served


def error_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.body(), status_code=problem.status, headers=headers)


class Guard:
    """ASGI middleware: the API key, the body size named by Content-Length, and the request counters."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status = {"code": 500}

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            problem = self._refused(scope)
            if problem is not None:
                headers = {"WWW-Authenticate": "Bearer"} if problem.status == 401 else None
                return await error_response(problem, headers)(scope, receive, counted)
            await self.app(scope, receive, counted)
        finally:
            self.state.metrics.count(route, status["code"])

    def _refused(self, scope: Scope) -> Problem | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.state.api_key
        if key and scope["path"] != "/health":
            given = headers.get("authorization", "")
            token = given[7:] if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                what = "no API key given" if not given else "the API key is not valid"
                return Problem(401, f"{what}: send Authorization: Bearer KEY", None, "authentication_error")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.state.limits.max_body_bytes:
            return _too_large(self.state.limits)
        return None


def _too_large(limits: Limits) -> Problem:
    return Problem(413, f"the request body is over this server's limit of {limits.max_body_bytes:,} bytes")


async def read_body(request: Request, limits: Limits) -> dict[str, Any]:
    """The JSON object in the body, read up to the size limit."""
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(part)
    return p.parse_json(b"".join(chunks))


def handler(fn: Callable[[Request, State], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A route: a Problem becomes its error answer; anything unexpected a 500 in the same shape."""

    async def route(request: Request) -> Response:
        state: State = request.app.state.charlm
        try:
            return await fn(request, state)
        except Problem as e:
            return error_response(e, {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None)
        except ClientDisconnect:
            return Response(status_code=499)
        except CharlmError as e:
            return error_response(Problem(400, str(e)))
        except Exception as e:  # a bug: say so in the error shape clients understand, and keep serving
            return error_response(Problem(500, f"internal error: {type(e).__name__}: {e}", None, "server_error"))

    return route


# -- the routes -----------------------------------------------------------------------------------------


async def health(request: Request, state: State) -> Response:
    ck = state.served.checkpoint
    doc = {"status": "ready" if state.ready else "loading", "model": state.served.name}
    doc["checkpoint"] = str(ck.path) if ck else None
    return JSONResponse(doc, status_code=200 if state.ready else 503)


async def metrics(request: Request, state: State) -> Response:
    ck = state.served.checkpoint
    text = state.metrics.render(state.engine, state.served.name, str(ck.path) if ck else "")
    return Response(text, media_type=None, headers={"Content-Type": CONTENT_TYPE})


async def models(request: Request, state: State) -> Response:
    s = state.served
    card = {"id": s.name, "object": "model", "created": _created(s), "owned_by": "charlm"}
    if s.checkpoint is not None:
        card["checkpoint"] = str(s.checkpoint.path)
        card["vocab_size"] = s.tokenizer.vocab_size
    return JSONResponse({"object": "list", "data": [card]})


def _created(s: Served) -> int:
    ck = s.checkpoint
    try:
        return int(ck.path.stat().st_mtime) if ck else 0
    except OSError:
        return 0


async def playground(request: Request, state: State) -> Response:
    from charlm.ui.explain_view import MAX_BITS

    page = resources.files("charlm.serve").joinpath("playground.html").read_text(encoding="utf-8")
    settings = {"model": state.served.name, "max_bits": MAX_BITS, "max_tokens": state.limits.max_tokens}
    return HTMLResponse(page.replace("/*CHARLM_SETTINGS*/{}", json.dumps(settings).replace("</", "<\\/")))


class _Inbox:
    """What the engine hands a request, carried from the engine's thread to the request's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[list[Piece], bool]] = asyncio.Queue()

    def deliver(self, pieces: list[Piece], done: bool) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (pieces, done))


def _submit(state: State, req: p.CompletionRequest, inbox: _Inbox) -> Ticket:
    try:
        return state.engine.submit(req.job, inbox.deliver)
    except QueueFullError as e:
        raise Problem(503, str(e), None, "server_busy") from None
    except UsageError as e:
        raise Problem(400, f"prompt: {e}", "prompt") from None


async def completions(request: Request, state: State) -> Response:
    req = p.completion_request(await read_body(request, state.limits), state.limits, state.served.tokenizer.vocab_size)
    inbox = _Inbox()
    ticket = _submit(state, req, inbox)
    cid, created, name = p.new_id(), p.now(), ticket.served.name
    if req.stream:
        return StreamingResponse(
            _events(ticket, inbox, req, cid, created, name),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    n = req.job.n
    texts, lps = [req.job.prime if req.echo else ""] * n, [[] for _ in range(n)]  # type: list[str], list[list[Any]]
    finish: list[str | None] = [None] * n
    try:
        while True:
            try:
                pieces, done = await asyncio.wait_for(inbox.queue.get(), 0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return Response(status_code=499)
                continue
            for piece in pieces:
                texts[piece.index] += piece.text
                lps[piece.index] += piece.logprobs or []
                finish[piece.index] = piece.finish or finish[piece.index]
            if done:
                break
    finally:
        ticket.cancel()
    if ticket.error:
        raise Problem(500, ticket.error, None, "server_error")
    offset = len(req.job.prime) if req.echo else 0
    choices = [
        {
            "text": texts[i],
            "index": i,
            "logprobs": p.logprobs_block(lps[i], offset) if req.job.logprobs is not None else None,
            "finish_reason": finish[i] or "length",
        }
        for i in range(n)
    ]
    generated = sum(len(t) for t in texts) - n * offset
    return JSONResponse(p.completion(cid, name, created, choices, len(req.job.prime), generated))


async def _events(
    ticket: Ticket, inbox: _Inbox, req: p.CompletionRequest, cid: str, created: int, name: str
) -> AsyncIterator[bytes]:
    """The stream of chunks; the client going away cancels the request (the engine drops its samples)."""
    offsets = [len(req.job.prime) if req.echo else 0] * req.job.n
    generated = 0
    try:
        if req.echo and req.job.prime:
            first = [
                {"text": req.job.prime, "index": i, "logprobs": None, "finish_reason": None} for i in range(req.job.n)
            ]
            yield p.chunk(cid, name, created, first)
        while True:
            pieces, done = await inbox.queue.get()
            choices = []
            for piece in pieces:
                lp = None
                if req.job.logprobs is not None:
                    lp = p.logprobs_block(piece.logprobs or [], offsets[piece.index])
                offsets[piece.index] += len(piece.text)
                generated += len(piece.text)
                choices.append(
                    {"text": piece.text, "index": piece.index, "logprobs": lp, "finish_reason": piece.finish}
                )
            if choices:
                yield p.chunk(cid, name, created, choices)
            if done:
                break
        if ticket.error:
            err = Problem(500, ticket.error, None, "server_error").body()
            yield b"data: " + json.dumps(err).encode() + b"\n\n"
        if req.include_usage:
            usage = {"prompt_tokens": len(req.job.prime), "completion_tokens": generated}
            usage["total_tokens"] = usage["prompt_tokens"] + generated
            yield p.chunk(cid, name, created, [], usage)
        yield p.DONE
    finally:
        ticket.cancel()


def _text_field(f: p.Fields, name: str, limit: int) -> str | None:
    text = f.string(name)
    if text is not None and len(text) > limit:
        raise Problem(413, f"{name} is {len(text):,} characters; this server takes at most {limit:,}", name)
    return text


async def score(request: Request, state: State) -> Response:
    from charlm.inference.evaluate import line_records, score_ids

    f = p.Fields(await read_body(request, state.limits))
    f.string("model")
    text = _text_field(f, "text", state.limits.max_score_chars)
    lines = f.get("lines")
    skip = f.boolean("skip_unknown")
    f.unknown()
    if (text is None) == (lines is None):
        raise Problem(400, "give either text (a string) or lines (an array of strings)", "text")
    if lines is not None:
        if not isinstance(lines, list) or not all(isinstance(s, str) for s in lines):
            raise Problem(400, "lines must be an array of strings", "lines")
        bad = next((i for i, s in enumerate(lines) if "\n" in s), None)
        if bad is not None:
            raise Problem(400, f"lines[{bad}] holds a newline: give each line as its own string", "lines")
        if sum(len(s) + 1 for s in lines) > state.limits.max_score_chars:
            raise Problem(413, f"lines hold more than {state.limits.max_score_chars:,} characters", "lines")
    served = state.served
    tok = served.tokenizer
    param = "text" if text is not None else "lines"
    try:
        tok.encode(text if text is not None else "\n".join(lines or []), "skip" if skip else "error", what=param)
    except UsageError as e:
        raise Problem(400, str(e), param) from None

    def run() -> dict[str, Any]:
        model = served.module()
        if lines is not None:
            joined = "".join(s + "\n" for s in lines)
            records = line_records(model, tok, joined, skip, served.device)
            return {
                "lines": [
                    {"line": n, "bits_per_char": s.bits_per_char, "bits": s.bits, "chars": s.chars, "text": line}
                    for n, (line, s) in enumerate(records, 1)
                ]
            }
        ids = tok.encode(text or "", "skip" if skip else "error")
        if len(ids) < 2:
            raise Problem(400, "text needs at least two (known) characters to score", "text")
        return score_ids(model, ids, served.device).to_dict()

    doc = await anyio.to_thread.run_sync(run, limiter=state.heavy)
    return JSONResponse(p.json_safe({"model": served.name, **doc}))


async def explain(request: Request, state: State) -> Response:
    from charlm.interpret import explain as ex_lib

    f = p.Fields(await read_body(request, state.limits))
    f.string("model")
    text = _text_field(f, "text", state.limits.max_explain_chars)
    served = state.served
    top_k = f.integer("top_k", 5, 1, served.tokenizer.vocab_size)
    gates, skip = f.boolean("gates"), f.boolean("skip_unknown")
    f.unknown()
    if text is None:
        raise Problem(400, "text is required", "text")
    try:
        ids = served.tokenizer.encode(text, "skip" if skip else "error", what="text")
    except UsageError as e:
        raise Problem(400, str(e), "text") from None
    if len(ids) < 2:
        raise Problem(400, "text needs at least two (known) characters to explain", "text")

    def run() -> dict[str, Any]:
        ex = ex_lib.explain(served.module(), served.tokenizer, ids, top_k or 5, gates=gates)
        return ex_lib.document(ex, gates)

    doc = await anyio.to_thread.run_sync(run, limiter=state.heavy)
    return JSONResponse(p.json_safe({"model": served.name, **doc}))


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(Problem(404, f"no route {request.method} {request.url.path}", None, "not_found"))


async def wrong_method(request: Request, exc: Exception) -> Response:
    return error_response(
        Problem(405, f"{request.url.path} does not take {request.method}", None, "invalid_request_error")
    )


def build(state: State) -> ASGIApp:
    """The ASGI application."""
    routes = [
        Route("/", handler(playground), methods=["GET"]),
        Route("/health", handler(health), methods=["GET"]),
        Route("/metrics", handler(metrics), methods=["GET"]),
        Route("/v1/models", handler(models), methods=["GET"]),
        Route("/v1/completions", handler(completions), methods=["POST"]),
        Route("/v1/score", handler(score), methods=["POST"]),
        Route("/v1/explain", handler(explain), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: wrong_method})
    app.state.charlm = state
    state.metrics.watch(state.engine)
    return Guard(app, state)

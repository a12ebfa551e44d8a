"""Continuous batching: the samples of many requests stepped together, each joining and leaving between steps.

An `Engine` runs one thread that repeats a round: admit waiting requests (up to `max_rows` samples in
flight), read a slice of each new request's prime, run a few steps of every group of samples, then hand each
request the characters it got. A new request joins at the next round; one that is finished, stopped or
cancelled leaves at the end of the round it is in (a round is at most `STEPS_PER_ROUND` characters).

Samples without a seed share one group per model: one matrix product per layer per character for all of
them, each with its own temperature, top-k/top-p and random generator. A request with a seed is a group of
its own, stepped exactly as `charlm sample --seed` steps it (the same products on the same number of rows,
the same draws from one generator, the same filter), so it gets the same text whatever else is in flight:
BLAS rounds a row's product differently at different batch sizes, so in the shared product the text could
change at a near tie. Each round steps every group, the seeded ones too.

`Engine.swap` serves a new model between requests: those already running finish on the model they started
on, whose weights are dropped once its last sample leaves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from charlm.errors import CharlmError, UsageError
from charlm.inference.sample import (
    CHUNK,
    INT8_MIN_BATCH,
    Gumbel,
    SampleOptions,
    filter_logits,
    sampling_filter,
    start_ids,
)
from charlm.tokenizer import CharTokenizer, OnUnknown

if TYPE_CHECKING:
    import torch

    from charlm.checkpoint import Checkpoint
    from charlm.inference.gru_numpy import GRUWeights

STEPS_PER_ROUND = 64  # at most this many characters per sample per round: between rounds requests join and leave
FIRST_ROUND = 4  # a sample's first round is short, so its first characters go out at once
PRIME_SLICE = 256  # prime characters a new request reads per round, so a long prime never stalls the others
SHARED_INT8_MIN = 32  # a shared group of this many samples or more steps on int8 products (measured: 2x NumPy's)
FLUSH_S = 0.05  # a request gets its characters at least this often, as the CLI flushes (its first ones at once)


class QueueFullError(CharlmError):
    """Every place in the batch and in the queue is taken: try again shortly."""


class Stepper(Protocol):
    """One character of a batch of samples per call: ids (B,) -> logits (B, V)."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class Backend(Protocol):
    """How one model steps batches of samples: made, fed a prime, joined together and cut down."""

    vocab: int

    def begin(self, batch: int) -> Stepper: ...
    def feed(self, step: Stepper, ids: Sequence[int]) -> None: ...
    def join(self, steps: Sequence[Stepper]) -> Stepper | None: ...
    def keep(self, step: Stepper, rows: Sequence[int]) -> Stepper | None: ...


class NumpyGRU:
    """A GRU on the CPU, stepped as `charlm sample` steps it: in NumPy (`charlm.inference.gru_numpy`), and on
    PyTorch's int8 products (`charlm.inference.torch_step`) for INT8_MIN_BATCH samples or more at once.
    `torch_model` gives the torch module, loaded the first time a batch is that large. Samples without a seed,
    whose text nothing needs to reproduce, go onto int8 products from SHARED_INT8_MIN samples, where those are
    already faster than NumPy's."""

    def __init__(self, w: GRUWeights, torch_model: Callable[[], Any]) -> None:
        from charlm.inference.gru_numpy import prescaled

        self.w, self.pre, self.vocab, self.torch_model = w, prescaled(w), w.config.vocab_size, torch_model
        self._int8: Any = None  # a FusedGRUStep on int8 products, resized for each batch; False: not available

    def begin(self, batch: int, state: np.ndarray | None = None, int8_from: int = INT8_MIN_BATCH) -> Stepper:
        from charlm.inference.gru_numpy import GRUStep

        if batch >= int8_from and self._int8_step() is not None:
            import torch

            h = np.zeros((self.w.config.layers, batch, self.w.config.hidden), np.float32) if state is None else state
            return _Int8Step(self._int8.resized(torch.from_numpy(np.ascontiguousarray(h))))
        return GRUStep(self.w, batch, state, self.pre)

    def warm(self) -> None:
        """Load now what a batch of INT8_MIN_BATCH samples needs (torch, the int8 products), not mid-request."""
        self._int8_step()

    def _int8_step(self) -> Any:
        if self._int8 is None:
            import torch

            from charlm.inference.torch_step import FusedGRUStep, uses_int8

            self._int8 = False
            if uses_int8(INT8_MIN_BATCH, "cpu"):
                with torch.inference_mode():
                    self._int8 = FusedGRUStep(
                        self.torch_model(), torch.zeros(self.w.config.layers, 1, self.w.config.hidden), 1, True
                    )
        return self._int8 or None

    def feed(self, step: Any, ids: Sequence[int]) -> None:
        x = np.zeros(len(step.state()[0]), np.intp)
        for c in ids:  # as `charlm sample` reads a prime: one character per step
            x[:] = c
            step(x)

    def join(self, steps: Sequence[Any]) -> Stepper | None:
        states = [s.state() for s in steps]
        if not states:
            return None
        return self.begin(sum(s.shape[1] for s in states), np.concatenate(states, 1), SHARED_INT8_MIN)

    def keep(self, step: Any, rows: Sequence[int]) -> Stepper | None:
        return self.begin(len(rows), step.state()[:, list(rows)], SHARED_INT8_MIN) if len(rows) else None


class _Int8Step:
    """A FusedGRUStep on int8 products, taking and giving NumPy arrays, on one thread (as `charlm sample`)."""

    def __init__(self, fused: Any) -> None:
        self.fused = fused

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        from charlm.inference.threads import intra_op_threads

        with torch.inference_mode(), intra_op_threads(1):
            return self.fused(torch.from_numpy(np.asarray(x, np.int64))).numpy()

    def state(self) -> np.ndarray:
        import torch

        return torch.stack(self.fused.h).numpy().copy()


class _TorchStep:
    """`charlm.inference.torch_step.ModelStep` taking and giving NumPy arrays."""

    def __init__(self, model: Any, state: Any) -> None:
        from charlm.inference.torch_step import ModelStep

        self.inner, self.device = ModelStep(model, state), state.device

    @property
    def state(self) -> Any:
        return self.inner.state

    @state.setter
    def state(self, value: Any) -> None:
        self.inner.state = value

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(np.asarray(x, np.int64)).to(self.device)
            return self.inner(ids).float().cpu().numpy()


class TorchModel:
    """Any model on any device, stepped through its own forward one character at a time."""

    def __init__(self, model: Any, device: Any) -> None:
        self.model, self.device, self.vocab = model, device, model.config.vocab_size

    def begin(self, batch: int, state: Any = None) -> Stepper:
        import torch

        with torch.inference_mode():
            return _TorchStep(self.model, self.model.init_hidden(batch, self.device) if state is None else state)

    def feed(self, step: Any, ids: Sequence[int]) -> None:
        import torch

        if ids:  # as `charlm sample` reads a prime on this path: in one pass
            with torch.inference_mode():
                x = torch.tensor(list(ids), device=self.device).expand(step.state.shape[1], -1)
                _, step.state = self.model(x, step.state)

    def join(self, steps: Sequence[Any]) -> Stepper | None:
        import torch

        return self.begin(0, torch.cat([s.state for s in steps], 1)) if steps else None

    def keep(self, step: Any, rows: Sequence[int]) -> Stepper | None:
        return self.begin(0, step.state[:, list(rows)]) if len(rows) else None


class Model(Protocol):
    """What the engine needs of a loaded model: `charlm.Model` (from `charlm.load`) is one."""

    @property
    def name(self) -> str: ...
    @property
    def checkpoint(self) -> Checkpoint: ...
    @property
    def tokenizer(self) -> CharTokenizer: ...
    @property
    def module(self) -> Any: ...
    @property
    def torch_device(self) -> torch.device: ...
    def numpy_weights(self, streams: int = 1) -> GRUWeights | None: ...


@dataclass
class Served:
    """One model as the engine serves it: its name, the model (a `charlm.Model`) and how it steps batches."""

    name: str
    model: Model  # a charlm.Model (the server also scores and explains with it)
    backend: Backend

    @property
    def checkpoint(self) -> Checkpoint:
        """The checkpoint the model was loaded from."""
        return self.model.checkpoint

    @property
    def tokenizer(self) -> CharTokenizer:
        """The model's vocabulary."""
        return self.model.tokenizer


@dataclass(frozen=True)
class Job:
    """What one request asks for: `n` samples of `length` characters continuing `prime`."""

    prime: str = ""
    length: int = 16
    n: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # per character: its log-probability and this many top alternatives
    on_unknown: OnUnknown = "error"

    def options(self) -> SampleOptions:
        return SampleOptions(
            self.length, self.temperature, self.top_k, self.top_p, self.seed, self.prime, None, self.on_unknown
        )


@dataclass
class CharLogprob:
    """One generated character: its log-probability (natural log, under the model itself: temperature 1, no
    top-k/top-p) and the model's likeliest characters with theirs."""

    char: str
    logprob: float
    top: list[tuple[str, float]]


@dataclass
class Piece:
    """New text of one of a request's samples; `finish` ("stop" or "length") on its last piece."""

    index: int
    text: str
    logprobs: list[CharLogprob] | None = None
    finish: str | None = None


Deliver = Callable[[list[Piece], bool], None]  # (new pieces, whether the request is done)


class Ticket:
    """A request in the engine. `cancel()` takes it out at the end of the current round."""

    def __init__(self, job: Job, served: Served, prime: list[int], deliver: Deliver) -> None:
        self.job, self.served, self.prime, self.deliver = job, served, prime, deliver
        self.cancelled, self.done = False, False
        self.submitted, self.first_char_at = time.perf_counter(), None  # type: float, float | None
        self.pending: list[Piece] = []
        self.last_flush = 0.0
        self.open = job.n  # samples not finished yet
        self.error: str | None = None

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Row:
    """One sample in a group: its request, its place among the request's samples, what it still owes."""

    ticket: Ticket
    index: int
    remaining: int
    held: str = ""  # text not handed over yet: what could still be the start of a stop string
    held_lp: list[CharLogprob] = field(default_factory=list)
    finished: bool = False
    rng: np.random.Generator | None = None  # shared groups: the row's own generator (None when greedy)


class _Group:
    """Samples stepped by one stepper. Seeded: one request's samples exactly as `charlm sample` draws them.
    Shared: any number of requests' samples, each row with its own options and its own chunk of noise
    (noise[i, pos[i]] is row i's draw for this step, scaled by its temperature; zeros for greedy rows)."""

    def __init__(self, served: Served, step: Stepper, rows: list[_Row], x: np.ndarray, seeded: bool) -> None:
        self.served, self.step, self.rows, self.x, self.seeded = served, step, rows, x, seeded
        self.steps_done = 0
        vocab = served.backend.vocab
        if seeded:
            job = rows[0].ticket.job
            self.gumbel = Gumbel(job.seed, job.temperature)
            self.filt = sampling_filter(job.options(), filter_logits)
            self.draws: np.ndarray | None = None
        else:
            self.noise = np.zeros((len(rows), CHUNK, vocab), np.float32)
            self.phase = CHUNK  # every row of a shared group is at the same place in its chunk of noise
            self._draw(range(len(rows)))
        self.resized()

    def resized(self) -> None:
        """After rows joined or left: the buffers and the rows grouped by their filter."""
        self.buf = np.empty((len(self.rows), self.served.backend.vocab), np.float32)
        self.ar = np.arange(len(self.rows))
        self.filters: dict[tuple[int | None, float | None], list[int]] = {}
        for i, r in enumerate(self.rows):
            job = r.ticket.job
            if job.top_k is not None or job.top_p is not None and job.top_p < 1:
                self.filters.setdefault((job.top_k, job.top_p), []).append(i)

    def add(self, steps: list[Stepper], rows: list[_Row], x: np.ndarray) -> None:
        """Rows joining the group (their steppers in order, rows and first inputs matching): one new step."""
        vocab, before = self.served.backend.vocab, len(self.rows)
        self.step = self.served.backend.join([self.step, *steps])  # type: ignore[assignment]
        self.rows, self.x = self.rows + rows, np.concatenate([self.x, x])
        self.noise = np.concatenate([self.noise, np.zeros((len(rows), CHUNK, vocab), np.float32)])
        self._draw(range(before, len(self.rows)))  # fresh draws, used from the group's place in the chunk on
        self.resized()

    def keep(self, alive: list[int]) -> None:
        self.step = self.served.backend.keep(self.step, alive)  # type: ignore[assignment]
        self.rows, self.x = [self.rows[i] for i in alive], self.x[alive]
        self.noise = self.noise[alive]
        self.resized()

    def _draw(self, rows: range | list[int]) -> None:
        """A new chunk of noise for these rows, from each one's own generator, as `Gumbel` draws it:
        -log of Exp(1) draws, times the temperature (zeros for greedy rows)."""
        for i in rows:
            r = self.rows[i]
            if r.rng is not None:
                e = r.rng.standard_exponential(self.noise.shape[1:], dtype=np.float32)
                np.log(np.maximum(e, np.finfo(np.float32).tiny, out=e), out=e)
                np.multiply(e, np.float32(-r.ticket.job.temperature), out=self.noise[i])

    def noised(self, logits: np.ndarray) -> np.ndarray:
        """The shared group's logits, each row filtered by its own top-k/top-p and given its own draw."""
        if self.phase == CHUNK:
            if self.steps_done:  # (the first chunk was drawn as the rows joined)
                self._draw(range(len(self.rows)))
            self.phase = 0
        out = np.add(logits, self.noise[:, self.phase], out=self.buf)
        self.phase += 1
        for (top_k, top_p), rows in self.filters.items():
            kept = filter_logits(logits[rows], 1.0, top_k, top_p)
            out[rows] = np.where(np.isneginf(kept), -np.inf, out[rows])
        return out


@dataclass
class Stats:
    """What the engine has done, for monitoring; the hooks are called on the engine's thread."""

    chars: int = 0  # characters generated
    rows: int = 0  # samples in the batch now
    queued: int = 0  # requests waiting for a place
    on_first_char: Callable[[float], None] | None = None  # seconds from submit to a request's first character
    on_step: Callable[[float, int], None] | None = None  # seconds per step of a group, and its samples


class Engine:
    """Runs the rounds on its own thread. `submit` is safe to call from any thread; the `deliver` callback of
    a request is called on the engine's thread."""

    def __init__(self, served: Served, max_rows: int = 256, max_queue: int = 256) -> None:
        self.served, self.max_rows, self.max_queue = served, max_rows, max_queue
        self.stats = Stats()
        self._waiting: deque[Ticket] = deque()
        self._priming: list[tuple[Ticket, Stepper | None, int]] = []  # (ticket, stepper, prime characters read)
        self._groups: list[_Group] = []
        self._lock = threading.Condition()
        self._stop = False
        self._room, self._seen = True, 0  # this round: whether a new request could join, and how many waited
        self._thread = threading.Thread(target=self._run, name="charlm-engine", daemon=True)

    # -- the interface -------------------------------------------------------------------------------
    def start(self) -> Engine:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join(timeout)

    def swap(self, served: Served) -> None:
        """Serve `served` to every request submitted from now on."""
        self.served = served

    def in_flight(self) -> int:
        """Requests admitted or waiting that have not finished."""
        with self._lock:
            tickets = {id(r.ticket) for g in self._groups for r in g.rows} | {id(t) for t, _, _ in self._priming}
            return len(tickets) + len(self._waiting)

    def encode_prime(self, prime: str, on_unknown: OnUnknown = "error", served: Served | None = None) -> list[int]:
        """The prime as the served model reads it; UsageError naming characters it never saw."""
        return start_ids((served or self.served).tokenizer, prime, on_unknown)

    def submit(self, job: Job, deliver: Deliver) -> Ticket:
        """Queue a request. Raises UsageError for a prime with unknown characters, QueueFullError when the
        queue is full."""
        served = self.served
        if job.n < 1 or job.length < 0:
            raise UsageError("n must be at least 1 and length at least 0")
        ticket = Ticket(job, served, self.encode_prime(job.prime, job.on_unknown, served), deliver)
        with self._lock:
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError("the server is busy: every place in the batch and the queue is taken")
            self._waiting.append(ticket)
            self.stats.queued = len(self._waiting)
            self._lock.notify_all()
        return ticket

    # -- the rounds ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not (self._waiting or self._priming or self._groups):
                    self._lock.wait()
                if self._stop:
                    self._fail_all("the server is shutting down")
                    return
                admitted = self._admit()
            try:
                self._round(admitted)
            except Exception as e:  # a failure in the model's step: fail what was in flight, keep serving
                self._fail_all(f"generation failed: {e}")

    def _rows_in_flight(self) -> int:
        return sum(len(g.rows) for g in self._groups) + sum(t.job.n for t, _, _ in self._priming)

    def _admit(self) -> list[Ticket]:
        out, rows = [], self._rows_in_flight()
        while self._waiting and (rows + self._waiting[0].job.n <= self.max_rows or rows == 0):
            rows += self._waiting[0].job.n
            out.append(self._waiting.popleft())
        self.stats.queued = len(self._waiting)
        return out

    def _round(self, admitted: list[Ticket]) -> None:
        for t in admitted:
            if t.cancelled:
                self._finish_ticket(t)
                continue
            if t.job.length == 0:
                for i in range(t.job.n):
                    t.pending.append(Piece(i, "", [] if t.job.logprobs is not None else None, "length"))
                t.open = 0
                self._flush(t, force=True)
                continue
            # a prime of one character has nothing to read first: its rows start from the zero state, made for
            # all such requests of the round at once as they join
            self._priming.append((t, t.served.backend.begin(t.job.n) if len(t.prime) > 1 else None, 0))
        self._prime()
        self._room, self._seen = self._rows_in_flight() < self.max_rows, len(self._waiting)
        ids_by_group = []
        for g in self._groups:
            live = [r for r in g.rows if not r.finished]
            k = min(r.remaining for r in live) if live else 1
            k = min(k, FIRST_ROUND if any(r.ticket.first_char_at is None for r in live) else STEPS_PER_ROUND)
            t0 = time.perf_counter()
            ids, lps = self._steps(g, max(1, k))
            dt = time.perf_counter() - t0
            if self.stats.on_step is not None:
                self.stats.on_step(dt / len(ids), len(g.rows))
            ids_by_group.append((g, ids, lps))
        for g, ids, lps in ids_by_group:
            self._hand_over(g, ids, lps)
        self._tidy()

    def _prime(self) -> None:
        still, ready = [], []
        for t, step, done in self._priming:
            if t.cancelled:
                self._finish_ticket(t)
                continue
            if step is not None:
                body = t.prime[:-1]  # the last prime character is the first step's input
                upto = min(len(body), done + PRIME_SLICE)
                t.served.backend.feed(step, body[done:upto])
                if upto < len(body):
                    still.append((t, step, upto))
                    continue
            ready.append((t, step))
        self._priming = still
        self._join(ready)

    def _join(self, ready: list[tuple[Ticket, Stepper | None]]) -> None:
        """Requests whose prime is read join the batch: a seeded one as a group of its own, the others their
        model's shared group, all of those of one round in one join (each join rebuilds the group's step, so
        64 requests arriving together are one rebuild, not 64). A request without a stepper starts from the
        zero state: one stepper is made for all of those of the round, after the rows that were fed."""
        joining: dict[int, tuple[Served, list[Stepper], list[_Row], list[int], list[_Row], list[int]]] = {}
        for t, step in ready:
            job = t.job
            rows = [_Row(t, i, job.length) for i in range(job.n)]
            if job.seed is not None:
                step = t.served.backend.begin(job.n) if step is None else step
                x = np.full(job.n, t.prime[-1], np.intp)
                with self._lock:
                    self._groups.append(_Group(t.served, step, rows, x, seeded=True))
                continue
            for r in rows:
                r.rng = np.random.default_rng() if job.temperature else None
            _, steps, fed, fed_x, zero, zero_x = joining.setdefault(id(t.served), (t.served, [], [], [], [], []))
            if step is None:
                zero += rows
                zero_x += [t.prime[-1]] * job.n
            else:
                steps.append(step)
                fed += rows
                fed_x += [t.prime[-1]] * job.n
        for served, steps, fed, fed_x, zero, zero_x in joining.values():
            if zero:
                steps.append(served.backend.begin(len(zero)))
            rows, x = fed + zero, np.array(fed_x + zero_x, np.intp)
            shared = next((g for g in self._groups if g.served is served and not g.seeded), None)
            if shared is not None:
                shared.add(steps, rows, x)
                continue
            step = steps[0] if len(steps) == 1 else served.backend.join(steps)
            with self._lock:
                self._groups.append(_Group(served, step, rows, x, seeded=False))  # type: ignore[arg-type]

    def _steps(self, g: _Group, k: int) -> tuple[np.ndarray, list[list[CharLogprob | None]] | None]:
        """k steps of a group: ids (k, B), and per step per row the logprob record of rows that asked."""
        B = len(g.rows)
        ids = np.empty((k, B), np.int64)
        want = [i for i, r in enumerate(g.rows) if r.ticket.job.logprobs is not None]
        lps: list[list[CharLogprob | None]] | None = [] if want else None
        for t in range(k):
            if t and self._room and len(self._waiting) > self._seen:  # a new request can join: end the round
                ids, lps = ids[:t], lps[:t] if lps is not None else None
                break
            logits = g.step(g.x)
            if g.seeded:
                # exactly `charlm.inference.sample.decode`, with the noise drawn a chunk at a time as there
                if g.steps_done % CHUNK == 0:
                    g.draws = g.gumbel(B, g.served.backend.vocab)
                chosen = logits if g.filt is None else g.filt(logits)
                if g.draws is not None:
                    chosen = np.add(chosen, g.draws[g.steps_done % CHUNK], out=g.buf)
            else:
                chosen = g.noised(logits)
            g.x = chosen.argmax(-1, out=ids[t])
            g.steps_done += 1
            if lps is not None:
                lps.append(_logprobs(logits, want, ids[t], g))
        return ids, lps

    def _hand_over(self, g: _Group, ids: np.ndarray, lps: list[list[CharLogprob | None]] | None) -> None:
        tok = g.served.tokenizer
        cols = ids.T.tolist()
        touched = {}
        for i, r in enumerate(g.rows):
            if r.finished:
                continue
            t = r.ticket
            take = cols[i][: r.remaining]
            r.remaining -= len(take)
            text = tok.decode(take)
            self.stats.chars += len(text)
            if lps is not None and t.job.logprobs is not None:
                r.held_lp += [step[i] for step in lps[: len(take)]]  # type: ignore[misc]
            r.held += text
            finish = _cut(r, t.job.stop)
            if finish is None and r.remaining == 0:
                finish = "length"
            piece = _release(r, t.job.stop, finish is not None)
            if piece.text or finish or piece.logprobs:
                piece.finish = finish
                t.pending.append(piece)
            if finish:
                r.finished = True
                t.open -= 1
            touched[id(t)] = t
        for t in touched.values():
            self._flush(t)

    def _flush(self, t: Ticket, force: bool = False) -> None:
        now = time.perf_counter()
        if t.first_char_at is None and any(p.text for p in t.pending):
            t.first_char_at = now
            if self.stats.on_first_char is not None:
                self.stats.on_first_char(now - t.submitted)
            force = True
        if t.pending and (force or t.open == 0 or now - t.last_flush >= FLUSH_S):
            pieces, t.pending, t.last_flush = _merged(t.pending), [], now
            t.done = t.open == 0
            try:
                t.deliver(pieces, t.done)
            except Exception:  # the receiving side is gone: nothing more to send it
                t.cancelled = True

    def _finish_ticket(self, t: Ticket, error: str | None = None) -> None:
        if not t.done:
            t.done, t.error = True, error
            with contextlib.suppress(Exception):
                t.deliver(t.pending, True)
            t.pending = []

    def _tidy(self) -> None:
        """Take out every row that is finished or whose request was cancelled; drop groups left empty."""
        with self._lock:
            kept_groups = []
            for g in self._groups:
                alive = [i for i, r in enumerate(g.rows) if not r.finished and not r.ticket.cancelled]
                for r in g.rows:
                    if r.ticket.cancelled or r.ticket.open == 0:
                        self._finish_ticket(r.ticket)
                if g.seeded:
                    # a seeded group keeps all its rows until all are done, as `charlm sample` steps them all
                    if alive:
                        kept_groups.append(g)
                    continue
                if alive and len(alive) < len(g.rows):
                    g.keep(alive)
                if alive:
                    kept_groups.append(g)
            self._groups = kept_groups
            self.stats.rows = self._rows_in_flight()

    def _fail_all(self, message: str) -> None:
        for g in self._groups:
            for r in g.rows:
                self._finish_ticket(r.ticket, message)
        for t, _, _ in self._priming:
            self._finish_ticket(t, message)
        for t in self._waiting:
            self._finish_ticket(t, message)
        self._groups, self._priming = [], []
        self._waiting.clear()
        self.stats.rows = self.stats.queued = 0


def _logprobs(logits: np.ndarray, rows: list[int], chosen: np.ndarray, g: _Group) -> list[CharLogprob | None]:
    """Per row of the group: the chosen character's log-probability and the top alternatives (rows in `rows`)."""
    out: list[CharLogprob | None] = [None] * len(g.rows)
    sub = logits[rows].astype(np.float64)
    sub -= sub.max(-1, keepdims=True)
    sub -= np.log(np.exp(sub).sum(-1, keepdims=True))
    chars = g.served.tokenizer.chars
    for j, i in enumerate(rows):
        k = min(g.rows[i].ticket.job.logprobs or 0, sub.shape[1])
        top = np.argsort(-sub[j], kind="stable")[:k].tolist() if k else []
        c = int(chosen[i])
        out[i] = CharLogprob(chars[c], float(sub[j, c]), [(chars[a], float(sub[j, a])) for a in top])
    return out


def _merged(pieces: list[Piece]) -> list[Piece]:
    """One piece per sample: the text (and logprobs) of its pieces joined, the last one's finish."""
    out: dict[int, Piece] = {}
    for piece in pieces:
        had = out.get(piece.index)
        if had is None:
            out[piece.index] = Piece(piece.index, piece.text, piece.logprobs, piece.finish)
            continue
        had.text += piece.text
        if had.logprobs is not None and piece.logprobs is not None:
            had.logprobs = had.logprobs + piece.logprobs
        had.finish = piece.finish or had.finish
    return list(out.values())


def _cut(r: _Row, stops: tuple[str, ...]) -> str | None:
    """End the row's text before the first stop string in it: "stop" if one was found."""
    hits = [r.held.index(s) for s in stops if s and s in r.held]
    if not hits:
        return None
    end = min(hits)
    r.held, r.held_lp = r.held[:end], r.held_lp[:end]
    return "stop"


def _release(r: _Row, stops: tuple[str, ...], final: bool) -> Piece:
    """What can be handed over now: all when final, else all but what could still start a stop string."""
    keep = 0 if final else max((len(s) for s in stops), default=1) - 1
    cut = max(0, len(r.held) - keep)
    text, r.held = r.held[:cut], r.held[cut:]
    lps, r.held_lp = r.held_lp[:cut], r.held_lp[cut:]
    return Piece(r.index, text, lps if r.ticket.job.logprobs is not None else None)


def load_served(model: Model, name: str | None = None) -> Served:
    """A loaded model (`charlm.load`) made ready to serve under `name` (its run folder's name by default): a
    GRU on the CPU steps in NumPy, as `Model.sample` steps fewer than INT8_MIN_BATCH samples, on PyTorch's
    int8 products for more; anything else through its torch module on the model's device."""
    weights = model.numpy_weights()
    backend: Backend
    if weights is not None:
        backend = NumpyGRU(weights, lambda: model.module)
    else:
        backend = TorchModel(model.module, model.torch_device)
    return Served(name or model.name, model, backend)

"""Generating text: temperature, top-k and nucleus (top-p) sampling, streamed as it is generated.

Where the steps run: on a CPU, a GRU model's samples are stepped in NumPy (`charlm.inference.gru_numpy`),
unless there are so many at once (INT8_MIN_BATCH) that int8 matrix products pay; on a GPU, for those many
samples, and for cells without a NumPy step, PyTorch runs them (`charlm.inference.torch_step`). This module
imports no torch itself, so `charlm sample` on a CPU never pays for loading it. The random draws come from
NumPy on every path, so a seed gives the same text wherever the steps run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from charlm.errors import UsageError, param
from charlm.inference.draws import (
    CHUNK,
    INT8_MIN_BATCH,
    MAX_TEMPERATURE,
    PRIME_BLOCK,
    Gumbel,
    Primed,
    SampleOptions,
    check,
    decode,
    sampling_filter,
)
from charlm.inference.gru_numpy import GRUStep, GRUWeights
from charlm.tokenizer import CharTokenizer, OnUnknown

if TYPE_CHECKING:
    from charlm.checkpoint import Checkpoint
    from charlm.config import ModelConfig

__all__ = [  # the sampling options and draws live in charlm.inference.draws, which torch_step also reads
    "CHUNK",
    "CPU_MAX_PARAMS",
    "INT8_MIN_BATCH",
    "MAX_TEMPERATURE",
    "Gumbel",
    "Primed",
    "SampleOptions",
    "check",
    "decode",
    "filter_logits",
    "generate_chunks",
    "generate_ids",
    "load",
    "numpy_path",
    "prime_ids",
    "sample_many",
    "sample_pieces",
    "sampling_filter",
    "start_ids",
    "stream",
]

# On `--device auto`, models up to this size sample on the CPU even where there is a GPU: one character of
# one sample is a few small products, and a GPU spends longer launching them than a CPU takes to run them.
CPU_MAX_PARAMS = 2_500_000
# Samples are generated side by side in groups whose working memory (random draws, logits, states) stays under
# WORK_BYTES, and of which all but the first, streamed as it is generated, are held back until their turn in
# at most HELD_BYTES of ids. Both are constants, not the machine's free memory, so a seed gives the same text
# on every machine; a million samples, or two of a billion characters, need no more memory than a few.
WORK_BYTES = 256 << 20
HELD_BYTES = 32 << 20


def _id_bytes(vocab: int) -> int:
    return 1 if vocab <= 1 << 8 else 2 if vocab <= 1 << 16 else 4


def _sample_bytes(cfg: ModelConfig) -> int:
    """Working memory of one sample in a group: a chunk of random draws, logits and their filtered copies,
    the states and projections of every layer, a chunk of ids."""
    return 4 * (CHUNK * cfg.vocab_size + 8 * cfg.vocab_size + 12 * cfg.layers * cfg.hidden) + 16 * CHUNK


def group_size(cfg: ModelConfig, length: int, n: int) -> int:
    """How many of `n` samples are generated side by side at once (see WORK_BYTES)."""
    work = WORK_BYTES // _sample_bytes(cfg)
    held = 1 + HELD_BYTES // max(1, length * _id_bytes(cfg.vocab_size))
    return max(1, min(n, work, held))


def memory_needed(cfg: ModelConfig, length: int, n: int, prime_chars: int = 1) -> int:
    """Bytes a request needs beyond the process itself: the weights (and the step's copies of them), one
    group's working memory and held samples, the prime's ids and the block of it read at a time."""
    k = {"lstm": 4, "rnn": 1}.get(getattr(cfg, "cell", "gru"), 3)
    H, V = cfg.hidden, cfg.vocab_size
    params = V * (cfg.embed + H + 1) + k * H * (cfg.embed + H + 2) + (cfg.layers - 1) * k * H * (2 * H + 2)
    g = group_size(cfg, length, n)
    held = (g - 1) * length * _id_bytes(V)
    return 3 * 4 * params + g * _sample_bytes(cfg) + held + 16 * prime_chars + 2 * 4 * PRIME_BLOCK * V


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (MemAvailable), or free pages; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_memory(need: int, what: str) -> None:
    """A UsageError, before anything is allocated, when `need` bytes are more than the machine has free."""
    free = available_memory()
    if free is not None and need > free:
        raise UsageError(f"{what} need about {need / 2**30:.1f} GiB of memory; {free / 2**30:.1f} GiB is free")




def prime_ids(tok: CharTokenizer, prime: str, on_unknown: OnUnknown) -> np.ndarray:
    """The prime as an array of ids; with no prime the model starts as at the beginning of a line."""
    ids = tok.encode(prime, on_unknown, what=param("prime")) if prime else np.zeros(0, np.int64)
    if not len(ids):
        ids = np.array([tok.id_of("\n") if "\n" in tok else 0], np.int64)
    return ids.astype(np.int64, copy=False)


def start_ids(tok: CharTokenizer, prime: str, on_unknown: OnUnknown) -> list[int]:
    """The prime as ids (see prime_ids)."""
    return prime_ids(tok, prime, on_unknown).tolist()


def filter_logits(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """Scaled logits with the excluded characters set to -inf. logits: (B, V)."""
    logits = logits / np.float32(temperature)
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = np.partition(logits, vocab - top_k, axis=-1)[..., vocab - top_k, None]
        logits[logits < kth] = -np.inf
    if top_p is not None and top_p < 1.0:
        ranked = -np.sort(-logits, axis=-1)
        probs = np.exp(ranked - ranked[..., :1])
        probs /= probs.sum(-1, keepdims=True)
        # keep a character while the ones ranked above it fall short of top_p (the top one always stays), and
        # any character tied with the last one kept, so the order of equal logits never matters
        kept = ((np.cumsum(probs, -1) - probs) < top_p).sum(-1, keepdims=True)
        logits[logits < np.take_along_axis(ranked, kept - 1, -1)] = -np.inf
    return logits


def _argmax(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
    return logits.argmax(-1, out=out)  # the method: np.argmax's wrapper costs more than the work here


def _numpy_chunks(
    w: GRUWeights, primed: Primed, opts: SampleOptions, batch: int, noise: Gumbel
) -> Iterator[np.ndarray]:
    """What `generate_chunks` yields, stepped in NumPy."""
    state = np.repeat(primed.numpy_state(w), batch, axis=1)
    step, x = GRUStep(w, batch, state), np.full(batch, primed.prime[-1], np.intp)
    buf, filt = np.empty((batch, w.config.vocab_size), np.float32), sampling_filter(opts, filter_logits)
    for a in range(0, opts.length, CHUNK):
        out = np.empty((min(CHUNK, opts.length - a), batch), np.int64)
        x = decode(step, x, out, noise(batch, w.config.vocab_size), filt, np.add, _argmax, buf)
        yield out


def _on_numpy(model: Any, batch: int, device: Any) -> bool:
    if isinstance(model, GRUWeights):
        return True
    if getattr(model.config, "cell", "gru") != "gru" or getattr(device, "type", device) != "cpu":
        return False
    from charlm.inference.torch_step import uses_int8

    return not uses_int8(batch, device)


def generate_chunks(
    model: Any,
    prime: Sequence[int] | Primed,
    opts: SampleOptions,
    batch: int = 1,
    device: Any = "cpu",
    noise: Gumbel | None = None,
) -> Iterator[np.ndarray]:
    """(T, batch) ids for each chunk of up to CHUNK steps, `opts.length` steps in all. `model` is a torch
    model on `device`, or the `GRUWeights` of one (which run on the CPU). `noise` (a Gumbel of the options'
    seed by default) carries the random stream from one group of samples to the next."""
    primed = prime if isinstance(prime, Primed) else Primed(prime)
    noise = noise or Gumbel(opts.seed, opts.temperature)
    if _on_numpy(model, batch, device):
        yield from _numpy_chunks(primed.weights(model), primed, opts, batch, noise)
    else:
        from charlm.inference.torch_step import chunks

        yield from chunks(model, primed, opts, batch, device, noise)


def generate_ids(
    model: Any, prime: list[int], opts: SampleOptions, batch: int = 1, device: Any = "cpu"
) -> Iterator[np.ndarray]:
    """Yield the next id of each of `batch` samples, (batch,), `opts.length` times."""
    for chunk in generate_chunks(model, prime, opts, batch, device):
        yield from chunk


class _StopCut:
    """A streamed sample's text, ended before the first occurrence of `stop`: holds back only what could
    still be the start of it."""

    def __init__(self, stop: str | None) -> None:
        self.stop, self.held, self.done = stop or "", "", False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self.held += piece
        if self.stop and self.stop in self.held:
            self.done = True
            return self.held[: self.held.index(self.stop)]
        cut = len(self.held) - (len(self.stop) - 1) if self.stop else len(self.held)
        out, self.held = (self.held[:cut], self.held[cut:]) if cut > 0 else ("", self.held)
        return out

    def end(self) -> str:
        out, self.held = ("" if self.done else self.held), ""
        return out


def _code_points(tok: CharTokenizer) -> np.ndarray:
    return np.array([ord(c) for c in tok.chars], np.uint32)


def _decode(cps: np.ndarray, ids: np.ndarray) -> str:
    """Ids to text through a table of code points: no Python object per character, for long held samples."""
    return cps[ids].tobytes().decode("utf-32-le", "surrogatepass") if len(ids) else ""


def sample_pieces(
    model: Any, tok: CharTokenizer, opts: SampleOptions, n: int = 1, device: Any = "cpu"
) -> Iterator[tuple[int, str]]:
    """The text of `n` samples as (sample number, piece), in order: every sample yields at least one piece,
    and all of one sample's come before the next's.

    The samples are generated side by side in groups (see `group_size`): the first of each group is
    streamed as it is generated, the others are held back as compact ids until it ends. The prime is read
    once (see `Primed`). What the request needs is checked against the free memory before anything is
    allocated.
    """
    cfg = model.config
    prime = prime_ids(tok, opts.prime, opts.on_unknown)
    check_memory(memory_needed(cfg, opts.length, n, len(prime)), f"{n:,} sample(s) of {opts.length:,} characters")
    g, primed = group_size(cfg, opts.length, n), Primed(prime)
    noise, cps, dtype = Gumbel(opts.seed, opts.temperature), _code_points(tok), f"u{_id_bytes(cfg.vocab_size)}"
    for a in range(0, n, g):
        rows, cut = min(g, n - a), _StopCut(opts.stop)
        held: list[list[np.ndarray]] = [[] for _ in range(rows - 1)]
        for chunk in generate_chunks(model, primed, opts, rows, device, noise):
            piece = cut.feed(_decode(cps, chunk[:, 0]))
            if piece:
                yield a, piece
            if cut.done and rows == 1:
                break
            for h, col in zip(held, chunk[:, 1:].T, strict=True):
                h.append(col.astype(dtype))
        yield a, cut.end()
        for i, h in enumerate(held, a + 1):
            text = _decode(cps, np.concatenate(h)) if h else ""
            yield i, text.split(opts.stop, 1)[0] if opts.stop else text


def stream(model: Any, tok: CharTokenizer, opts: SampleOptions, device: Any = "cpu") -> Iterator[str]:
    """One sample as it is generated, a chunk of characters at a time, ended early at `opts.stop`."""
    for _, piece in sample_pieces(model, tok, opts, 1, device):
        if piece:
            yield piece


def sample_many(model: Any, tok: CharTokenizer, opts: SampleOptions, n: int, device: Any = "cpu") -> list[str]:
    """`n` samples generated side by side (much faster than one after another)."""
    pieces: list[list[str]] = [[] for _ in range(n)]
    for i, piece in sample_pieces(model, tok, opts, n, device):
        pieces[i].append(piece)
    return ["".join(p) for p in pieces]


def numpy_path(cfg: ModelConfig, device: str, streams: int) -> bool:
    """Whether `streams` samples at once of a model of `cfg`, asked for on `device` (auto, cpu, ...), are
    stepped in NumPy on the CPU: a GRU, fewer than INT8_MIN_BATCH samples, on the CPU, or on auto when it is
    small (CPU_MAX_PARAMS)."""
    if streams >= INT8_MIN_BATCH or getattr(cfg, "cell", "gru") != "gru":
        return False
    small = sum(math.prod(s) for s in GRUWeights.shapes(cfg).values()) <= CPU_MAX_PARAMS
    return device == "cpu" or device == "auto" and small


def load(ck: Checkpoint, device: str, streams: int) -> tuple[Any, CharTokenizer, Any]:
    """What to sample `streams` samples at once from a checkpoint with: (model, tokenizer, device).

    A GRU that will be stepped on the CPU (`numpy_path`) is read as NumPy arrays, without loading torch;
    anything else is the torch model on `device`.
    """
    from charlm import checkpoint as ckpt_io

    if numpy_path(ck.model_config, device, streams):
        try:
            return GRUWeights(ck.model_config, ckpt_io.read_tensors(ck, framework="numpy")), ck.tokenizer, "cpu"
        except (KeyError, ValueError):
            pass  # the weights do not fit the config: the torch loader says how
    from charlm.device import pick_device

    dev = pick_device(device)
    model, tok = ckpt_io.load_model(ck, dev)
    return model, tok, dev

"""Generating text: temperature, top-k and nucleus (top-p) sampling, streamed as it is generated.

Where the steps run: on a CPU, a GRU model's samples are stepped in NumPy (`charlm.inference.gru_numpy`),
unless there are so many at once (INT8_MIN_BATCH) that int8 matrix products pay; on a GPU, for those many
samples, and for cells without a NumPy step, PyTorch runs them (`charlm.inference.torch_step`). This module
imports no torch itself, so `charlm sample` on a CPU never pays for loading it. The random draws come from
NumPy on every path, so a seed gives the same text wherever the steps run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from charlm.errors import param
from charlm.inference.draws import CHUNK, INT8_MIN_BATCH, Gumbel, SampleOptions, check, decode, sampling_filter
from charlm.inference.gru_numpy import GRUStep, GRUWeights
from charlm.tokenizer import CharTokenizer, OnUnknown

if TYPE_CHECKING:
    from charlm.checkpoint import Checkpoint
    from charlm.config import ModelConfig

__all__ = [  # the sampling options and draws live in charlm.inference.draws, which torch_step also reads
    "CHUNK",
    "CPU_MAX_PARAMS",
    "INT8_MIN_BATCH",
    "Gumbel",
    "SampleOptions",
    "check",
    "decode",
    "filter_logits",
    "generate_chunks",
    "generate_ids",
    "load",
    "numpy_path",
    "sample_many",
    "sampling_filter",
    "start_ids",
    "stream",
]

# On `--device auto`, models up to this size sample on the CPU even where there is a GPU: one character of
# one sample is a few small products, and a GPU spends longer launching them than a CPU takes to run them.
CPU_MAX_PARAMS = 2_500_000


def start_ids(tok: CharTokenizer, prime: str, on_unknown: OnUnknown) -> list[int]:
    """The prime as ids; with no prime the model starts as at the beginning of a line."""
    ids = tok.encode(prime, on_unknown, what=param("prime")).tolist() if prime else []
    if not ids:
        ids = [tok.id_of("\n") if "\n" in tok else 0]
    return ids


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


def _numpy_chunks(w: GRUWeights, prime: list[int], opts: SampleOptions, batch: int) -> Iterator[np.ndarray]:
    """What `generate_chunks` yields, stepped in NumPy."""
    step, noise = GRUStep(w, batch), Gumbel(opts.seed, opts.temperature)
    x = np.full(batch, prime[0], np.intp)
    for c in prime[1:]:
        step(x)
        x[:] = c
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
    model: Any, prime: list[int], opts: SampleOptions, batch: int = 1, device: Any = "cpu"
) -> Iterator[np.ndarray]:
    """(T, batch) ids for each chunk of up to CHUNK steps, `opts.length` steps in all. `model` is a torch
    model on `device`, or the `GRUWeights` of one (which run on the CPU)."""
    if _on_numpy(model, batch, device):
        w = model if isinstance(model, GRUWeights) else GRUWeights.of(model)
        yield from _numpy_chunks(w, prime, opts, batch)
    else:
        from charlm.inference.torch_step import chunks

        yield from chunks(model, prime, opts, batch, device, Gumbel(opts.seed, opts.temperature))


def generate_ids(
    model: Any, prime: list[int], opts: SampleOptions, batch: int = 1, device: Any = "cpu"
) -> Iterator[np.ndarray]:
    """Yield the next id of each of `batch` samples, (batch,), `opts.length` times."""
    for chunk in generate_chunks(model, prime, opts, batch, device):
        yield from chunk


def stream(model: Any, tok: CharTokenizer, opts: SampleOptions, device: Any = "cpu") -> Iterator[str]:
    """One sample as it is generated, a chunk of characters at a time, ended early at `opts.stop`."""
    prime = start_ids(tok, opts.prime, opts.on_unknown)
    stop, held = opts.stop or "", ""
    for chunk in generate_chunks(model, prime, opts, 1, device):
        held += tok.decode(chunk[:, 0].tolist())
        if stop and stop in held:
            yield held[: held.index(stop)]
            return
        # hold back only what could still be the start of the stop string
        cut = len(held) - (len(stop) - 1) if stop else len(held)
        if cut > 0:
            yield held[:cut]
            held = held[cut:]
    if held:
        yield held


def sample_many(model: Any, tok: CharTokenizer, opts: SampleOptions, n: int, device: Any = "cpu") -> list[str]:
    """`n` samples generated side by side (much faster than one after another)."""
    prime = start_ids(tok, opts.prime, opts.on_unknown)
    chunks = list(generate_chunks(model, prime, opts, n, device))
    if not chunks:
        return [""] * n
    texts = [tok.decode(row) for row in np.concatenate(chunks).T.tolist()]
    if opts.stop:
        texts = [t.split(opts.stop, 1)[0] for t in texts]
    return texts


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

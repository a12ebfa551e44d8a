"""Generating text: temperature, top-k and nucleus (top-p) sampling, streamed one character at a time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from charlm.errors import UsageError
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer, OnUnknown


@dataclass
class SampleOptions:
    length: int = 1000  # characters to generate per sample (not counting the prime)
    temperature: float = 1.0  # 0 picks the most likely character every time (greedy)
    top_k: int | None = None  # sample only among the k most likely characters
    top_p: float | None = None  # sample only among the most likely characters whose probabilities sum to p
    seed: int | None = None  # the same seed (and model) gives the same text
    prime: str = ""  # text the model reads first; the output continues it
    stop: str | None = None  # end a sample before the first occurrence of this string
    on_unknown: OnUnknown = "error"


def check(opts: SampleOptions, num_samples: int = 1) -> None:
    """Raise one UsageError listing every bad option."""
    problems = []
    if not (math.isfinite(opts.temperature) and opts.temperature >= 0):
        problems.append(f"--temperature must be a finite number >= 0 (got {opts.temperature})")
    if opts.top_k is not None and opts.top_k < 1:
        problems.append(f"--top-k must be at least 1 (got {opts.top_k})")
    if opts.top_p is not None and not 0 < opts.top_p <= 1:
        problems.append(f"--top-p must be in (0, 1] (got {opts.top_p})")
    if opts.length < 0:
        problems.append(f"--length must be 0 or more (got {opts.length})")
    if num_samples < 1:
        problems.append(f"--num-samples must be at least 1 (got {num_samples})")
    if problems:
        raise UsageError(problems)


def start_ids(tok: CharTokenizer, prime: str, on_unknown: OnUnknown) -> list[int]:
    """The prime as ids; with no prime the model starts as at the beginning of a line."""
    ids = tok.encode(prime, on_unknown, what="--prime").tolist() if prime else []
    if not ids:
        ids = [tok.id_of("\n") if "\n" in tok else 0]
    return ids


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Scaled logits with the excluded characters set to -inf. logits: (B, V)."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a character when the ones ranked above it already reach top_p (the top one always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate_ids(
    model: CharGRU, prime: list[int], opts: SampleOptions, batch: int = 1, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """Yield the next id of each of `batch` samples, (batch,) on the CPU, `opts.length` times."""
    model.eval()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(opts.seed if opts.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    ids = torch.tensor(prime, device=device).expand(batch, -1)
    hidden = None
    if ids.size(1) > 1:  # read the prime, all but its last character, in one pass
        _, hidden = model(ids[:, :-1], hidden)
    x = ids[:, -1:]
    for _ in range(opts.length):
        logits, hidden = model(x, hidden)
        logits = logits[:, -1].float().cpu()
        if opts.temperature == 0:
            nxt = logits.argmax(-1)
        else:
            probs = filter_logits(logits, opts.temperature, opts.top_k, opts.top_p).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        yield nxt
        x = nxt.view(batch, 1).to(device)


def stream(
    model: CharGRU, tok: CharTokenizer, opts: SampleOptions, device: torch.device | str = "cpu"
) -> Iterator[str]:
    """One sample as it is generated, a character at a time, ended early at `opts.stop`."""
    prime = start_ids(tok, opts.prime, opts.on_unknown)
    stop, held = opts.stop or "", ""
    for nxt in generate_ids(model, prime, opts, 1, device):
        held += tok.chars[int(nxt[0])]
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


def sample_many(
    model: CharGRU, tok: CharTokenizer, opts: SampleOptions, n: int, device: torch.device | str = "cpu"
) -> list[str]:
    """`n` samples generated side by side (much faster than one after another)."""
    prime = start_ids(tok, opts.prime, opts.on_unknown)
    cols = [nxt for nxt in generate_ids(model, prime, opts, n, device)]
    if not cols:
        return [""] * n
    table = torch.stack(cols, 1).tolist()
    texts = [tok.decode(row) for row in table]
    if opts.stop:
        texts = [t.split(opts.stop, 1)[0] for t in texts]
    return texts

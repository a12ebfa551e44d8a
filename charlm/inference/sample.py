"""Generating text: temperature, top-k and nucleus (top-p) sampling, streamed one character at a time."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from charlm.errors import UsageError
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer, OnUnknown

_CHUNK = 64  # steps computed between yields; the random draws for a chunk are made in one call
INT8_MIN_BATCH = 64  # on a CPU, this many samples at once or more use int8 matrix products


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


def _int8_linear(weight: torch.Tensor, bias: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x @ weight.T + bias with the weight in int8 (PyTorch's dynamic quantization, fbgemm on x86)."""
    lin = nn.Linear(weight.size(1), weight.size(0))
    lin.weight.data.copy_(weight), lin.bias.data.copy_(bias)
    with warnings.catch_warnings():  # the eager quantization API warns that it is moving to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8)[0]


def _fp32_linear(weight: torch.Tensor, bias: torch.Tensor, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x @ weight.T + bias into one buffer allocated here (the result is overwritten by the next call)."""
    wt, out = weight.T.contiguous(), weight.new_empty(batch, weight.size(0))
    return lambda x: torch.addmm(bias, x, wt, out=out)


class _Stepper:
    """The model's one-character step, written on its own weights with preallocated buffers.

    At one character per call, `nn.GRU` spends most of its time on per-call overhead (argument checks,
    allocations, the embedding and head as separate modules), not arithmetic. This does the same maths with
    a handful of in-place ops: the first layer's input projection is folded into a (vocab, 3*hidden) table,
    so reading a character is a row lookup, and results land in buffers allocated once.
    Gate order and equations are nn.GRU's (see `gru_layer_reference`). With `int8`, the matrix products
    (recurrent, inter-layer and head) use int8 weights: about 4x less arithmetic for many samples at once,
    at a small cost in precision (preactivations move by a few hundredths).
    """

    def __init__(self, model: CharGRU, hidden: torch.Tensor, batch: int, int8: bool = False) -> None:
        w = {name: p.detach() for name, p in model.gru.named_parameters()}
        self.H, self.layers = model.config.hidden, model.config.layers
        emb = model.embed.weight.detach()
        self.table = torch.addmm(w["bias_ih_l0"], emb, w["weight_ih_l0"].T).contiguous()  # (V, 3H)

        def linear(weight: torch.Tensor, bias: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
            return _int8_linear(weight, bias) if int8 else _fp32_linear(weight, bias, batch)

        self.ih = [linear(w[f"weight_ih_l{i}"], w[f"bias_ih_l{i}"]) for i in range(1, self.layers)]
        self.hh = [linear(w[f"weight_hh_l{i}"], w[f"bias_hh_l{i}"]) for i in range(self.layers)]
        self.head = linear(model.head.weight.detach(), model.head.bias.detach())
        self.h = [hidden[i].clone() for i in range(self.layers)]  # each (B, H), updated in place
        self.gi = emb.new_empty(batch, 3 * self.H)
        self.rz, self.n = emb.new_empty(batch, 2 * self.H), emb.new_empty(batch, self.H)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,) ids -> logits (B, V) for the next character; the state advances by one character."""
        H, rz, n = self.H, self.rz, self.n
        gi = torch.index_select(self.table, 0, x, out=self.gi)
        for i, h in enumerate(self.h):
            if i:
                gi = self.ih[i - 1](self.h[i - 1])
            gh = self.hh[i](h)
            torch.add(gi[:, : 2 * H], gh[:, : 2 * H], out=rz).sigmoid_()  # r, z
            torch.addcmul(gi[:, 2 * H :], rz[:, :H], gh[:, 2 * H :], out=n).tanh_()  # n
            h.sub_(n).mul_(rz[:, H:]).add_(n)  # h' = n + z * (h - n) = (1 - z) * n + z * h
        return self.head(self.h[-1])


def _noise(gen: torch.Generator, batch: int, vocab: int, opts: SampleOptions) -> torch.Tensor:
    """Gumbel noise for a chunk of steps, scaled by the temperature: argmax(logits + noise) is then an exact
    draw from softmax(logits / temperature) (the Gumbel-max trick), in two ops per step instead of a softmax,
    a cumulative sum and a search. Always a whole chunk, so a longer sample with the same seed begins with
    the same text."""
    u = torch.rand(_CHUNK, batch, vocab, generator=gen).clamp_(min=1e-12)
    return u.log_().neg_().log_().neg_().mul_(opts.temperature)


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def generate_ids(
    model: CharGRU, prime: list[int], opts: SampleOptions, batch: int = 1, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """Yield the next id of each of `batch` samples, (batch,) on the CPU, `opts.length` times."""
    model.eval()
    gen = torch.Generator(device="cpu")
    gen.manual_seed(opts.seed if opts.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    filtered = opts.top_k is not None or opts.top_p is not None
    with torch.inference_mode():
        ids = torch.tensor(prime, device=device).expand(batch, -1)
        hidden = model.init_hidden(batch, device)
        if ids.size(1) > 1:  # read the prime, all but its last character, in one pass
            _, hidden = model(ids[:, :-1], hidden)
        # int8 needs PyTorch's eager dynamic quantization and its x86/ARM kernels; without them, fp32 it is
        int8 = batch >= INT8_MIN_BATCH and hidden.device.type == "cpu" and torch.backends.quantized.engine != "none"
        step, x = _Stepper(model, hidden, batch, int8), ids[:, -1].contiguous()
    # a step on a few rows is dozens of tiny ops: waking a second thread for each costs more than it saves
    threads = 1 if batch < INT8_MIN_BATCH and hidden.device.type == "cpu" else torch.get_num_threads()
    for a in range(0, opts.length, _CHUNK):
        with torch.inference_mode(), _num_threads(threads):
            noise = _noise(gen, batch, model.config.vocab_size, opts).to(device) if opts.temperature else None
            out = torch.empty(min(_CHUNK, opts.length - a), batch, dtype=torch.long, device=device)
            for t in range(len(out)):
                logits = step(x)
                if noise is not None:
                    if filtered:  # -inf for the excluded characters; the temperature is in the noise
                        logits = filter_logits(logits, 1.0, opts.top_k, opts.top_p)
                    logits = logits.add_(noise[t]) if not filtered and not int8 else logits + noise[t]
                x = torch.argmax(logits, -1, out=out[t])
            out = out.cpu()
        # yielded outside inference mode, so the consumer's own code runs as it would anywhere else
        yield from out


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

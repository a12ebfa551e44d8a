"""Sampling on PyTorch: on a GPU, for many samples at once on a CPU (int8), and for cells without a NumPy step.

`FusedGRUStep` is a GRU model's one-character step on its own weights with preallocated buffers; `ModelStep`
steps any model's own forward one character at a time (the path for LSTM and plain RNN cells). `chunks`
runs either with the random draws `charlm.inference.sample` hands it, so a seed means the same thing here
as on the NumPy path.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from charlm.inference.draws import (
    CHUNK,
    INT8_MIN_BATCH,
    PRIME_BLOCK,
    Gumbel,
    Primed,
    SampleOptions,
    decode,
    sampling_filter,
)
from charlm.inference.threads import configured_threads, cpu_threads, intra_op_threads, run_shares, split

SHARE_ROWS = 128  # samples per share when many run at once


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Scaled logits with the excluded characters set to -inf. logits: (B, V). The same rule as
    `charlm.inference.sample.filter_logits`, on tensors, so a GPU never waits for the CPU."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ranked = torch.sort(logits, dim=-1, descending=True).values
        probs = ranked.softmax(-1)
        kept = ((probs.cumsum(-1) - probs) < top_p).sum(-1, keepdim=True)
        logits = logits.masked_fill(logits < ranked.gather(-1, kept - 1), float("-inf"))
    return logits


def _int8_linear(weight: torch.Tensor, bias: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x @ weight.T + bias with the weight in int8, a scale per output row (PyTorch's dynamic
    quantization, fbgemm on x86): rows of different matrices share one weight here, so one scale would not do."""
    lin = nn.Linear(weight.size(1), weight.size(0))
    lin.weight.data.copy_(weight), lin.bias.data.copy_(bias)
    with warnings.catch_warnings():  # the eager quantization API warns that it is moving to torchao
        warnings.simplefilter("ignore")
        spec = {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(lin), spec, dtype=torch.qint8)[0]


def _fp32_linear(weight: torch.Tensor, bias: torch.Tensor, batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x @ weight.T + bias into one buffer allocated here (the result is overwritten by the next call)."""
    wt, out = weight.T.contiguous(), weight.new_empty(batch, weight.size(0))
    return lambda x: torch.addmm(bias, x, wt, out=out)


class FusedGRUStep:
    """A GRU model's one-character step, written on its own weights with preallocated buffers.

    At one character per call, `nn.GRU` spends most of its time on per-call overhead (argument checks,
    allocations, the embedding and head as separate modules), not arithmetic. This does the same maths
    (nn.GRU's gate order and equations: see `gru_layer_reference`) arranged as in `charlm.inference.gru_numpy`:
    the first layer's input projection is a (vocab, 3*hidden) table, and one product per layer on its new
    state gives the next layer's input projection and its own recurrent projection for the next character
    (the top layer's: its recurrent projection and the logits). tanh(a) is computed as 2*sigmoid(2a) - 1,
    the 2 folded into the candidate's weights: PyTorch's CPU tanh takes six times its sigmoid's time.
    With `int8` the products use int8 weights: about 4x less arithmetic for many samples at once, at a small
    cost in precision (preactivations move by a few hundredths).
    """

    def __init__(self, model: nn.Module, hidden: torch.Tensor, batch: int, int8: bool = False) -> None:
        w = {name: p.detach() for name, p in model.gru.named_parameters()}
        H, layers = model.config.hidden, model.config.layers
        scale = torch.ones(3 * H, device=hidden.device)
        scale[2 * H :] = 2.0  # the candidate's preactivation doubled, for tanh(a) = 2 * sigmoid(2a) - 1
        emb = model.embed.weight.detach()
        self.H, self.table = H, torch.addmm(w["bias_ih_l0"], emb, w["weight_ih_l0"].T).mul_(scale)  # (V, 3H)

        def part(kind: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return w[f"weight_{kind}_l{i}"] * scale[:, None], w[f"bias_{kind}_l{i}"] * scale

        self.linears = []
        for i in range(layers):
            # [next layer's input projection | own recurrent projection], the top's [recurrent | logits]
            first, second = (part("ih", i + 1), part("hh", i)) if i + 1 < layers else (part("hh", i), None)
            second = second or (model.head.weight.detach(), model.head.bias.detach())
            weight, bias = torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
            self.linears.append(_int8_linear(weight, bias) if int8 else _fp32_linear(weight, bias, batch))
        self.h = [hidden[i].clone() for i in range(layers)]  # each (B, H), updated in place
        self.out = [lin(h) for lin, h in zip(self.linears, self.h, strict=True)]  # what the first step reads
        self.gi = emb.new_empty(batch, 3 * H)
        self.rz, self.n = emb.new_empty(batch, 2 * H), emb.new_empty(batch, H)

    def resized(self, hidden: torch.Tensor) -> FusedGRUStep:
        """This step (its table and products) for another batch, starting from `hidden` (layers, B, H): what a
        batch whose samples come and go needs. Only a step on int8 products takes any batch size."""
        new = copy.copy(self)
        new.h = [hidden[i].clone() for i in range(len(self.h))]
        new.out = [lin(h) for lin, h in zip(self.linears, new.h, strict=True)]
        batch = hidden.size(1)
        new.gi, new.rz, new.n = self.gi.new_empty(batch, 3 * self.H), self.rz.new_empty(batch, 2 * self.H), None
        new.n = self.n.new_empty(batch, self.H)
        return new

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,) ids -> logits (B, V) for the next character; the state advances by one character."""
        H, rz, n, top = self.H, self.rz, self.n, len(self.h) - 1
        gi = torch.index_select(self.table, 0, x, out=self.gi)
        for i, h in enumerate(self.h):
            gh = self.out[i][:, : 3 * H] if i == top else self.out[i][:, 3 * H :]  # from the previous character
            torch.add(gi[:, : 2 * H], gh[:, : 2 * H], out=rz).sigmoid_()  # r, z
            torch.addcmul(gi[:, 2 * H :], rz[:, :H], gh[:, 2 * H :], out=n).sigmoid_()
            n.add_(n).sub_(1.0)  # the candidate: tanh of the preactivation, which the weights doubled
            h.sub_(n).mul_(rz[:, H:]).add_(n)  # h' = n + z * (h - n) = (1 - z) * n + z * h
            self.out[i] = self.linears[i](h)
            gi = self.out[i][:, : 3 * H]
        return self.out[top][:, 3 * H :]


class ModelStep:
    """Any model's step through its own forward, one character at a time: slower than a fused step, but it
    needs nothing from the model beyond forward(ids (B, T), state) -> (logits (B, T, V), state)."""

    def __init__(self, model: nn.Module, state: torch.Tensor) -> None:
        self.model, self.state = model, state

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits, self.state = self.model(x[:, None], self.state)
        return logits[:, 0]


def _argmax(logits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.argmax(logits, -1, out=out)


def uses_int8(batch: int, device: torch.device | str) -> bool:
    """Whether `batch` samples at once run on int8 weights: on a CPU with PyTorch's int8 kernels (x86, ARM)."""
    cpu = torch.device(device).type == "cpu"
    return cpu and batch >= INT8_MIN_BATCH and torch.backends.quantized.engine != "none"


def prime_state(model: nn.Module, ids: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """The state (state layers, 1, hidden) after reading `ids`, for one sample, PRIME_BLOCK characters a call."""
    state = model.init_hidden(1, device)
    with torch.inference_mode():
        for a in range(0, len(ids), PRIME_BLOCK):
            _, state = model(torch.from_numpy(np.ascontiguousarray(ids[a : a + PRIME_BLOCK]))[None].to(device), state)
    return state


def primed_state(model: nn.Module, primed: Primed, device: torch.device | str) -> torch.Tensor:
    """The prime's shared state on `device`: a GRU's from the NumPy step, any other cell's from torch."""
    if primed.state is None and getattr(model.config, "cell", "gru") == "gru":
        primed.numpy_state(primed.weights(model))
    if primed.state is None:
        primed.state = prime_state(model, primed.prime[:-1], device).cpu().numpy()
    return torch.from_numpy(primed.state).to(device)


class _Shares:
    """One step per share of the samples, with what each carries from one chunk to the next."""

    def __init__(self, model: nn.Module, primed: Primed, batch: int, device: torch.device | str) -> None:
        # shares of a fixed size, whatever the thread count: int8 products scale each share's inputs
        # together, so the samples then depend on the seed alone
        many = batch >= INT8_MIN_BATCH and torch.device(device).type == "cpu"
        parts = split(batch, math.ceil(batch / SHARE_ROWS)) if many else [slice(0, batch)]
        sizes = [rows.stop - rows.start for rows in parts]
        self.threads = cpu_threads(device) if many else 1
        # the prime, all but its last character, read once for one sample; every sample starts from its state
        state = primed_state(model, primed, device).expand(-1, batch, -1).contiguous()
        last = int(primed.prime[-1])
        if getattr(model.config, "cell", "gru") != "gru":
            self.steps: list[Any] = [ModelStep(model, state[:, rows]) for rows in parts]
        else:
            int8 = uses_int8(batch, device)
            self.steps = [FusedGRUStep(model, state[:, rows], n, int8) for rows, n in zip(parts, sizes, strict=True)]
        self.parts, self.last = parts, [torch.full((n,), last, device=device) for n in sizes]
        self.bufs = [torch.empty(n, model.config.vocab_size, device=device) for n in sizes]

    def fill(self, out: torch.Tensor, noise: torch.Tensor | None, filt: Any) -> None:
        """One chunk of ids into `out` (T, batch), each share on its own thread."""

        def share(i: int) -> None:
            rows = self.parts[i]
            with torch.inference_mode():  # per thread
                g = None if noise is None else noise[:, rows]
                self.last[i] = decode(
                    self.steps[i], self.last[i], out[:, rows], g, filt, torch.add, _argmax, self.bufs[i]
                )

        run_shares(share, range(len(self.parts)), self.threads)


def chunks(
    model: nn.Module,
    prime: Sequence[int] | Primed,
    opts: SampleOptions,
    batch: int,
    device: torch.device | str,
    noise: Gumbel,
) -> Iterator[np.ndarray]:
    """(T, batch) ids for each chunk of up to CHUNK steps, `opts.length` steps in all, with `noise`'s draws.

    On a CPU, fewer than INT8_MIN_BATCH samples run on one thread (a step on a few rows is dozens of tiny
    operations: waking a second thread for each costs more than it saves); more are cut into shares of
    SHARE_ROWS, run side by side on torch's threads (see `charlm.inference.threads`). Shares of 128 ran
    faster than one of 256 even on one thread (measured: 1.6-1.8 against 1.5-2.3 ms per step).
    """
    model.eval()
    cpu = torch.device(device).type == "cpu"
    with torch.inference_mode():
        run = _Shares(model, prime if isinstance(prime, Primed) else Primed(prime), batch, device)
    filt = sampling_filter(opts, filter_logits)
    for a in range(0, opts.length, CHUNK):
        draws = noise(batch, model.config.vocab_size)
        g = None if draws is None else torch.from_numpy(draws).to(device)
        out = torch.empty(min(CHUNK, opts.length - a), batch, dtype=torch.long, device=device)
        with intra_op_threads(1 if cpu else configured_threads()):
            run.fill(out, g, filt)
        yield out.cpu().numpy()

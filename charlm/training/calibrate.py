"""Measuring how fast this device trains a GRU: a few real training steps, timed.

`calibrate` runs forward, backward and a fused AdamW step on random characters, in the precision the run will
use, for each candidate shape, and returns characters per second. `SpeedModel` turns two such measurements
into a model of the device (a per-step latency that grows with depth, plus a rate of arithmetic) that
predicts the speed of any shape and batch size, so the sizing rule can reason about shapes it did not time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from charlm.config import ModelConfig
from charlm.model import CharGRU, count_params, lm_loss


@dataclass(frozen=True)
class Shape:
    """A model shape and the step it trains with: what a speed is measured for."""

    layers: int
    hidden: int
    embed: int = 64
    batch_size: int = 32
    seq_len: int = 64

    def flops_per_char(self, vocab_size: int) -> float:
        """Arithmetic of one training character: 2 flops per multiply-add, backward about twice the forward."""
        macs = self.hidden * vocab_size  # the output head
        for layer in range(self.layers):
            width_in = self.embed if layer == 0 else self.hidden
            macs += 3 * self.hidden * (width_in + self.hidden)  # three gates, each reading the input and the state
        return 6.0 * macs

    def params(self, vocab_size: int) -> int:
        return count_params(ModelConfig(vocab_size, self.embed, self.hidden, self.layers))

    def with_batch(self, batch_size: int) -> Shape:
        return replace(self, batch_size=batch_size)

    @property
    def name(self) -> str:
        return f"{self.layers}x{self.hidden}"


@dataclass(frozen=True)
class SpeedModel:
    """Seconds per step = seq_len * layers * latency + characters * flops per character / flop rate.

    The first term is the recurrence: each time step of each layer waits for the one before, whatever the batch
    (kernel launches on a GPU, small matrix products on a CPU). The second is the arithmetic, which a wider
    batch spreads over more cores. A GPU has a high flop rate and a latency that dominates small batches, so
    the model tells the rule to give it wider models and larger batches.
    """

    latency: float  # seconds per time step per layer
    flop_rate: float  # flop/s reached on the arithmetic part

    def step_seconds(self, shape: Shape, vocab_size: int) -> float:
        chars = shape.batch_size * shape.seq_len
        return shape.seq_len * shape.layers * self.latency + chars * shape.flops_per_char(vocab_size) / self.flop_rate

    def chars_per_sec(self, shape: Shape, vocab_size: int) -> float:
        return shape.batch_size * shape.seq_len / self.step_seconds(shape, vocab_size)

    @classmethod
    def fit(cls, measured: dict[Shape, float], vocab_size: int) -> SpeedModel:
        """The model through (shape -> chars/s) measurements: by least squares on step seconds from two or more;
        from one, the latency keeps its ratio to the flop rate in REFERENCE (a CPU) and both are scaled to fit."""
        rows = [
            (
                s.seq_len * s.layers,
                s.batch_size * s.seq_len * s.flops_per_char(vocab_size),
                s.batch_size * s.seq_len / v,
            )
            for s, v in measured.items()
        ]
        if not rows:
            raise ValueError("SpeedModel.fit needs at least one measurement")
        if len(rows) == 1:
            (steps, flops, seconds), ref = rows[0], REFERENCE.latency * REFERENCE.flop_rate  # latency in flops
            rate = (steps * ref + flops) / seconds
            return cls(ref / rate, rate)
        a = torch.tensor([r[:2] for r in rows], dtype=torch.float64)
        b = torch.tensor([r[2] for r in rows], dtype=torch.float64)
        latency, inv_rate = torch.linalg.lstsq(a, b[:, None]).solution[:, 0].tolist()
        # noisy measurements can make one term come out negative: keep both physical
        return cls(max(latency, 0.0), 1.0 / max(inv_rate, 1e-15))


# A 2-core AMD EPYC (AVX-512) in fp32, fit to calibrate's measurements of 1x256..3x512 (quiet machine).
REFERENCE = SpeedModel(latency=2.94e-4, flop_rate=1.18e11)


def calibration_shapes(device_kind: str) -> list[Shape]:
    """What to time: a small and a large model, so the fit can tell latency from arithmetic. On a GPU, whose
    arithmetic only shows at large batches, the large model is timed at a large batch too."""
    if device_kind == "cpu":
        return [Shape(1, 256), Shape(2, 512)]
    return [Shape(1, 256), Shape(2, 512), Shape(2, 1024, batch_size=256)]


def time_shape(
    shape: Shape, vocab_size: int, device: torch.device, autocast: torch.dtype | None, steps: int = 2
) -> float:
    """Characters per second of the fastest of `steps` training steps of `shape`, after an untimed warm-up step
    (the fastest, since a busy machine or a first-use cost only ever slows a step down)."""
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(vocab_size, shape.embed, shape.hidden, shape.layers)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    x = torch.randint(vocab_size, (shape.batch_size, shape.seq_len + 1), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            logits, _ = model(x[:, :-1])
        loss = lm_loss(logits.float(), x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the trainer clips too: part of a step's cost
        opt.step()
        _sync(device)

    step()
    best = math.inf
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return shape.batch_size * shape.seq_len / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def calibrate(
    device: torch.device,
    vocab_size: int,
    shapes: list[Shape],
    autocast: torch.dtype | None = None,
    steps: int = 2,
    max_seconds: float = math.inf,
) -> dict[Shape, float]:
    """Characters per second for each shape, timed with real training steps on `device`, in the given order.

    A shape that would take the calibration past `max_seconds` (predicted from the shapes timed before it) is
    skipped, so that a busy machine cannot turn a few seconds into minutes; the first shape is always timed.
    """
    t0, out = time.perf_counter(), {}
    for s in shapes:
        if out:  # skip a shape whose steps, predicted from those timed so far, would overrun the time allowed
            cost = (steps + 1) * SpeedModel.fit(out, vocab_size).step_seconds(s, vocab_size)
            if time.perf_counter() - t0 + cost > max_seconds:
                continue
        out[s] = time_shape(s, vocab_size, device, autocast, steps)
    return out


CALIBRATION_SECONDS = 3.0  # the most a calibration may take; less for a short budget (4% of it)


def measure(
    device: torch.device, vocab_size: int, autocast: torch.dtype | None = None, budget_seconds: float | None = None
) -> tuple[SpeedModel, dict[Shape, float]]:
    """The device's speed model, from timing `calibration_shapes` for at most CALIBRATION_SECONDS (or 4% of a
    timed budget, if that is less), and the speed measured for each shape: what a run calls before choosing its
    model."""
    limit = CALIBRATION_SECONDS if budget_seconds is None else min(CALIBRATION_SECONDS, 0.04 * budget_seconds)
    speeds = calibrate(device, vocab_size, calibration_shapes(device.type), autocast, max_seconds=limit)
    return SpeedModel.fit(speeds, vocab_size), speeds

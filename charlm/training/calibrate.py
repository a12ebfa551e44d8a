"""Measuring how fast this device trains: the trainer's own step, timed on the run's text, cell and precision.

`time_shape` builds the model of a shape (its cell included), its optimizer, and the stream batcher over the
run's own training ids, carries the state from step to step as the trainer does, and takes the trainer's step
(charlm.training.step) in the run's precision; after one untimed warm-up step (first use of the kernels) it
returns the median speed of the steps it times, so one step slowed by another process does not count, and
neither does one lucky step. `SpeedModel` turns such measurements into a model of the device (a per-step
latency that grows with depth, plus a rate of arithmetic) that predicts the speed of shapes and batches it did
not time; the ones it did time are answered with their measured speed. `measure` is what a run calls: it times
two shapes, lets the sizing rule say which shape and batches it would choose between, times those too, all
within a share of the budget.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from charlm.config import ModelConfig
from charlm.data.streams import TokenStreams
from charlm.model import BLOCKS, CharLM, count_params
from charlm.training.step import backward, make_optimizer


@dataclass(frozen=True)
class Shape:
    """A model shape and the step it trains with: what a speed is measured for."""

    layers: int
    hidden: int
    embed: int = 64
    batch_size: int = 32
    seq_len: int = 64
    cell: str = "gru"

    def flops_per_char(self, vocab_size: int) -> float:
        """Arithmetic of one training character: 2 flops per multiply-add, backward about twice the forward."""
        macs = self.hidden * vocab_size  # the output head
        for layer in range(self.layers):
            width_in = self.embed if layer == 0 else self.hidden
            # the cell's blocks (GRU 3, LSTM 4, RNN 1), each reading the input and the state
            macs += BLOCKS[self.cell] * self.hidden * (width_in + self.hidden)
        return 6.0 * macs

    def params(self, vocab_size: int) -> int:
        return count_params(self.config(vocab_size))

    def config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size, self.embed, self.hidden, self.layers, cell=self.cell)

    def with_batch(self, batch_size: int) -> Shape:
        return replace(self, batch_size=batch_size)

    @property
    def name(self) -> str:
        """E.g. 2x256, or lstm 2x256 for a cell other than the GRU."""
        return f"{self.layers}x{self.hidden}" if self.cell == "gru" else f"{self.cell} {self.layers}x{self.hidden}"

    @property
    def label(self) -> str:
        """The name and the step: 2x256@32x64 is 32 streams of 64 characters."""
        return f"{self.name}@{self.batch_size}x{self.seq_len}"


@dataclass(frozen=True)
class SpeedModel:
    """Seconds per step = seq_len * layers * latency + characters * flops per character / flop rate.

    The first term is the recurrence: each time step of each layer waits for the one before, whatever the batch
    (kernel launches on a GPU, small matrix products on a CPU). The second is the arithmetic, which a wider
    batch spreads over more cores. A GPU has a high flop rate and a latency that dominates small batches, so
    the model tells the rule to give it wider models and larger batches. A shape in `timed` (shape, chars/s)
    is answered with its measured speed: the model is for the shapes and batches that were not timed.
    """

    latency: float  # seconds per time step per layer
    flop_rate: float  # flop/s reached on the arithmetic part
    timed: tuple[tuple[Shape, float], ...] = field(default=(), compare=False)

    def step_seconds(self, shape: Shape, vocab_size: int) -> float:
        chars = shape.batch_size * shape.seq_len
        for s, v in self.timed:
            if s == shape:
                return chars / v
        return shape.seq_len * shape.layers * self.latency + chars * shape.flops_per_char(vocab_size) / self.flop_rate

    def chars_per_sec(self, shape: Shape, vocab_size: int) -> float:
        return shape.batch_size * shape.seq_len / self.step_seconds(shape, vocab_size)

    @classmethod
    def fit(cls, measured: dict[Shape, float], vocab_size: int) -> SpeedModel:
        """The model through (shape -> chars/s) measurements: by least squares on step seconds from two or more;
        from one, the latency keeps its ratio to the flop rate in REFERENCE (a CPU) and both are scaled to fit.
        The measured shapes are kept in `timed`."""
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
        timed = tuple(measured.items())
        if len(rows) == 1:
            (steps, flops, seconds), ref = rows[0], REFERENCE.latency * REFERENCE.flop_rate  # latency in flops
            rate = (steps * ref + flops) / seconds
            return cls(ref / rate, rate, timed)
        a = torch.tensor([r[:2] for r in rows], dtype=torch.float64)
        b = torch.tensor([r[2] for r in rows], dtype=torch.float64)
        latency, inv_rate = torch.linalg.lstsq(a, b[:, None]).solution[:, 0].tolist()
        # noisy measurements can make one term come out negative: keep both physical
        return cls(max(latency, 0.0), 1.0 / max(inv_rate, 1e-15), timed)


# A 2-core AMD EPYC (AVX-512) in fp32, fit to calibrate's measurements of 1x256..3x512 (quiet machine).
REFERENCE = SpeedModel(latency=2.94e-4, flop_rate=1.18e11)


def calibration_shapes(device_kind: str, cell: str = "gru") -> list[Shape]:
    """What to time first: a small and a large model of the run's cell, so the fit can tell latency from
    arithmetic. On a GPU, whose arithmetic only shows at large batches, the large model is timed at a large
    batch too."""
    shapes = [Shape(1, 256, cell=cell), Shape(2, 512, cell=cell)]
    return shapes if device_kind == "cpu" else [*shapes, Shape(2, 1024, batch_size=256, cell=cell)]


def time_shape(
    shape: Shape,
    vocab_size: int,
    device: torch.device,
    autocast: torch.dtype | None,
    steps: int = 3,
    ids: np.ndarray | None = None,
    deadline: float = math.inf,
) -> float:
    """Characters per second of the trainer's step for `shape`: the median of `steps` timed steps after one
    untimed warm-up step, on `ids` (the run's training text; random ids when None), the state carried.

    Past `deadline` (a time.perf_counter() value) it takes no more steps: a warm-up step that ends past it is
    the measurement (a busy machine's first step is slow, and the run's own measure corrects it later)."""
    torch.manual_seed(0)
    model = CharLM(shape.config(vocab_size)).to(device)
    opt = make_optimizer(model, 1e-4, 0.01, device)
    params = list(model.parameters())
    need = shape.batch_size * (shape.seq_len + 1) + 1
    if ids is None or (len(ids) - 1) // shape.batch_size < shape.seq_len:  # too short to fill the streams
        ids = np.random.default_rng(0).integers(vocab_size, size=need)
    streams = TokenStreams(ids, shape.batch_size, shape.seq_len)
    hidden: torch.Tensor | None = None

    def step() -> None:
        nonlocal hidden
        batch = streams.next_batch()
        x, y = batch.x.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)
        loss, _, state = backward(model, opt, params, x, y, None if batch.reset else hidden, autocast, 1.0)
        loss.item()  # the trainer reads the loss every step: a synchronisation on a GPU
        opt.step()
        hidden = state.detach()
        _sync(device)

    t0 = time.perf_counter()
    step()
    times, now = [], time.perf_counter()
    if now > deadline:
        times.append(now - t0)
    while len(times) < max(1, steps) and (not times or now < deadline):
        t0 = time.perf_counter()
        step()
        now = time.perf_counter()
        times.append(now - t0)
    return shape.batch_size * shape.seq_len / statistics.median(times)


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
    steps: int = 3,
    max_seconds: float = math.inf,
    ids: np.ndarray | None = None,
    known: dict[Shape, float] | None = None,
) -> dict[Shape, float]:
    """Characters per second for each shape, timed with the trainer's steps on `device`, in the given order,
    added to `known` (shapes already timed are not timed again).

    A shape that would take the calibration past `max_seconds` (predicted from the shapes timed before it) is
    skipped, and no shape takes steps past it, so that a busy machine cannot turn a few seconds into minutes;
    with nothing known, the first shape is always timed (one step at least).
    """
    t0, out = time.perf_counter(), dict(known or {})
    for s in shapes:
        if s in out:
            continue
        if out:  # skip a shape whose steps, predicted from those timed so far, would overrun the time allowed
            cost = (steps + 1) * SpeedModel.fit(out, vocab_size).step_seconds(s, vocab_size)
            if time.perf_counter() - t0 + cost > max_seconds:
                continue
        out[s] = time_shape(s, vocab_size, device, autocast, steps, ids, t0 + max_seconds)
    return out


CALIBRATION_SECONDS = 6.0  # the most a calibration may take (1% of 10 minutes); less for a short budget (SHARE of it)
SHARE = 0.04  # of a timed budget: 2.4 s of a 1-minute run


def measure(
    device: torch.device,
    vocab_size: int,
    autocast: torch.dtype | None = None,
    budget_seconds: float | None = None,
    cell: str = "gru",
    ids: np.ndarray | None = None,
    consider: Callable[[SpeedModel], list[Shape]] | None = None,
) -> tuple[SpeedModel, dict[Shape, float]]:
    """The device's speed model and the speed measured for each shape timed: what a run calls before choosing
    its model. It times `calibration_shapes`, then the shapes `consider` names for the model fitted to those
    (the sizing rule's choice and the batches it weighed), all in at most CALIBRATION_SECONDS (or SHARE of a
    timed budget, if that is less)."""
    limit = CALIBRATION_SECONDS if budget_seconds is None else min(CALIBRATION_SECONDS, SHARE * budget_seconds)
    t0 = time.perf_counter()
    speeds = calibrate(device, vocab_size, calibration_shapes(device.type, cell), autocast, max_seconds=limit, ids=ids)
    if consider is not None:
        more = consider(SpeedModel.fit(speeds, vocab_size))
        left = limit - (time.perf_counter() - t0)
        speeds = calibrate(device, vocab_size, more, autocast, max_seconds=left, ids=ids, known=speeds)
    return SpeedModel.fit(speeds, vocab_size), speeds

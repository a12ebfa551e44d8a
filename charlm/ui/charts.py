"""Training curves: the train and validation series of a run, and unicode sparklines of them for the
terminal display and `charlm info` (`charlm plot` draws the same series with matplotlib).

A sparkline is a few lines of code; pulling in a plotting library for it would slow every `charlm` start.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BLOCKS = "▁▂▃▄▅▆▇█"
LN2 = math.log(2)


def resample(values: Sequence[float], width: int) -> list[float]:
    """At most `width` points: the mean of each of `width` equal runs of `values` (all of them when fewer)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if len(vals) <= width:
        return vals
    out = []
    for i in range(width):
        a, b = i * len(vals) // width, (i + 1) * len(vals) // width
        out.append(sum(vals[a:b]) / (b - a))
    return out


def sparkline(values: Sequence[float], width: int = 40, lo: float | None = None, hi: float | None = None) -> str:
    """One block character per point, the lowest value ▁ and the highest █ (or on the given lo..hi scale)."""
    pts = resample(values, width)
    if not pts:
        return ""
    lo = min(pts) if lo is None else lo
    hi = max(pts) if hi is None else hi
    span = hi - lo
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[min(top, max(0, round((p - lo) / span * top)))] if span > 0 else BLOCKS[0] for p in pts)


def curves(series: dict[str, Sequence[float]], width: int = 40) -> list[str]:
    """Aligned lines `name  sparkline  first -> last (min m)`, all on one shared scale so they compare."""
    finite = {k: resample(v, width) for k, v in series.items()}
    everything = [x for pts in finite.values() for x in pts]
    if not everything:
        return []
    lo, hi = min(everything), max(everything)
    name_w = max(len(k) for k in series)
    lines = []
    for name, pts in finite.items():
        if not pts:
            continue
        spark = sparkline(pts, width, lo, hi)
        lines.append(f"{name:<{name_w}}  {spark:<{width}}  {pts[0]:.3f} -> {pts[-1]:.3f} (min {min(pts):.3f})")
    return lines


def metric_points(metrics: list[dict[str, Any]]) -> dict[str, list[tuple[int | None, float]]]:
    """(step, train bits/char) and (step, validation bits/char) per evaluation, from the records of metrics.jsonl."""
    # .get: a record without its step still gives a value for the sparkline, which has no step axis
    train = [(m.get("step"), m["train_loss"] / LN2) for m in metrics if m.get("train_loss") is not None]
    val = [(m.get("step"), m["val_bpc"]) for m in metrics if m.get("val_bpc") is not None]
    return {"train bpc": train, "val bpc": val}


def metric_series(metrics: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Train and validation bits/char per evaluation, from the records of metrics.jsonl."""
    return {name: [v for _, v in points] for name, points in metric_points(metrics).items()}

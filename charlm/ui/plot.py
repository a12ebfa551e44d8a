"""`charlm plot`: the training curve of a run as a PNG, drawn with matplotlib (the optional `plot` extra)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, BinaryIO

from charlm import checkpoint as ckpt_io
from charlm.errors import CharlmError
from charlm.ui.charts import metric_points

LEGEND = {"train bpc": "train", "val bpc": "validation"}
INSTALL_HINT = "charlm plot needs matplotlib: pip install 'charlm[plot]' (or pip install matplotlib)"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise CharlmError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # draw to a file; never open a window
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(metrics: list[dict[str, Any]], out: Path | BinaryIO, title: str = "") -> None:
    """Train and validation bits/char against the step, from the records of a run's metrics.jsonl."""
    series = metric_points(metrics)
    if not any(series.values()):
        raise CharlmError(f"{title or 'this run'}: no metrics recorded yet (train until the first validation)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=LEGEND[name])
    ax.set_xlabel("step")
    ax.set_ylabel("bits per character")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def plot_run(checkpoint: Path | None, output: Path | None) -> Path | None:
    """Plot the run holding `checkpoint` to `output` (default RUN/curve.png; "-" is stdout); the file written."""
    run = ckpt_io.resolve(checkpoint, "best").path.parent
    target = output or run / "curve.png"
    if str(target) == "-":
        plot_metrics(ckpt_io.read_metrics(run), sys.stdout.buffer, title=run.name)
        sys.stdout.buffer.flush()
        return None
    plot_metrics(ckpt_io.read_metrics(run), target, title=run.name)
    return target

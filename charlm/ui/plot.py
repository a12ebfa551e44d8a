"""`charlm plot`: the training curve of a run as a PNG, drawn with matplotlib (the optional `plot` extra)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from charlm import checkpoint as ckpt_io
from charlm import outfile
from charlm.errors import CharlmError
from charlm.ui.charts import metric_points

LEGEND = {"train bpc": "train", "val bpc": "validation"}
INSTALL_HINT = "drawing a plot needs matplotlib: pip install 'charlm[plot]' (or pip install matplotlib)"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise CharlmError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # draw to a file; never open a window
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """Raise the one-line error saying what to install, where matplotlib is missing."""
    _pyplot()


def plot_metrics(metrics: list[dict[str, Any]], out: Path | BinaryIO, title: str = "") -> None:
    """Train and validation bits/char against the step, from the records of a run's metrics.jsonl."""
    series = metric_points(metrics)
    if not any(series.values()):
        raise CharlmError(f"{title or 'this run'}: no metrics recorded yet (train until the first validation)")
    _draw({LEGEND[name]: points for name, points in series.items()}, out, title, "step")


def compared_runs(parent: Path) -> dict[str, list[tuple[float, float]]]:
    """(training seconds, validation bits/char) per run folder directly inside `parent` (`charlm compare`'s)."""
    curves = {}
    for run in sorted(p for p in parent.iterdir() if p.is_dir() and ckpt_io.list_checkpoints(p)):
        metrics = ckpt_io.read_metrics(run)
        timed = [m for m in metrics if m.get("val_bpc") is not None and m.get("elapsed") is not None]
        curves[run.name] = [(m["elapsed"], m["val_bpc"]) for m in timed]
    return curves


def plot_compared(parent: Path, out: Path | BinaryIO) -> None:
    """One validation curve per run of a `charlm compare` folder, against training time (their speeds differ)."""
    curves = compared_runs(parent)
    if not any(curves.values()):
        raise CharlmError(f"{parent}: no validation recorded yet in its runs")
    _draw(curves, out, f"{parent.name}: validation", "training seconds")


def _draw(series: dict[str, list[tuple[Any, float]]], out: Path | BinaryIO, title: str, xlabel: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bits per character")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": outfile.PNG_SOFTWARE})  # how charlm knows its own PNG
    plt.close(fig)


def plot_run(checkpoint: Path | None, output: Path | None, force: bool = False) -> Path | None:
    """Plot the run holding `checkpoint` (or every run in a `charlm compare` folder) to `output` (default
    RUN/curve.png; "-" is stdout); the file written. An existing file is replaced only as charlm.outfile allows."""
    parent = checkpoint is not None and checkpoint.is_dir() and not ckpt_io.list_checkpoints(checkpoint)
    if parent and compared_runs(checkpoint):
        return _write(lambda out: plot_compared(checkpoint, out), output or checkpoint / "curve.png", force)
    ck = ckpt_io.resolve(checkpoint, "best")
    run = ck.path.parent
    if ck.kind != "lm":
        draw = f"charlm forecast --from {run} --plot FILE.png"
        raise CharlmError(f"{run}: a {ck.kind}'s run, without a training curve; draw its forecast with: {draw}")
    metrics = ckpt_io.read_metrics(run)
    return _write(lambda out: plot_metrics(metrics, out, title=run.name), output or run / "curve.png", force)


def _write(draw: Callable[[Path | BinaryIO], None], target: Path, force: bool) -> Path | None:
    if str(target) == "-":
        draw(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return None
    outfile.check_file(target, option="--output", kind="png", force=force)
    with outfile.replacing(target, option="--output") as f:
        draw(f)
    return target


def plot_forecast(fc: Any, out: Path | BinaryIO, title: str = "") -> None:
    """A forecast as a PNG: the history (its last stretch), the median, the 80% band, and in a backtest the
    held-out values."""
    plt = _pyplot()
    history = fc.history
    n, h = len(history), fc.horizon
    shown = min(n, max(4 * h, 3 * fc.season, 60))
    times = history.timestamps
    future = history.future_timestamps(h)
    xs = times[n - shown :] if times is not None else list(range(n - shown + 1, n + 1))
    xf = future if future is not None else list(range(n + 1, n + h + 1))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot(xs, history.values[n - shown :], color="black", linewidth=1, label="history")
    ax.fill_between(xf, fc.p10, fc.p90, color="tab:blue", alpha=0.25, label="80% interval")
    ax.plot(xf, fc.median, color="tab:blue", linewidth=1.5, label="median")
    if fc.backtest is not None:
        ax.plot(xf, fc.backtest.actual, color="tab:red", linewidth=1, marker=".", label="held out")
    ax.set_xlabel("time" if times is not None else "step")
    ax.set_ylabel(history.name)
    what = "backtest, the last" if fc.backtest is not None else "forecast of"
    ax.set_title(title or f"{history.name}: {what} {h} steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate() if times is not None else None
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": outfile.PNG_SOFTWARE})
    plt.close(fig)

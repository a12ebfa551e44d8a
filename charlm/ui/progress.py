"""The live training display on stderr, and the closing lines of `charlm train`.

On a terminal: a progress bar with the train and validation bits/char curves above it, the figures below, and
a short sample of the text at each evaluation. Elsewhere (a pipe, a log file, CI): a plain line every few
seconds. Quiet, it shows only warnings, and the line saying a run had nothing left to train.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.text import Text

from charlm.config import format_duration
from charlm.errors import Problem
from charlm.ui.charts import LN2, curves
from charlm.ui.console import err_console, say, shell_word, text, warn

PLAIN_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal
CHART_WIDTH = 48  # characters of sparkline in the live display
PREVIEW_CHARS, PREVIEW_TEMPERATURE = 120, 0.8  # the sample shown at each evaluation


def _remaining(info: dict[str, Any]) -> str:
    p = info.get("progress", 0.0)
    return format_duration(info["elapsed"] * (1 - p) / p) if p > 0 else "?"


class _ChartProgress(Progress):
    """A progress bar with the train and validation bits/char curves drawn above it and the figures below."""

    def __init__(self, *columns: Any, chart: Any, **kwargs: Any) -> None:
        self.chart = chart  # before Progress.__init__, which renders once
        super().__init__(*columns, **kwargs)

    def get_renderables(self) -> Any:
        lines = self.chart()
        if lines:
            yield Text("\n".join(lines), style="cyan")
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text(task.fields.get("stats", ""), no_wrap=True, overflow="ellipsis")


def preview(model: Any, tokenizer: Any, length: int = PREVIEW_CHARS, temperature: float = PREVIEW_TEMPERATURE) -> str:
    """A short sample from a model being trained, leaving its mode and the global random state as they were."""
    from charlm.inference.sample import SampleOptions, stream

    was_training = model.training
    try:
        opts = SampleOptions(length=length, temperature=temperature, seed=0)
        return "".join(stream(model, tokenizer, opts, next(model.parameters()).device))
    finally:
        model.train(was_training)


def _has_widgets() -> bool:
    """Whether rich can draw a live display in a notebook: it does so through ipywidgets."""
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


class TrainDisplay:
    """The `on_event` callback for training: a live bar on a terminal, a plain line every few seconds elsewhere.

    The curves are of the loss divided by `loss_unit` (nats to bits for a language model), named `curve_names`.
    """

    curve_names = ("train bpc", "val bpc")
    loss_unit = LN2

    def __init__(
        self,
        console: Console = err_console,
        quiet: bool = False,
        clock: Any = time.monotonic,
        names: Callable[[str], str] | None = None,
        notebook: bool = False,
    ) -> None:
        """`names` writes a parameter named in a message (the command line: its flag); by default its name.
        With `notebook`, the live display also runs in a Jupyter notebook (which needs ipywidgets)."""
        self.console, self.quiet, self.clock, self.names = console, quiet, clock, names
        self.live = (console.is_terminal or notebook and console.is_jupyter and _has_widgets()) and not quiet
        self.val_bpc: float | None = None
        self.best: float | None = None
        self.train_curve: list[float] = []  # smoothed train bits/char, one per step
        self.val_curve: list[float] = []  # validation bits/char, one per evaluation
        self._last_plain = -PLAIN_EVERY
        self._progress: Progress | None = None
        self._task: Any = None
        self._last_step: dict[str, Any] | None = None

    def __enter__(self) -> TrainDisplay:
        if self.live:
            self._progress = _ChartProgress(
                TextColumn("[bold]train"),
                BarColumn(bar_width=None),
                TextColumn("{task.percentage:>3.0f}%"),
                console=self.console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
                chart=self.chart,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=1.0, stats="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def log(self, message: str | Text) -> None:
        if not self.quiet:
            say(message, self._progress.console if self._progress else self.console)

    def chart(self) -> list[str]:
        width = max(8, min(CHART_WIDTH, self.console.width - 41))  # the numbers after it take 41 columns
        return curves(dict(zip(self.curve_names, (self.train_curve, self.val_curve), strict=True)), width)

    def stats_line(self, info: dict[str, Any]) -> str:
        val = f"val {self.val_bpc:.3f} bpc" if self.val_bpc is not None else "val -"
        return (
            f"step {info['step']} | loss {info['loss']:.3f} | {val} | {info['chars_per_sec']:,.0f} chars/s | "
            f"{format_duration(info['elapsed'])} elapsed, {_remaining(info)} left"
        )

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "warn":
            warn(self._text(info["message"]), self.console)
        elif self.quiet:
            return
        elif kind == "note":  # automatic configuration, calibration, the plateau rule: why, in a line
            self.log(self._text(info["message"]))
        elif kind == "start":
            self.log(
                f"training on {info['device']} ({info['precision']}): {info['params']:,} parameters, "
                f"{info['chars_per_batch']:,} characters per step"
                + (f", resuming at step {info['step']}" if info["step"] else "")
            )
        elif kind == "step":
            line, self._last_step = self.stats_line(info), info
            self.train_curve.append(info["loss"] / self.loss_unit)
            if len(self.train_curve) > 4 * 1024:  # keep the history bounded: halve its resolution
                pairs = zip(self.train_curve[::2], self.train_curve[1::2], strict=False)
                self.train_curve = [(a + b) / 2 for a, b in pairs]
            if self._progress is not None:
                self._progress.update(self._task, completed=min(1.0, info["progress"]), stats=line)
            elif self.clock() - self._last_plain >= PLAIN_EVERY:
                self._last_plain = self.clock()
                say(line, self.console)
        elif kind == "eval" and "val_bpc" in info:
            self.val_bpc = info["val_bpc"]
            self.val_curve.append(self.val_bpc)
            if self._progress is not None and self._last_step is not None:
                self._progress.update(self._task, stats=self.stats_line(self._last_step))
            is_best = self.best is None or self.val_bpc < self.best
            self.best = self.val_bpc if is_best else self.best
            line = text(f"step {info['step']}: validation {self.val_bpc:.4f} bits/char ")
            line.append(f"({info['val_loss']:.4f} nats/char)")
            self.log(line.append(" best", style="green") if is_best else line)
            self._show_preview(info)

    def _text(self, message: str) -> str:
        return message.render(self.names) if isinstance(message, Problem) and self.names else str(message)

    def _show_preview(self, info: dict[str, Any]) -> None:
        """On a terminal, a short sample at each evaluation, to watch the text improve."""
        if self._progress is None or info.get("model") is None or info.get("tokenizer") is None:
            return
        sample = preview(info["model"], info["tokenizer"])
        shown = Text("  sample: ", style="bold")
        shown.append(text(sample.replace("\n", "\n          "), style="dim"))
        self._progress.console.print(shown, soft_wrap=True)


def train_done(result: Any, quiet: bool = False) -> None:
    """The closing lines of `charlm train`: what was done, where it is, and what to run next."""
    if result.stopped_by == "already_done":
        say(f"{result.run} already trained {result.step} steps; raise --max-steps or --max-time to train further")
        return
    if quiet:
        return
    best = f"{result.best_val_bpc:.4f} bits/char" if result.best_val_bpc is not None else "-"
    speed = f"{result.chars_per_sec:,.0f} chars/s"
    say(f"done: {result.step} steps in {result.elapsed:.0f}s, {speed}; best validation {best}")
    say(f"checkpoint: {result.best}")
    if result.early_stop:
        say(result.early_stop)
    if result.interrupted:
        say(f"stopped by {result.stopped_by}; continue with: charlm train --resume --out {shell_word(result.run)}")
    say(f"sample from it with: charlm sample {shell_word(result.run)}")

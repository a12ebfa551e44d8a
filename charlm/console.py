"""Everything charlm shows a person: one rich Console on stderr, and the live training display.

stdout is kept for payload (samples, scores, JSON); nothing here ever writes to it.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from charlm.config import format_duration

err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # never break a line (paths, commands)
PLAIN_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}")


def _remaining(info: dict[str, Any]) -> str:
    p = info.get("progress", 0.0)
    return format_duration(info["elapsed"] * (1 - p) / p) if p > 0 else "?"


class TrainDisplay:
    """The `on_event` callback for training: a live bar on a terminal, a plain line every few seconds elsewhere."""

    def __init__(self, console: Console = err_console, quiet: bool = False, clock: Any = time.monotonic) -> None:
        self.console, self.quiet, self.clock = console, quiet, clock
        self.live = console.is_terminal and not quiet
        self.val_bpc: float | None = None
        self.best: float | None = None
        self._last_plain = -PLAIN_EVERY
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> TrainDisplay:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[stats]}"),
                console=self.console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=1.0, stats="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def log(self, message: str) -> None:
        if not self.quiet:
            (self._progress.console if self._progress else self.console).print(message)

    def stats_line(self, info: dict[str, Any]) -> str:
        val = f"val {self.val_bpc:.3f} bpc" if self.val_bpc is not None else "val -"
        return (
            f"step {info['step']} | loss {info['loss']:.3f} | {val} | {info['chars_per_sec']:,.0f} chars/s | "
            f"{format_duration(info['elapsed'])} elapsed, {_remaining(info)} left"
        )

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "warn":
            self.console.print(f"[yellow]warning:[/] {info['message']}")
        elif self.quiet:
            return
        elif kind == "start":
            self.log(
                f"training on {info['device']}: {info['params']:,} parameters, "
                f"{info['chars_per_batch']:,} characters per step"
                + (f", resuming at step {info['step']}" if info["step"] else "")
            )
        elif kind == "step":
            line = self.stats_line(info)
            if self._progress is not None:
                self._progress.update(self._task, completed=min(1.0, info["progress"]), stats=line)
            elif self.clock() - self._last_plain >= PLAIN_EVERY:
                self._last_plain = self.clock()
                self.console.print(line, soft_wrap=True)
        elif kind == "eval" and "val_bpc" in info:
            self.val_bpc = info["val_bpc"]
            is_best = self.best is None or self.val_bpc < self.best
            self.best = self.val_bpc if is_best else self.best
            self.log(
                f"step {info['step']}: validation {self.val_bpc:.4f} bits/char "
                f"({info['val_loss']:.4f} nats/char){' [green]best[/]' if is_best else ''}"
            )

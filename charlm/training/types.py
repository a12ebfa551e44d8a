"""The small types training passes around: the data a Trainer reads, what it returns, how it reports.

A Trainer reports through one callback, ``on_event(kind, info)``, and prints nothing itself. Kinds: "start",
"step", "eval", "save", "note" (automatic configuration, calibration, the plateau rule), "warn", "done".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charlm.errors import Problem
from charlm.tokenizer import CharTokenizer

OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass
class TrainData:
    tokenizer: CharTokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # sources, sizes: saved in every checkpoint


@dataclass
class TrainResult:
    run: Path
    step: int
    best: Path | None
    best_val_bpc: float | None
    last: Path | None
    chars_per_sec: float
    elapsed: float
    stopped_by: str  # "max_steps", "max_time", "early_stop", "already_done", or what interrupted it ("SIGINT"...)
    early_stop: str | None = None  # why validation said to stop before the budget was spent

    @property
    def interrupted(self) -> bool:
        return self.stopped_by not in ("max_steps", "max_time", "early_stop", "already_done")


def _silent(kind: str, info: dict[str, Any]) -> None:
    pass


def warn(on_event: OnEvent | None, message: str) -> None:
    """A "warn" event, for code that reports through an optional callback. The message is a Problem: it may
    name parameters (charlm.errors.param), which a display can name its own way."""
    if on_event is not None:
        on_event("warn", {"message": Problem(message)})



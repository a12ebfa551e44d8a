"""`charlm compare`: several cells trained on the same text, split, seed and budget, one after another.

Each cell trains into a normal run folder under one parent (PARENT/gru, PARENT/lstm, PARENT/rnn), so any of
them can be sampled, evaluated, plotted or resumed like a run of `charlm train`. The first cell listed is the
reference: the others take its settings (layers, embedding, dropout, batch, schedule, and whatever automatic
configuration chose for it) and, with match="params", the width whose parameter count is nearest the
reference's, so the comparison is between cells of the same size rather than of the same width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from charlm import checkpoint as ckpt_io
from charlm.checkpoint.manifest import folder_problem
from charlm.config import CELLS, ModelConfig
from charlm.errors import UsageError, param
from charlm.model import count_params
from charlm.training.request import default_out

Match = Literal["params", "width"]
MATCHES = ("params", "width")
# What the other cells copy from the reference run, so that only the cell (and its width) differs.
PINNED = ("embed", "layers", "dropout")
PINNED_TRAIN = ("seq_len", "batch_size", "lr", "weight_decay", "val_fraction", "eval_every", "seed")


@dataclass
class CellResult:
    cell: str
    hidden: int
    params: int
    run: Path
    chars_per_sec: float
    best_val_bpc: float | None
    elapsed: float
    stopped_by: str
    time_to_reference: float | None = None  # training seconds until validation first reached the reference's best

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "run": str(self.run)}


def parse_cells(text: str) -> list[str]:
    """'gru,lstm' -> ['gru', 'lstm']: known cells, each once, in the order given."""
    cells = [c.strip().lower() for c in text.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        raise UsageError(f"{param('cells')} must list some of {', '.join(CELLS)}, separated by commas (got {text!r})")
    if len(set(cells)) != len(cells):
        raise UsageError(f"{param('cells')} names a cell twice (got {text!r})")
    return cells


def matched_width(cell: str, reference: ModelConfig) -> int:
    """The hidden size at which `cell` has the parameter count nearest the reference model's.

    The count grows monotonically with the width, so a binary search finds the two widths around the target.
    """
    target = count_params(reference)

    def count(h: int) -> int:
        return count_params(replace(reference, cell=cell, hidden=h))

    lo, hi = 1, max(2, 4 * reference.hidden)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(count(h) - target))


def time_to_reach(metrics: list[dict[str, Any]], target: float | None) -> float | None:
    """Training seconds at the first validation at or below `target` bits/char, or None if never."""
    if target is None:
        return None
    for m in metrics:
        v = m.get("val_bpc")
        if v is not None and math.isfinite(v) and v <= target + 1e-12 and m.get("elapsed") is not None:
            return float(m["elapsed"])
    return None


def default_parent(corpus: list[str]) -> Path:
    """checkpoints/<corpus name>-compare, or -compare-2, -3 ... when that is taken."""
    return default_out(corpus, suffix="-compare")


def check_parent(parent: Path, cells: list[str]) -> None:
    """Refuse a parent folder that already holds a run for one of the cells, before anything trains."""
    taken = [c for c in cells if ckpt_io.list_checkpoints(parent / c)]
    if taken:
        raise UsageError(
            f"{param('out')} {parent}: already holds a run for {', '.join(taken)}; choose another {param('out')} "
            f"(or continue one with: charlm train --resume --out {parent / taken[0]})"
        )
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{param('out')} {parent}: is a file, not a folder")
    problems = [p for c in cells if (p := folder_problem(parent / c)) is not None]
    if problems:  # a cell's folder that is the user's: refused before the first cell trains
        raise UsageError(problems[0])


TrainOne = Callable[[str, dict[str, Any], Path], Any]  # (cell, settings, run folder) -> TrainResult


def compare(cells: list[str], parent: Path, settings: dict[str, Any], match: Match, train_one: TrainOne) -> list[
    CellResult
]:
    """Train each cell into parent/<cell>; stops after a run that was interrupted (the finished ones stay)."""
    if match not in MATCHES:
        raise UsageError(f"{param('match')} must be params or width (got {match!r})")
    check_parent(parent, cells)
    results: list[CellResult] = []
    reference: ModelConfig | None = None
    pinned: dict[str, Any] = {}
    for cell in cells:
        own = {**settings, **pinned, "cell": cell}
        if reference is not None:
            own["hidden"] = matched_width(cell, reference) if match == "params" else reference.hidden
        result = train_one(cell, own, parent / cell)
        ck = ckpt_io.resolve(result.run, "best")
        if reference is None:
            reference = ck.model_config
            train_cfg = ck.train_config
            pinned = {k: getattr(reference, k) for k in PINNED} | {k: getattr(train_cfg, k) for k in PINNED_TRAIN}
        results.append(_result(cell, ck.model_config, result))
        if result.interrupted:
            break
    target = results[0].best_val_bpc if results else None
    for r in results:
        r.time_to_reference = time_to_reach(ckpt_io.read_metrics(r.run), target)
    return results


def _result(cell: str, config: ModelConfig, result: Any) -> CellResult:
    return CellResult(
        cell,
        config.hidden,
        count_params(config),
        result.run,
        result.chars_per_sec,
        result.best_val_bpc,
        result.elapsed,
        result.stopped_by,
    )

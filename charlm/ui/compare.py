"""How `charlm compare` shows its result: one table row per cell, the reference cell first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rich.table import Table

from charlm.model import CELL_NAMES


class CellResult(Protocol):
    """What the table shows of each cell (charlm.training.compare.CellResult has it)."""

    cell: str
    hidden: int
    params: int
    chars_per_sec: float
    best_val_bpc: float | None
    time_to_reference: float | None
    stopped_by: str


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}s"


def compare_table(results: Sequence[CellResult]) -> Table:
    ref = results[0]
    ref_best = "-" if ref.best_val_bpc is None else f"{ref.best_val_bpc:.4f}"
    table = Table(
        title=f"{len(results)} cell(s) on the same text, split, seed and budget", title_justify="left", box=None
    )
    for col in ("cell", "width", "parameters", "chars/s", "best val bits/char", f"time to {ref_best}", "stopped by"):
        table.add_column(col, justify="left" if col in ("cell", "stopped by") else "right")
    for r in results:
        best = "-" if r.best_val_bpc is None else f"{r.best_val_bpc:.4f}"
        table.add_row(
            r.cell.upper(),
            str(r.hidden),
            f"{r.params:,}",
            f"{r.chars_per_sec:,.0f}",
            best,
            _seconds(r.time_to_reference),
            r.stopped_by,
        )
    table.caption = (
        f"time to {ref_best}: training time until validation first reached the {CELL_NAMES[ref.cell]}'s best "
        "(- never, within the budget)"
    )
    table.caption_justify = "left"
    return table

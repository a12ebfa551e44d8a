"""A run's metrics.jsonl: one JSON line per validation, appended as training goes, read by info and plot."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charlm.checkpoint import schema
from charlm.errors import CheckpointError

METRICS = "metrics.jsonl"


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    """Add one line to metrics.jsonl; a line a crash cut short is ended first, so it spoils only itself."""
    path = run / METRICS
    try:
        run.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            cut = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
            f.write((("\n" if cut else "") + json.dumps(record) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise CheckpointError(f"could not write {path}: {e.strerror or e}") from None


def _record(line: str) -> dict[str, Any] | None:
    """One line as a record: a JSON table with a whole step, whose figures (train_loss, val_bpc, val_loss,
    elapsed, lr) are finite numbers or null where present."""
    try:
        rec = schema.parse(line.encode("utf-8", "surrogateescape"))
    except (schema.Bad, UnicodeEncodeError):
        return None
    if not isinstance(rec, dict) or type(rec.get("step")) is not int:
        return None
    numbers = ("train_loss", "val_bpc", "val_loss", "elapsed", "lr")
    if any(rec.get(k) is not None and type(rec[k]) not in (int, float) for k in numbers):
        return None
    return rec


def read_metrics(run: Path, warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every whole, well-formed line of metrics.jsonl. A damaged line is skipped; `warn` hears how many were
    (a last line cut short by a crash is expected, and not reported)."""
    try:
        lines = (run / METRICS).read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return []
    out, bad = [], 0
    for i, line in enumerate(lines):
        rec = _record(line) if line.strip() else None
        if rec is not None:
            out.append(rec)
        elif line.strip() and i < len(lines) - 1:
            bad += 1
    if bad and warn is not None:
        warn(f"{run / METRICS}: {bad} damaged line(s) skipped")
    return out

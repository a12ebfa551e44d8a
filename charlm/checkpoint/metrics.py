"""A run's metrics.jsonl: one JSON line per validation, appended as training goes, read by info and plot."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """Every whole line of metrics.jsonl; a line cut short by a crash is skipped."""
    out = []
    try:
        lines = (run / METRICS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

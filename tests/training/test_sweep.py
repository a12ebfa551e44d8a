"""Smoke runs of benchmarks/sweep.py at tiny sizes: one point trains through the CLI and the table reads it.
(No quality or speed is asserted: the sweep measures those itself.)"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sweep  # noqa: E402


def test_one_point_trains_and_reads_its_curve(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    r = sweep.train_point(corpus, 1, 8, 0.0, 30, tmp_path)
    assert r["steps"] == 30 and r["eval_every"] == 25
    assert [step for step, _, _ in r["curve"]] == [25, 30]
    assert r["best_val_nats"] == min(v for _, v, _ in r["curve"]) and r["cpu_s"] > 0


def test_table_lists_points_in_grid_order() -> None:
    point = {"steps": 100, "passes": 1.0, "best_val_nats": 2.0, "best_step": 100, "final_val_nats": 2.0}
    rows = [
        {"corpus": c, "budget": b, "shape": s, "dropout": d, **point, "final_train_nats": 1.9}
        for c, b, s, d in reversed(sweep.GRID[:2])
    ]
    lines = sweep.table({"points": rows}).splitlines()
    assert len(lines) == 4 and lines[2].startswith(f"| {sweep.GRID[0][0]} | {sweep.GRID[0][1]} | {sweep.GRID[0][2]}")

"""Smoke runs of benchmarks/sweep.py at tiny sizes: one point trains through the CLI and the table reads it.
(No quality or speed is asserted: the sweep measures those itself.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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


def test_a_variant_trains_with_its_options_at_its_own_sequence_length(tmp_path: Path) -> None:
    from charlm import checkpoint as ckpt_io

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    options = "--lr-schedule wsd --min-lr-ratio 0 --ema 0.9 --weight-decay 0.1 --seq-len 16"
    r = sweep.train_point(corpus, 1, 8, 0.0, 30, tmp_path, options)
    assert r["steps"] == 30
    cfg = ckpt_io.resolve(next(tmp_path.glob("run-*"))).train_config
    assert (cfg.lr_schedule, cfg.min_lr_ratio, cfg.ema, cfg.weight_decay, cfg.seq_len) == ("wsd", 0.0, 0.9, 0.1, 16)
    assert sweep.seq_len_of(options) == 16 and sweep.speed_key("2x256", 16) == "2x256@32x16"
    assert sweep.speed_key("2x256", sweep.SEQ) == "2x256"  # as the stored speeds of earlier sweeps are named


def test_every_variant_is_a_new_point_with_options_charlm_accepts() -> None:
    from charlm.config import TrainConfig

    assert len(set(sweep.points())) == len(sweep.points())  # no variant repeats a point of GRID
    assert {p[:4] for p in sweep.points()} >= set(sweep.GRID)
    for *_, options in sweep.VARIANTS + sweep.COMBOS + sweep.REPEATS:
        words = options.split()
        fields = {w[2:].replace("-", "_"): words[i + 1] for i, w in enumerate(words) if w.startswith("--")}
        cfg = TrainConfig(**{k: type(getattr(TrainConfig(), k))(v) for k, v in fields.items()})
        assert cfg.problems() == [], options


def test_shards_split_the_points_and_merge_into_one_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "sweep.json"
    base.write_text('{"speeds": {"2x256": 1000}, "points": [{"corpus": "full", "budget": "3m", "shape": "2x256", '
                    '"dropout": 0.0, "options": "", "steps": 1, "passes": 1.0, "best_val_nats": 2.0, "best_step": 1, '
                    '"final_val_nats": 2.0, "final_train_nats": 2.0}]}')  # fmt: skip
    monkeypatch.setattr(sweep, "DEFAULT_JSON", base)
    ran: list[list] = []
    monkeypatch.setattr(sweep, "run_grid", lambda results, todo, only, path: ran.append(todo))
    monkeypatch.setattr(sweep, "measure_speeds", lambda keys: {sweep.speed_key(*k): 1000.0 for k in keys})
    monkeypatch.setattr(sweep, "machine", lambda: {})
    for k in (1, 2):
        sweep.main(["--grid", "variants", "--shard", f"{k}/2", "--json", str(tmp_path / f"s{k}.json")])
    assert ran[0] + ran[1] and sorted(ran[0] + ran[1]) == sorted(sweep.VARIANTS) and not set(ran[0]) & set(ran[1])
    assert "points" in json.loads((tmp_path / "s1.json").read_text())  # started from the stored file
    point = {**json.loads(base.read_text())["points"][0], "budget": "10m"}
    (tmp_path / "s2.json").write_text(json.dumps({"points": [point]}))
    sweep.main(["--merge", str(tmp_path / "s1.json"), str(tmp_path / "s2.json"), "--json", str(base)])
    merged = json.loads(base.read_text())["points"]
    assert [p["budget"] for p in merged] == ["3m", "10m"]  # the stored point once, the shard's new one added

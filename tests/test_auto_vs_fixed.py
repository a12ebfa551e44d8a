"""benchmarks/auto_vs_fixed.py without its timed runs (those take minutes and a quiet machine): it refuses a busy
machine, scores the same held-out part that training validates on, and its table marks a pair that misses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import auto_vs_fixed  # noqa: E402

from charlm.data.corpus import split_text  # noqa: E402


def test_a_busy_machine_is_refused_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = tmp_path / "t.txt"
    text.write_text("abc\n" * 100, encoding="utf-8")
    monkeypatch.setattr(auto_vs_fixed.os, "getloadavg", lambda: (3.5, 3.0, 2.0))
    with pytest.raises(SystemExit, match=r"the machine is busy \(load average 3.50 > 0.5\).*--allow-load"):
        auto_vs_fixed.main(["--shakespeare", str(text), "--json", str(tmp_path / "out.json")])
    with pytest.raises(SystemExit, match="--kind must be native, avx2"):
        auto_vs_fixed.main(["--kind", "arm", "--shakespeare", str(text)])
    assert not (tmp_path / "out.json").exists()


def test_the_held_out_part_is_the_one_training_validates_on(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(chr(97 + i % 26) for i in range(1237)), encoding="utf-8")
    val = auto_vs_fixed.held_out(corpus, tmp_path)
    assert val.read_text(encoding="utf-8") == split_text(corpus.read_text(encoding="utf-8"), 0.1)[1]


def test_the_table_marks_automatic_worse_than_the_tolerance() -> None:
    def run(nats: float, shape: str = "2x256") -> dict:
        return {"nats_per_char": nats, "steps": 1000, "shape": shape, "dropout": 0.0, "batch_size": 32,
                "auto": {"calibration_seconds": 1.2}}  # fmt: skip

    replanned = {"replanned": {"measured_chars_per_sec": 20000, "changed": {"dropout": [0.1, 0.0]}}}
    rows = [
        {"kind": "native", "text": "full", "budget": "3m", "auto": run(1.452), "fixed": run(1.450)},
        {"kind": "avx2", "text": "small", "budget": "1m", "auto": {**run(1.60), "auto": replanned}, "fixed": run(1.59)},
    ]
    about = {"cpu": "Some CPU", "cores": 2, "bf16_native": False, "torch": "2.13"}
    lines = auto_vs_fixed.table(rows, about).splitlines()
    assert lines[0] == "Some CPU, 2 cores, no native bf16, torch 2.13"
    assert "| +0.0020 | yes | 1.2 | - |" in lines[4]
    assert "| +0.0100 | NO | - | 20,000 chars/s: dropout 0.1 -> 0.0 |" in lines[5]


def test_seeds_of_one_budget_make_one_row_of_their_means() -> None:
    def pair(seed: int, auto: float, fixed: float, steps: int) -> dict:
        side = {"steps": steps, "shape": "2x256", "dropout": 0.0, "batch_size": 32, "auto": {}}
        return {"kind": "native", "text": "small", "budget": "1m", "seed": seed,
                "auto": {**side, "nats_per_char": auto}, "fixed": {**side, "nats_per_char": fixed}}  # fmt: skip

    rows = [pair(1, 1.56, 1.54, 700), pair(2, 1.54, 1.55, 800), pair(3, 1.55, 1.55, 750)]
    rows.append({**pair(1, 1.40, 1.50, 2000), "text": "full"})
    means = auto_vs_fixed.mean_rows(rows)
    assert [(r["text"], r["seeds"]) for r in means] == [("small", 3), ("full", 1)]
    assert means[0]["auto"]["nats_per_char"] == pytest.approx(1.55)
    assert means[0]["fixed"]["nats_per_char"] == pytest.approx((1.54 + 1.55 + 1.55) / 3)
    assert means[0]["auto"]["steps"] == 750
    about = {"cpu": "Some CPU", "cores": 2, "bf16_native": True, "torch": "2.13"}
    lines = auto_vs_fixed.table(rows, about).splitlines()
    assert len(lines) == 6 and "| 1m | 3 | 1.5500 (750;" in lines[4] and "| +0.0033 | yes |" in lines[4]

"""Smoke runs of the benchmark scripts at tiny sizes: they run end to end and write what they promise.
(No timing is asserted: speed is measured by the scripts themselves, not by tests.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import inference  # noqa: E402
import quality  # noqa: E402
import run_all  # noqa: E402


def test_run_all_quick_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    run_all.main(["--quick", "--json", str(out)])
    table = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert "charlm / bare" in table and "first character" in table
    assert res["machine"]["cores"] >= 1 and res["machine"]["torch"]
    assert res["train"]["bare_gru_chars_per_sec"] > 0 and res["train"]["charlm_steps"] == 3
    assert res["train"]["fraction_of_matmul_peak"] > 0
    sa, ev = res["sample"], res["evaluate"]
    assert sa["charlm_one_stream_chars_per_sec"] > 0 and sa["first_char_s"] > 0
    assert "cli_one_stream_chars_per_sec" in sa  # a difference of two short timings at this size: any sign
    assert sa["fraction_of_matmul_peak_256_streams"] > 0 and ev["fraction_of_matmul_peak"] > 0
    assert "of fp32 peak" in table and "charlm sample command" in table
    assert [round(e["corpus_mb"], 2) for e in res["encode"]] == [0.05, 0.2]
    assert all(e["train_peak_rss_mb"] > 0 for e in res["encode"])


def test_flops_per_char_counts_gru_and_head() -> None:
    from charlm.config import ModelConfig

    m = ModelConfig(vocab_size=10, embed=4, hidden=8, layers=2)
    fwd = 2 * 3 * 8 * (4 + 8) + 2 * 3 * 8 * (8 + 8) + 2 * 8 * 10
    assert run_all.flops_per_train_char(m) == 3 * fwd and inference.flops_per_char(m) == fwd


def test_quality_records_validation_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat. " * 400)
    out = tmp_path / "q.json"
    extra = ["--hidden", "16", "--batch-size", "4", "--seq-len", "16", "--max-steps", "3", "--eval-every", "3"]
    quality.main(["--corpus", str(corpus), "--max-time", "60s", "--json", str(out), "--", *extra])
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["steps"] == 3 and rows[0]["best_val_nats"] > 0
    assert "--hidden 16" in capsys.readouterr().out


def test_export_benchmark_prints_sizes_bits_per_char_and_speed(tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    import export as export_bench  # benchmarks/export.py

    out = tmp_path / "export.json"
    res = export_bench.main(["--quick", "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert 0 < res["bytes"]["int8"] < res["bytes"]["fp32"]
    bpc = res["bits_per_char"]
    assert abs(bpc["fp32"] - bpc["charlm_evaluate"]) < 1e-4 and abs(bpc["int8"] - bpc["fp32"]) < 0.05
    assert all(v > 0 for v in res["sample_chars_per_sec"].values())
    assert res["machine"]["cpu"] and isinstance(res["machine"]["bf16_native"], bool)
    for words in ("model.onnx size", "bits/char", "charlm sample", "load average", "bf16 native"):
        assert words in printed


def test_forecast_benchmark_prints_the_table_and_the_machine(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("statsforecast", reason="the forecast-bench extra is not installed")
    pytest.importorskip("statsmodels", reason="the forecast-bench extra is not installed")
    import forecast

    forecast.main(["--max-steps", "3"])
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "bf16 native" in out
    for series in ("co2 (monthly)", "sunspots (yearly)", "air passengers (monthly)"):
        for method in ("charlm", "seasonal naive", "AutoETS"):
            assert f"| {series} |" in out and f"| {method} |" in out
    assert "pooled 80% coverage, charlm" in out and "100 paths x 100 steps" in out

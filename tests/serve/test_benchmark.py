"""A smoke run of benchmarks/serve.py at tiny sizes: it runs end to end and prints every target's figure.
(No timing is asserted: speed is measured by the script itself, not by tests.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_benchmark_quick_prints_the_targets(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--quick", "--requests", "50", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert run.returncode == 0, run.stderr
    for target in ["(target >= 0.7x)", "p50", "(target <= 250)", "(target >= 0.8x)", "(target < 20)", "machine:"]:
        assert target in run.stdout
    res = json.loads(out.read_text())
    assert res["served_chars_per_sec"] > 0 and res["offline_chars_per_sec"] > 0
    assert res["requests_in_a_row"] == 50 and res["rss_after_mb"] > 0
    assert res["cli_one_stream_chars_per_sec"] > 0 and res["served_one_stream_chars_per_sec"] > 0

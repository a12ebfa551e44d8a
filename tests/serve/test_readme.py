"""The README's Serving examples (the openai client and curl) run against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def serving_blocks() -> dict[str, str]:
    section = README.read_text(encoding="utf-8").split("## Serving", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    return {"python": next(b for k, b in blocks if k == "python"), "curl": next(b for k, b in blocks if "curl" in b)}


def test_readme_openai_example_streams_text(server) -> None:
    pytest.importorskip("openai")
    code = serving_blocks()["python"].replace("http://127.0.0.1:8000", server.url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == 81 and out.stdout.endswith("\n")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_example_gives_charlm_samples_text(server, tiny_run: Path) -> None:
    cmd = serving_blocks()["curl"].replace("http://127.0.0.1:8000", server.url)
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = json.loads(out.stdout)["choices"][0]["text"]
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    args = ["sample", str(tiny_run), "-q", "--prime", "the ", "--length", "80", "--temperature", "0.8", "--seed", "1"]
    want = subprocess.run([sys.executable, "-m", "charlm", *args], capture_output=True, text=True, env=env).stdout
    assert text == want and len(text) == 80

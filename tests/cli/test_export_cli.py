"""`charlm export` on the command line: what it writes and says, and every bad input refused in one line with
nothing of the user's touched."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from test_bad_input import cli  # tests/cli is on the path: the suite's CLI runner

from charlm.config import ModelConfig
from charlm.model import CharLM
from charlm.tokenizer import CharTokenizer

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FILES = ["charlm.json", "model.onnx", "tokenizer.json"]


def refused(monkeypatch, capsys, *args: str, says: str, code: int = 2) -> str:
    """Run the command; check the one-line error, the exit status, and that no file changed or appeared."""
    before = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in Path(".").rglob("*")}
    status, out, err = cli(monkeypatch, capsys, *args)
    assert status == code, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert says in lines[0], lines[0]
    after = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in Path(".").rglob("*")}
    assert after == before, "something was written or changed"
    return lines[0]


@pytest.fixture
def run(save_model) -> Path:
    """A checkpoint of a hand-built GRU (2 layers of 12) in ./run."""
    torch.manual_seed(0)
    tok = CharTokenizer("abc de\nf")
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=4, hidden=12, layers=2)).eval()
    return save_model(Path("run"), model, tok)


def test_export_writes_the_three_files_and_says_so(monkeypatch, capsys, run: Path) -> None:
    status, out, err = cli(monkeypatch, capsys, "export", str(run), "--out", "exp")
    assert status == 0, err
    assert out == ""  # stdout is for payload; without --json there is none
    assert sorted(p.name for p in Path("exp").iterdir()) == FILES
    assert "wrote exp/" in err and "fp32" in err and "equal charlm's" in err
    assert not [p for p in Path(".").iterdir() if p.name.startswith(".")]  # nothing left aside


def test_int8_json_summary_with_a_text(monkeypatch, capsys, run: Path) -> None:
    Path("held.txt").write_text("abc de\nfed cba\n" * 20, encoding="utf-8")
    status, out, err = cli(monkeypatch, capsys, "export", str(run), "-o", "q", "--int8", "--text", "held.txt", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["weights"] == "int8" and summary["measured_on"] == "held.txt"
    assert summary["int8_bytes"] == summary["files"]["model.onnx"] == Path("q/model.onnx").stat().st_size
    assert abs(summary["bits_per_char"]["int8"] - summary["bits_per_char"]["fp32"]) < 0.01
    assert "int8:" in err and "bits/char" in err and "on held.txt" in err


def test_an_existing_folder_is_refused_and_its_files_are_untouched(monkeypatch, capsys, run: Path) -> None:
    Path("exp").mkdir()
    Path("exp/notes.txt").write_text("mine")
    refused(monkeypatch, capsys, "export", str(run), "--out", "exp", says="exp: is not empty")
    Path("exp/model.onnx").write_text("my own model")  # even under a name the export uses
    refused(monkeypatch, capsys, "export", str(run), "--out", "exp", says="add --force")
    assert Path("exp/model.onnx").read_text() == "my own model"


def test_force_replaces_only_charlms_three_files(monkeypatch, capsys, run: Path) -> None:
    Path("exp/sub").mkdir(parents=True)
    mine = {"exp/notes.txt": "mine", "exp/sub/data.bin": "bytes", "exp/model.onnx.bak": "backup"}
    for name, content in mine.items():
        Path(name).write_text(content)
    Path("exp/model.onnx").write_text("an old export")
    stamps = {name: Path(name).stat().st_mtime_ns for name in mine}
    status, _, err = cli(monkeypatch, capsys, "export", str(run), "--out", "exp", "--force")
    assert status == 0, err
    for name, content in mine.items():
        assert Path(name).read_text() == content and Path(name).stat().st_mtime_ns == stamps[name]
    assert sorted(p.name for p in Path("exp").iterdir()) == sorted([*FILES, "notes.txt", "sub", "model.onnx.bak"])
    assert Path("exp/model.onnx").read_bytes()[:20] != b"an old export"
    assert json.loads(Path("exp/charlm.json").read_text())["cell"] == "gru"


def test_an_empty_existing_folder_is_used(monkeypatch, capsys, run: Path) -> None:
    Path("exp").mkdir()
    status, _, err = cli(monkeypatch, capsys, "export", str(run), "--out", "exp")
    assert status == 0, err
    assert sorted(p.name for p in Path("exp").iterdir()) == FILES


def test_a_checkpoint_that_fails_verification_is_refused(monkeypatch, capsys, run: Path) -> None:
    weights = next(run.glob("step-*")) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one weight changed after the checkpoint was written
    weights.write_bytes(bytes(data))
    refused(monkeypatch, capsys, "export", str(run), "--out", "exp", says="damaged", code=1)


def test_an_unwritable_folder_is_refused(monkeypatch, capsys, run: Path) -> None:
    Path("a_file").write_text("x")
    refused(monkeypatch, capsys, "export", str(run), "--out", "a_file", says="a_file: exists and is not a folder")
    refused(monkeypatch, capsys, "export", str(run), "--out", "a_file/exp", says="cannot be created (")
    if Path("/proc/self").is_dir():  # a folder no one can write in, root included
        refused(monkeypatch, capsys, "export", str(run), "--out", "/proc/charlm-export", says="cannot write there")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write in a read-only folder")
def test_a_read_only_folder_is_refused(monkeypatch, capsys, run: Path) -> None:
    Path("ro").mkdir()
    Path("ro").chmod(0o500)
    try:
        refused(monkeypatch, capsys, "export", str(run), "--out", "ro/exp", says="cannot write there")
    finally:
        Path("ro").chmod(0o700)


def test_a_folder_inside_a_run_is_refused(monkeypatch, capsys, run: Path) -> None:
    step = next(run.glob("step-*"))
    refused(monkeypatch, capsys, "export", str(run), "--out", str(step / "onnx"), says="inside the run folder")
    refused(monkeypatch, capsys, "export", str(run), "--out", str(run / "onnx"), says="inside the run folder")


def test_text_without_int8_is_refused(monkeypatch, capsys, run: Path) -> None:
    Path("held.txt").write_text("abc\n")
    refused(monkeypatch, capsys, "export", str(run), "-o", "exp", "--text", "held.txt", says="use it with --int8")


def test_out_is_required(monkeypatch, capsys, run: Path) -> None:
    status, _, err = cli(monkeypatch, capsys, "export", str(run))
    assert status == 2 and "--out" in err and "Traceback" not in err


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_without_the_extra_it_says_what_to_install(monkeypatch, capsys, run: Path, missing: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import onnx...` now raises ImportError
    line = refused(monkeypatch, capsys, "export", str(run), "--out", "exp", says="pip install 'charlm[export]'", code=1)
    assert line == "error: charlm export needs onnx and onnxruntime: pip install 'charlm[export]'"

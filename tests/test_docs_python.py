"""The Python examples of README.md (its "Python" section) and docs/python.md run, in order, as written.

They run against a tiny trained run in checkpoints/my_text, with my_text.txt and held_out.txt beside it. Only
the budgets differ: every `charlm.train` call trains a tiny model for a few steps (its other arguments as
written), so the examples take seconds rather than the minutes they name.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest

import charlm
import charlm.api

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden": 16, "layers": 1, "embed": 8, "batch_size": 4, "seq_len": 16, "eval_every": 3, "device": "cpu"}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def readme_python_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1]
    return section.split("\n## ", 1)[0]


@pytest.fixture
def workspace(tiny_run: Path, tmp_path: Path, text_maker, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(tiny_run, tmp_path / "checkpoints" / "my_text")
    (tmp_path / "my_text.txt").write_text(text_maker(), encoding="utf-8")
    (tmp_path / "held_out.txt").write_text(text_maker(lines=30, seed=5), encoding="utf-8")
    real = charlm.api.train

    def small(*args, **kwargs):  # the examples' own arguments, on a tiny model and budget
        budget = {"max_steps": 10**6} if kwargs.get("stop") is not None else {"max_steps": 6}
        kwargs.pop("max_time", None)
        return real(*args, **{**TINY, **kwargs, **budget})

    monkeypatch.setattr(charlm, "train", small)
    return tmp_path


def run_blocks(blocks: list[str]) -> str:
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, "<example>", "exec"), namespace)  # noqa: S102 (the documentation's own code)
    return out.getvalue()


def test_readme_python_examples_run(workspace: Path) -> None:
    blocks = python_blocks(readme_python_section())
    assert len(blocks) == 3
    out = run_blocks(blocks)
    assert out.startswith("<charlm.Model GRU, 2 layers x 24 hidden, ")
    assert re.search(r"\d\.\d{3} bits/char\n", out)  # the stream before it may end mid-line
    assert "temperature must be a finite number >= 0 (got -1)\n" in out
    assert (workspace / "checkpoints" / "my_text-2").is_dir()  # the train example's run, beside the first


def test_docs_python_examples_run(workspace: Path) -> None:
    blocks = python_blocks((ROOT / "docs" / "python.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    out = run_blocks([python_blocks(readme_python_section())[0].split("print(model)")[0], *blocks])
    assert "\nstop\n" in out  # the thread was stopped when asked
    assert "['Q']\nprime has 1 character(s) the model never saw in training: 'Q'" in out
    assert re.search(r"step 3: \d\.\d{3} bits/char", out)

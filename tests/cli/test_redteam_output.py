"""The red-team cases of scripts/redteam_cli.py as tests (all but the few that take minutes), and the findings
they cover that are quicker to check in this process: stdout on /dev/full or closed, markup and escape
sequences in user strings, seeds, sampling bounds, locales, --max-time 0s, long lines."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import redteam_cli  # noqa: E402
from test_bad_input import cli  # noqa: E402  (this folder is on sys.path: the tests are no package)

from charlm.inference import evaluate  # noqa: E402

# minutes each (scripts/redteam.py runs them), or covered in this process below
SLOW = {"a-million-samples-of-one", "long-prime-shared-by-64", "per-line-on-a-2mb-line", "markup-out-folder-hint"}
# stdout on /dev/full and closed: every command in the battery; here those that load torch only on /dev/full
SLOW |= {f"stdout-{how}-{cmd}" for how in ("full", "closed") for cmd in ("info", "info-json", "evaluate-per-line")}
SLOW |= {"stdout-closed-evaluate", "stdout-closed-explain", "stdout-closed-units"}
CASES = [(name, fn) for name, _, fn in redteam_cli.CASES if name not in SLOW]


@pytest.mark.parametrize("name,fn", CASES, ids=[name for name, _ in CASES])
def test_red_team_case(name: str, fn, tiny_run: Path, tmp_path: Path) -> None:
    work, run = tmp_path / "w", tmp_path / "run"
    work.mkdir()
    shutil.copytree(tiny_run, run, symlinks=True)
    assert fn(work, run) is None


@pytest.mark.parametrize("out", ["exp[lr=0.01]", "a[/]b", "[bold]x:smile:"])
def test_the_closing_hint_names_the_run_folder_as_written(monkeypatch, capsys, tiny_corpus: Path, out: str) -> None:
    tiny = ["--hidden", "8", "--layers", "1", "--embed", "4", "--batch-size", "2", "--seq-len", "8"]
    code, _, err = cli(monkeypatch, capsys, "train", str(tiny_corpus), "--out", out, *tiny, "--max-steps", "2")
    assert code == 0, err
    assert err.splitlines()[-1] == f"sample from it with: charlm sample '{out}'"  # quoted: [ is a shell glob
    assert (Path(out) / "step-00000002").is_dir()


def test_a_long_line_is_scored_as_one_pass_would(tiny_model, monkeypatch) -> None:
    model, tok = tiny_model
    text = "".join(c for c in (Path(ROOT / "corpora" / "markov.txt").read_text()[:60_000]) if c in tok)
    ids = tok.encode(text.replace("\n", " "), "skip")
    assert len(ids) > evaluate.LONG_LINE
    nl = tok.id_of("\n")
    fast = evaluate.score_lines(model, [ids, ids[:50]], nl)
    monkeypatch.setattr(evaluate, "LONG_LINE", math.inf)  # the same line read from start to end in one row
    exact = evaluate.score_lines(model, [ids, ids[:50]], nl)
    assert fast[0].chars == exact[0].chars == len(ids)
    assert abs(fast[0].bits - exact[0].bits) / len(ids) < 1e-6  # bits per character
    assert fast[1].chars == exact[1].chars and math.isclose(fast[1].bits, exact[1].bits, rel_tol=1e-6)  # as before
    assert np.isfinite(fast[0].bits)

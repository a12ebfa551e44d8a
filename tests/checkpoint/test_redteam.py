"""Every red-team case of scripts/redteam_checkpoint.py, against a copy of the tiny run the tests share.

Each case damages or misuses a checkpoint, a run folder, a corpus or an output file as a user could, runs
charlm (in a child process where it could crash), and says what went wrong, if anything: see that module.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import redteam_checkpoint as redteam  # noqa: E402


@pytest.mark.parametrize(
    ("name", "fn"), [(name, fn) for name, _, fn in redteam.CASES], ids=lambda v: v if isinstance(v, str) else ""
)
def test_red_team_case(name: str, fn, tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    work = tmp_path / "work"
    work.mkdir()
    assert fn(work, run) is None, name


def test_the_battery_runs_every_kind_of_damage() -> None:
    """The cases cover each class of finding; the names say which."""
    names = {name for name, _, _ in redteam.CASES}
    for prefix in ("meta-", "state-", "weights-", "header-", "html-", "png-", "out-"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert len(names) == len(redteam.CASES)  # no two cases share a name

"""Every option that writes a file, against every kind of file already at its path, with and without --force.

The rule (charlm.outfile): a new file, or one charlm wrote of the same kind, is written; an existing file of
the user's, the input (or a hard link to it), a symbolic link, or a file of the user's that is some other
kind is refused in one line unless --force; a folder and a run folder's own files are refused even then.
Whatever is refused is left byte for byte as it was; and --force replaces the name only, so the file another
hard link or a symbolic link led to keeps its content.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from charlm import outfile
from charlm.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import redteam_checkpoint as redteam  # noqa: E402

pytest.importorskip("matplotlib")

# option -> (the command writing DEST, the kind of file it writes)
OPTIONS: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "explain --html": (lambda run, dest: ["explain", str(run), "t.txt", "--html", str(dest), "-q"], "html"),
    "plot -o": (lambda run, dest: ["plot", str(run), "-o", str(dest), "-q"], "png"),
}


def _user_file(work: Path, run: Path) -> Path:
    (work / "mine.dat").write_bytes(b"the user's own file\n")
    return work / "mine.dat"


def _own_file(option: str) -> Callable[[Path, Path], Path]:
    def make(work: Path, run: Path) -> Path:
        command, _ = OPTIONS[option]
        dest = work / "own.out"
        assert redteam.charlm(command(run, dest), work).code == 0
        return dest

    return make


def _folder(work: Path, run: Path) -> Path:
    (work / "dir").mkdir()
    return work / "dir"


# target -> (how to make it, refused without --force, refused even with --force)
TARGETS: dict[str, tuple[Callable[..., Path], bool, bool]] = {
    "new file": (lambda work, run: work / "new.out", False, False),
    "user file": (_user_file, True, False),
    "the input": (redteam._the_input, True, False),
    "hard link to the input": (redteam._hard_link_to_input, True, False),
    "symbolic link": (redteam._symlink_to_user_file, True, False),
    "folder": (_folder, True, True),
    "weights in a run": (lambda work, run: redteam.steps(run)[-1] / "model.safetensors", True, True),
    "metrics of a run": (lambda work, run: run / "metrics.jsonl", True, True),
    "new file in a step folder": (lambda work, run: redteam.steps(run)[-1] / "x.out", True, True),
    "new file in a run folder": (lambda work, run: run / "x.out", True, False),
}


def _snapshot(work: Path, run: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for base in (work, run) for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_output_option_against_every_existing_file(
    option: str, target: str, force: bool, tiny_run: Path, tmp_path: Path
) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    work = tmp_path / "work"
    work.mkdir()
    (work / "t.txt").write_text("the cat sees the moon.\n")
    make, refused, refused_forced = TARGETS[target]
    dest = make(work, run)
    before = _snapshot(work, run)
    link_target = os.readlink(dest) if dest.is_symlink() else None
    command, kind = OPTIONS[option]
    r = redteam.charlm(command(run, dest) + (["--force"] if force else []), work)
    if refused_forced or (refused and not force):
        assert redteam.refused(r, code=2) is None, r.err
        assert _snapshot(work, run) == before, "a refused write changed a file"
        return
    assert redteam.worked(r) is None, r.err
    assert outfile.written_by_charlm(dest, kind)  # type: ignore[arg-type]
    changed = {k for k, v in _snapshot(work, run).items() if before.get(k) != v}
    assert changed == {str(dest)}, changed  # only the name written, never what a link led to
    if link_target is not None:
        assert not dest.is_symlink() and Path(link_target).read_text() == "mine"


@pytest.mark.parametrize("option", list(OPTIONS))
def test_a_file_charlm_wrote_is_written_again(option: str, tiny_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    (tmp_path / "t.txt").write_text("the cat sees the moon.\n")
    dest = _own_file(option)(tmp_path, run)
    os.utime(dest, (0, 0))
    command, _ = OPTIONS[option]
    assert redteam.worked(redteam.charlm(command(run, dest), tmp_path)) is None
    assert dest.stat().st_mtime > 0


def test_plots_default_curve_in_the_run_folder_is_its_own(tiny_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    for _ in range(2):  # RUN/curve.png: charlm's own name in the run folder, written again
        assert redteam.worked(redteam.charlm(["plot", str(run), "-q"], tmp_path)) is None
    assert outfile.written_by_charlm(run / "curve.png", "png")


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    dest = tmp_path / "page.html"
    outfile.write_file(dest, "<!DOCTYPE html>" + outfile.HTML_MARK, option="--html")
    old = dest.read_bytes()

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(Exception, match="--html .*page.html: cannot write it \\(No space left on device\\)"):
        outfile.write_file(dest, "new", option="--html")
    assert dest.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]  # no temporary file left


def test_folders_for_exports(tmp_path: Path, tiny_run: Path) -> None:
    outfile.check_dir(tmp_path / "new", option="--out")
    (tmp_path / "empty").mkdir()
    outfile.check_dir(tmp_path / "empty", option="--out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("mine")
    with pytest.raises(UsageError, match="is not empty .*add --force"):
        outfile.check_dir(tmp_path / "full", option="--out")
    outfile.check_dir(tmp_path / "full", option="--out", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        outfile.check_dir(tmp_path / "file", option="--out", force=True)
    for inside in (tiny_run, redteam.steps(tiny_run)[-1], tiny_run / "data"):
        with pytest.raises(UsageError, match="run folder"):
            outfile.check_dir(inside, option="--out", force=True)

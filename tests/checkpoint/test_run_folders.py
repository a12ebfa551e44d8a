"""Run folders: what --out accepts, the manifest, runs made by an older charlm, and a clean-up that only ever
touches what charlm wrote."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from charlm import checkpoint as ckpt_io
from charlm import training
from charlm.checkpoint import manifest
from charlm.errors import UsageError


def _opts(**extra):
    return {"hidden": 16, "layers": 1, "embed": 8, "batch_size": 4, "seq_len": 16, "device": "cpu", **extra}


def test_what_out_may_be(tmp_path: Path, tiny_run: Path) -> None:
    assert manifest.folder_problem(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert manifest.folder_problem(tmp_path / "empty") is None
    assert manifest.folder_problem(tiny_run) is None
    (tmp_path / "mine").mkdir()
    for i in range(7):
        (tmp_path / "mine" / f"f{i}.txt").write_text("x")
    problem = manifest.folder_problem(tmp_path / "mine")
    assert problem is not None and "not a charlm run folder" in problem and "f0.txt" in problem
    assert "and 2 more" in problem
    (tmp_path / "file").write_text("x")
    assert "is a file" in (manifest.folder_problem(tmp_path / "file") or "")


def test_a_new_run_is_marked_and_a_refused_one_leaves_nothing(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "a" / "b" / "run"
    training.train(training.TrainRequest([str(tiny_corpus)], out, overrides=_opts(max_steps=2)))
    assert manifest.has_manifest(out)
    with pytest.raises(UsageError, match="already holds a run"):
        training.train(training.TrainRequest([str(tiny_corpus)], out, overrides=_opts(max_steps=2)))
    (tmp_path / "short.txt").write_text("ab")
    with pytest.raises(UsageError, match="fewer than one training window"):
        training.train(training.TrainRequest([str(tmp_path / "short.txt")], tmp_path / "x" / "y", overrides=_opts()))
    assert not (tmp_path / "x").exists()  # the folders the lock created are gone again


def test_a_run_made_by_an_older_charlm_is_resumed_and_then_marked(tmp_path: Path, tiny_run: Path) -> None:
    old = shutil.copytree(tiny_run, tmp_path / "old")
    (old / manifest.MANIFEST).unlink()
    assert manifest.is_run_folder(old) and manifest.folder_problem(old) is None
    result = training.train(training.TrainRequest([], old, resume=True, overrides={"max_steps": 102}))
    assert result.step == 102 and manifest.has_manifest(old)


def test_a_step_folder_with_a_users_file_or_behind_a_link_is_never_pruned(tmp_path: Path, tiny_run: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    first, *rest = ckpt_io.list_checkpoints(run)
    (first.path / "notes.txt").write_text("mine")  # a file of the user's inside a checkpoint folder
    elsewhere = shutil.copytree(rest[0].path, tmp_path / "elsewhere")
    shutil.rmtree(rest[0].path)
    os.symlink(elsewhere, rest[0].path)  # a checkpoint reached through a link
    gone = ckpt_io.prune(run, keep=1)
    assert (first.path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in elsewhere.iterdir()) == sorted(ckpt_io.layout.CHECKPOINT_FILES)
    assert gone == [] and first.path.is_dir() and rest[0].path.is_symlink()


def test_leftovers_are_cleared_only_when_they_are_charlms(tmp_path: Path, tiny_run: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    ours = run / ".tmp-step-00000007-12"
    ours.mkdir()
    (ours / "model.safetensors").write_bytes(b"half")
    theirs = {run / ".trash-step-notes" / "a.txt", run / ".tmp-step-00000001-5" / "mine.txt"}
    for f in theirs:
        f.parent.mkdir()
        f.write_text("keep")
    (run / "data" / ".ids-424242.npy").write_bytes(b"half an id file")
    (run / "data" / ".ids-mine.npy").write_bytes(b"not charlm's name")
    with ckpt_io.RunLock(run):
        pass
    assert not ours.exists() and not (run / "data" / ".ids-424242.npy").exists()
    assert all(f.read_text() == "keep" for f in theirs) and (run / "data" / ".ids-mine.npy").exists()


def test_the_lock_refuses_a_users_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("x")
    with pytest.raises(UsageError, match="not a charlm run folder"), ckpt_io.RunLock(tmp_path / "mine"):
        pass
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["a.txt"]


def test_damaged_lines_of_metrics_are_skipped_and_counted(tmp_path: Path, tiny_run: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    whole = ckpt_io.read_metrics(run)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(
            b'[1, 2]\n"x"\n{"step": "a"}\n{"step": 3, "elapsed": 1, "val_bpc": "low"}\n\xff\xfe\n'
            b'{"step": 4, "val_bpc": 2.0}\n{"step": 200, "elapsed": 9.5, "val_bpc": 1.5}\n'
        )
        f.write(b'{"step": 201, "val_')  # a last line cut short by a crash: expected, not reported
    said: list[str] = []
    kept = [{"step": 4, "val_bpc": 2.0}, {"step": 200, "elapsed": 9.5, "val_bpc": 1.5}]
    assert ckpt_io.read_metrics(run, said.append) == [*whole, *kept]
    assert said == [f"{run / 'metrics.jsonl'}: 5 damaged line(s) skipped"]

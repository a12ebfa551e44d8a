"""A run folder as a whole: the checkpoints it holds, the best of them, finding one from what the user gives,
and deleting old ones.

Old checkpoints are renamed out of the way before they are deleted, so a crash mid-delete never leaves a
half-deleted checkpoint under a step-* name.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Literal

from charlm.checkpoint.format import META, Checkpoint, read_meta
from charlm.checkpoint.layout import (
    STEP_GLOB,
    aside,
    asides,
    holds_only_checkpoint_files,
    is_own_step_name,
    is_real_dir,
    is_step_dir,
    set_aside_from,
)
from charlm.errors import CheckpointError, CheckpointNotFoundError

DEFAULT_ROOT = Path("checkpoints")
Which = Literal["best", "latest"]
RETRIES = 20


def _step_folders(run: Path) -> list[Path]:
    """step-* folders, plus any checkpoint a crash left renamed aside during a re-save (.old-step-*)."""
    found = {d.name: d for d in sorted(run.glob(STEP_GLOB))}
    for d in asides(run, "old"):
        found.setdefault(set_aside_from(d).name, d)
    return [found[k] for k in sorted(found)]


def list_checkpoints(run: Path) -> list[Checkpoint]:
    """The readable checkpoints of a run, oldest step first; damaged ones are left out."""
    out = []
    for d in _step_folders(run):
        try:
            out.append(Checkpoint(d, read_meta(d)))
        except CheckpointError:
            continue
    return sorted(out, key=lambda c: c.step)


def best_of(ckpts: list[Checkpoint]) -> Checkpoint | None:
    """The lowest validation bits/char (the later on a tie); the latest when none was validated."""
    scored = [c for c in ckpts if math.isfinite(c.val_bpc)]
    return min(scored, key=lambda c: (c.val_bpc, -c.step)) if scored else (ckpts[-1] if ckpts else None)


def find_runs(root: Path = DEFAULT_ROOT) -> list[Path]:
    """Run folders under `root`, most recently trained last."""
    runs = []
    for d in root.glob("*/") if root.is_dir() else []:
        times = []
        for s in d.glob(STEP_GLOB):
            try:
                times.append(s.stat().st_mtime)
            except OSError:  # pruned while listing: another process's run is saving
                continue
        if times:
            runs.append((max(times), d))
    return [d for _, d in sorted(runs)]


def _given_folder(path: Path | None, root: Path) -> Path:
    """The existing folder the user means: `path`, the step folder of a file in one, or the newest run."""
    if path is None:
        runs = find_runs(root)
        if not runs:
            raise CheckpointNotFoundError(
                f"no checkpoint given and none found under {root}/ (looked for {root}/*/step-*); "
                "train one with: charlm train CORPUS"
            )
        path = runs[-1]
    if not path.exists():
        available = find_runs(root)
        runs = ", ".join(str(r) for r in available[-5:])
        raise CheckpointNotFoundError(
            f"{path}: no such checkpoint or run folder"
            + (f" (runs under {root}/: {runs})" if runs else f" (and no runs under {root}/)"),
            path,
            available,
        )
    if path.is_file():
        if not is_step_dir(path.parent):
            raise CheckpointNotFoundError(
                f"{path}: not a charlm checkpoint (give a run folder, a step-* folder or a file inside one)"
            )
        path = path.parent
    return path


def _nothing_readable(run: Path) -> CheckpointError:
    """The error for a run folder without a readable checkpoint: what is wrong with the newest, or what is there."""
    steps = _step_folders(run)
    if steps:
        try:
            read_meta(steps[-1])
        except CheckpointError as e:
            return CheckpointError(f"{run}: holds no readable checkpoint ({e})")
    found = sorted(p.name for p in run.iterdir())[:8]
    return CheckpointNotFoundError(
        f"{run}: holds no readable checkpoint (looked for {run}/step-*/{META}); "
        f"it holds: {', '.join(found) or 'nothing'}"
    )


def resolve(path: Path | None, which: Which = "best", root: Path = DEFAULT_ROOT) -> Checkpoint:
    """A checkpoint from a run folder, a step folder, a file inside one, or (None) the newest run under `root`."""
    path = _given_folder(path, root)
    if (path / META).exists() or is_step_dir(path):
        return Checkpoint(path, read_meta(path)).pin()
    # A run training there may prune the checkpoint picked (or every one listed) before its weights are
    # opened; then the folder is listed again, and the newer checkpoint that replaced it is found.
    for _ in range(RETRIES):
        ckpts = list_checkpoints(path)
        if ckpts:
            chosen = (best_of(ckpts) if which == "best" else ckpts[-1]) or ckpts[-1]
            try:
                return chosen.pin()
            except CheckpointError:
                pass
        elif not _step_folders(path):
            break
        time.sleep(0.01)
    raise _nothing_readable(path)


def _removable(path: Path) -> bool:
    """Only a folder charlm wrote: its own name, a real folder (not a link), nothing in it but checkpoint files."""
    name_ok = is_own_step_name(path.name) or path.name.startswith(".old-")  # .old-: checked by asides()
    return name_ok and is_real_dir(path) and holds_only_checkpoint_files(path)


def _remove(path: Path) -> bool:
    """Delete a checkpoint folder: renamed away first (one atomic step), so no half-deleted one keeps its name.
    False, and nothing done, for a folder that is not purely charlm's (see _removable)."""
    if not _removable(path):
        return False
    trash = aside(path, "trash")
    try:
        path.rename(trash)
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def prune(run: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints and the best one; returns what was deleted. A step folder
    that holds anything but checkpoint files, or is a symbolic link, is left alone."""
    ckpts = list_checkpoints(run)
    keep_set = {c.path for c in ckpts[-keep:]}
    best = best_of(ckpts)
    if best is not None:
        keep_set.add(best.path)
    return [c.path for c in ckpts if c.path not in keep_set and _remove(c.path)]

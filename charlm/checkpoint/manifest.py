"""What makes a folder a charlm run folder, and the one rule for what `--out` may be.

A run folder is marked by ``RUN/.charlm-run``, a small JSON file written when charlm creates the folder (or
first trains into an empty one). A folder that an older charlm made, which has no such file, is recognised by
what it holds: at least one ``step-*`` folder with a charlm ``checkpoint.json``; it is marked the first time
a run takes its lock. Everything else that exists and is not empty belongs to the user, and charlm refuses to
train into it: its pruning and clean-up then can never meet a user's files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from charlm import __version__
from charlm.checkpoint.layout import STEP_GLOB
from charlm.errors import param

MANIFEST = ".charlm-run"
KIND = "charlm-run"
# The names charlm itself puts at the top of a run folder (besides step-* and their hidden copies).
OWN_NAMES = (MANIFEST, ".lock", "metrics.jsonl", "data", "curve.png")


def has_manifest(folder: Path) -> bool:
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("kind") == KIND


def _holds_checkpoint(folder: Path) -> bool:
    """An older charlm's run folder: a step-* folder (a real one, not a link) with a charlm checkpoint.json."""
    try:
        steps = [p for p in folder.glob(STEP_GLOB) if p.is_dir() and not p.is_symlink()]
    except OSError:
        return False
    for step in steps:
        try:
            with open(step / "checkpoint.json", "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if b'"charlm-checkpoint"' in head:
            return True
    return False


def is_run_folder(folder: Path) -> bool:
    """A folder charlm made for a run: marked by its manifest, or holding an older charlm's checkpoints."""
    return folder.is_dir() and (has_manifest(folder) or _holds_checkpoint(folder))


def run_folder_of(path: Path) -> Path | None:
    """The run folder `path` lies in (or is), if any, looking through every folder above it."""
    here = Path(os.path.abspath(path))
    for folder in (here, *here.parents):
        if is_run_folder(folder):
            return folder
    return None


def mark(folder: Path) -> None:
    """Write the manifest (once; an existing one is kept), atomically."""
    if has_manifest(folder):
        return
    tmp = folder / f"{MANIFEST}.{os.getpid()}.tmp"
    doc = {"kind": KIND, "version": 1, "charlm_version": __version__}
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)


def folder_problem(folder: Path, option: str = param("out")) -> str | None:
    """Why `folder` may not become or be used as a run folder, or None: it must be new, empty, or a run folder."""
    if folder.is_symlink() and not folder.exists():
        return f"{option} {folder}: is a broken symbolic link"
    if not folder.exists():
        return None
    if not folder.is_dir():
        return f"{option} {folder}: is a file, not a folder"
    if is_run_folder(folder):
        return None
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError as e:
        return f"{option} {folder}: cannot read it ({e.strerror or e})"
    if not entries:
        return None
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    return (
        f"{option} {folder}: is not a charlm run folder and not empty (it holds {shown}); choose a new or empty folder"
    )

"""The names of things inside a run folder: step folders, and the hidden copies a save, re-save or delete makes.

A checkpoint being written lives in ``.tmp-step-NNNNNNNN-PID`` until it is renamed into place; a step saved again
is first renamed to ``.old-step-NNNNNNNN-PID``; one being deleted to ``.trash-step-NNNNNNNN-PID``. The process id
keeps two processes from ever picking the same name. Everything that makes or reads these names is here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

STEP_GLOB = "step-*"
Aside = Literal["tmp", "old", "trash"]
_STEP = re.compile(r"step-\d{8}")
_ASIDE = re.compile(r"\.(tmp|old|trash)-step-\d{8}-\d+")


def step_dir(run: Path, step: int) -> Path:
    return run / f"step-{step:08d}"


def is_step_dir(path: Path) -> bool:
    return path.name.startswith("step-")


def is_own_step_name(name: str) -> bool:
    """Exactly the name charlm gives a step folder (step-NNNNNNNN): nothing else is ever pruned."""
    return _STEP.fullmatch(name) is not None


def is_real_dir(path: Path) -> bool:
    """A folder itself, not a symbolic link to one: charlm never deletes through a link."""
    return path.is_dir() and not path.is_symlink()


def aside(folder: Path, why: Aside) -> Path:
    """The hidden name `folder` takes while it is written (tmp), replaced (old) or deleted (trash)."""
    return folder.parent / f".{why}-{folder.name}-{os.getpid()}"


def asides(run: Path, why: Aside) -> list[Path]:
    """The hidden step copies of one kind in `run`, by any process, in name order: only folders (not links)
    named exactly as charlm names them."""
    return sorted(
        p for p in run.glob(f".{why}-{STEP_GLOB}") if _ASIDE.fullmatch(p.name) and is_real_dir(p)
    )


def set_aside_from(old: Path) -> Path:
    """The step folder an ``.old-step-*`` copy was renamed from (its name without the prefix and the process id)."""
    return old.parent / old.name.removeprefix(".old-").rsplit("-", 1)[0]


CHECKPOINT_FILES = ("checkpoint.json", "model.safetensors", "state.safetensors")


def holds_only_checkpoint_files(folder: Path) -> bool:
    """Whether `folder` holds nothing but the files charlm writes into a step folder (so deleting it loses
    nothing of the user's)."""
    try:
        return all(p.name in CHECKPOINT_FILES and p.is_file() and not p.is_symlink() for p in folder.iterdir())
    except OSError:
        return False

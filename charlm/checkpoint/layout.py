"""The names of things inside a run folder: step folders, and the hidden copies a save, re-save or delete makes.

A checkpoint being written lives in ``.tmp-step-NNNNNNNN-PID`` until it is renamed into place; a step saved again
is first renamed to ``.old-step-NNNNNNNN-PID``; one being deleted to ``.trash-step-NNNNNNNN-PID``. The process id
keeps two processes from ever picking the same name. Everything that makes or reads these names is here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

STEP_GLOB = "step-*"
Aside = Literal["tmp", "old", "trash"]


def step_dir(run: Path, step: int) -> Path:
    return run / f"step-{step:08d}"


def is_step_dir(path: Path) -> bool:
    return path.name.startswith("step-")


def aside(folder: Path, why: Aside) -> Path:
    """The hidden name `folder` takes while it is written (tmp), replaced (old) or deleted (trash)."""
    return folder.parent / f".{why}-{folder.name}-{os.getpid()}"


def asides(run: Path, why: Aside) -> list[Path]:
    """The hidden step copies of one kind in `run`, by any process, in name order."""
    return sorted(run.glob(f".{why}-{STEP_GLOB}"))


def set_aside_from(old: Path) -> Path:
    """The step folder an ``.old-step-*`` copy was renamed from (its name without the prefix and the process id)."""
    return old.parent / old.name.removeprefix(".old-").rsplit("-", 1)[0]

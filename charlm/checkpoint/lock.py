"""The run lock: one training at a time writes into a run folder, and whoever takes the lock clears what a
killed process left half done there.

The lock is a flock on ``RUN/.lock``; the kernel drops it when its process dies, so a killed run never
leaves a stale lock behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from charlm.checkpoint.layout import asides, set_aside_from
from charlm.errors import RunLockedError, UsageError, param

LOCK = ".lock"


def is_locked(run: Path) -> bool:
    """Whether a live process holds the run's lock (checked without taking it)."""
    import fcntl  # POSIX only: imported here so that reading checkpoints works without it

    try:
        fd = os.open(run / LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _clear_leftovers(run: Path) -> None:
    """Clear what a killed save or delete left behind; only the lock holder may, as no save can be running."""
    for stale in asides(run, "tmp") + asides(run, "trash"):  # killed mid-save or mid-delete
        shutil.rmtree(stale, ignore_errors=True)
    for old in asides(run, "old"):  # killed between the two renames of a re-save
        final = set_aside_from(old)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, final)


class RunLock:
    """An exclusive lock on a run folder, so that two trainings never write into the same one."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        try:
            self.run.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.run / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"{param('out')} {self.run}: cannot create the run folder ({e.strerror or e})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RunLockedError(
                f"{self.run}: another charlm train is writing to this run folder; "
                f"wait for it or use another {param('out')}"
            ) from None
        _clear_leftovers(self.run)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

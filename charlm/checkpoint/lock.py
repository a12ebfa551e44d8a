"""The run lock: one training at a time writes into a run folder, and whoever takes the lock clears what a
killed process left half done there.

The lock is a flock on ``RUN/.lock``; the kernel drops it when its process dies, so a killed run never
leaves a stale lock behind. Taking it is the first write into a run folder: the folder is checked first (new,
empty, or a charlm run folder: charlm.checkpoint.manifest), then created and marked, and only then does any
other process's work there (encoding the corpus, checkpoints) begin.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from charlm.checkpoint import manifest
from charlm.checkpoint.layout import asides, holds_only_checkpoint_files, is_real_dir, set_aside_from
from charlm.errors import RunLockedError, UsageError, param

LOCK = ".lock"
_STALE_IDS = re.compile(r"\.ids-\d+\.npy")  # an id file a killed encoding was writing (charlm.data.encode)


def is_locked(run: Path) -> bool:
    """Whether a live process holds the run's lock (checked without taking it)."""
    import fcntl  # POSIX only: imported here so that reading checkpoints works without it

    try:
        fd = os.open(run / LOCK, os.O_RDWR | os.O_NOFOLLOW)
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
    """Clear what a killed save, delete or encoding left behind; only the lock holder may, as nothing else can
    be writing. Only folders and files named exactly as charlm names them, holding only what charlm puts in
    them, and never through a symbolic link."""
    for stale in asides(run, "tmp") + asides(run, "trash"):  # killed mid-save or mid-delete
        if holds_only_checkpoint_files(stale):
            shutil.rmtree(stale, ignore_errors=True)
    for old in asides(run, "old"):  # killed between the two renames of a re-save
        final = set_aside_from(old)
        if final.exists() or final.is_symlink():
            if holds_only_checkpoint_files(old):
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, final)
    data = run / "data"
    if is_real_dir(data):
        for f in data.iterdir():
            if _STALE_IDS.fullmatch(f.name) and f.is_file() and not f.is_symlink():
                f.unlink(missing_ok=True)


class RunLock:
    """An exclusive lock on a run folder, so that two trainings never write into the same one.

    `created` says whether taking it created the folder; `discard()` removes what taking it wrote there, when
    the run then stops before writing anything else (a request refused after all)."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self._fd: int | None = None
        self.created = False
        self._marked = False  # whether taking it wrote the manifest
        self._made: list[Path] = []

    def __enter__(self) -> RunLock:
        import fcntl

        if (problem := manifest.folder_problem(self.run)) is not None:
            raise UsageError(problem)
        try:
            missing = [p for p in (self.run, *self.run.parents) if not p.exists()]
            self.created = bool(missing)
            self.run.mkdir(parents=True, exist_ok=True)
            self._made = missing  # the run folder and any folders above it that taking the lock created
            self._fd = os.open(self.run / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise UsageError(f"{param('out')} {self.run}: cannot create the run folder ({e.strerror or e})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise RunLockedError(
                f"{self.run}: another charlm train is writing to this run folder; "
                f"wait for it or use another {param('out')}"
            ) from None
        try:
            self._marked = not manifest.has_manifest(self.run)
            manifest.mark(self.run)
        except OSError as e:
            self.__exit__()
            raise UsageError(f"{param('out')} {self.run}: cannot write into it ({e.strerror or e})") from None
        _clear_leftovers(self.run)
        return self

    def discard(self) -> None:
        """Remove the lock file and the manifest when the folder holds nothing else, and the folder itself if
        taking the lock created it."""
        ours = {LOCK, manifest.MANIFEST} if self._marked else {LOCK}
        try:
            if is_real_dir(self.run / "data") and not any((self.run / "data").iterdir()):
                (self.run / "data").rmdir()  # made for an encoding that failed
            if any(p.name not in ours for p in self.run.iterdir()):
                return
            for name in ours:
                (self.run / name).unlink(missing_ok=True)
            if self.created and self._marked:
                for folder in self._made:  # innermost first; each only if empty
                    folder.rmdir()
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

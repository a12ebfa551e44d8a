"""Exceptions whose messages are written for the person at the terminal.

The library raises these; only ``cli.py`` turns them into an exit status and one line on stderr.
"""

from __future__ import annotations


class CharlmError(Exception):
    """A failure the user can understand and act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(CharlmError):
    """Bad arguments or input given by the user (exit status 2, like Click's own usage errors)."""

    exit_code = 2

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class CorpusError(UsageError):
    """The training or evaluation text cannot be used."""


class CheckpointError(CharlmError):
    """A checkpoint is missing, damaged, or does not fit what was asked of it."""


class CheckpointNotFoundError(UsageError, CheckpointError):
    """No checkpoint where the user pointed (or none at all): a usage error, exit status 2."""


class RunLockedError(CharlmError):
    """Another charlm process is training into the same run folder."""


class MissingExtraError(CharlmError):
    """An optional feature's packages are not installed; the message says what to install."""

"""The exceptions charlm raises for what a user can cause, each with a one-line message, and how they name parameters.

Messages name a setting by its parameter name in the Python API (``temperature must be a finite number >= 0``),
written with `param` so that the command line can name the same setting by its flag instead (``--temperature
must be ...``): `CharlmError.render` writes each marked name as a caller says. ``str(error)`` is the message
with the plain parameter names. Only the command line turns these into an exit status and a line on stderr.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

_MARK = "\x1f"  # around a parameter's name in a message: a control character no message otherwise holds
_MARKED = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*){_MARK}")


def param(name: str) -> str:
    """`name`, a parameter of the Python API, marked in a message so the command line can write its flag there."""
    return f"{_MARK}{name}{_MARK}"


class Problem(str):
    """One problem, as text naming parameters by their Python names; `render` names them another way."""

    marked: str

    def __new__(cls, text: str) -> Problem:
        marked = text.marked if isinstance(text, Problem) else str.__str__(text)
        self = super().__new__(cls, _MARKED.sub(r"\1", marked))
        self.marked = marked
        return self

    @property
    def params(self) -> list[str]:
        """The parameters this problem names, in order."""
        return _MARKED.findall(self.marked)

    def render(self, name_of: Callable[[str], str]) -> str:
        """The text with each parameter written as `name_of(parameter)` (the command line: its flag)."""
        return _MARKED.sub(lambda m: name_of(m.group(1)), self.marked)


def problems(texts: Iterable[str]) -> list[Problem]:
    """Texts (with `param` marks) as Problems."""
    return [Problem(t) for t in texts]


class CharlmError(Exception):
    """A failure the user can understand and act on. ``exit_code`` is what the command line exits with."""

    exit_code = 1

    def __init__(self, message: str = "") -> None:
        self.problem = Problem(message)
        super().__init__(str(self.problem))

    @property
    def params(self) -> list[str]:
        """The parameters the message names."""
        return self.problem.params

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with each parameter written as `name_of(parameter)`."""
        return self.problem.render(name_of)


class UsageError(CharlmError):
    """Bad arguments or input given by the user (exit status 2, like Click's own usage errors).

    ``problems`` lists every problem found, each a `Problem` (a str).
    """

    exit_code = 2

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [Problem(problems)] if isinstance(problems, str) else [Problem(p) for p in problems]
        super().__init__("; ".join(p.marked for p in self.problems))


class CorpusError(UsageError):
    """The training or evaluation text cannot be used."""


class UnknownCharactersError(UsageError):
    """A text holds characters the model never saw in training: ``chars`` lists them, in order of appearance."""

    def __init__(self, message: str, chars: Sequence[str], where: str) -> None:
        self.chars, self.where = list(chars), where
        super().__init__(message)


class CheckpointError(CharlmError):
    """A checkpoint is missing, damaged, or does not fit what was asked of it."""


class CheckpointNotFoundError(UsageError, CheckpointError):
    """No checkpoint where the user pointed (or none at all): a usage error, exit status 2.

    ``path`` is what was asked for (None: the newest run), ``available`` the run folders that do exist.
    """

    def __init__(self, message: str, path: Path | None = None, available: Sequence[Path] = ()) -> None:
        self.path, self.available = path, list(available)
        super().__init__(message)


class RunLockedError(CharlmError):
    """Another charlm process is training into the same run folder."""


class OutputError(CharlmError):
    """Standard output cannot be written: it is closed, or the disk or device behind it is full or failing."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C, or a notebook's interrupt) and stopped cleanly: ``run`` is the Run
    as it was left, its last checkpoint whole, to be continued with ``charlm.train(..., resume=True)``."""

    run: Any  # a charlm.Run (charlm.api, which this module is below)

    def __init__(self, run: Any, message: str) -> None:
        self.run = run
        super().__init__(message)


class MissingExtraError(CharlmError):
    """An optional feature's packages are not installed; the message says what to install."""


class SeriesError(UsageError):
    """A series to forecast cannot be used: unreadable, not numbers, too short, constant, or out of order."""

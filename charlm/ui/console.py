"""The stderr console every message to a person goes through, and warnings.

stdout is kept for payload (samples, scores, JSON); nothing here ever writes to it. Colour and styling codes
are written only when stderr is a terminal and NO_COLOR is unset (rich decides the first; we add the second,
as rich's own NO_COLOR mode still writes bold and dim).
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.text import Text


def no_color() -> bool:
    """True when the user asked for no colour (https://no-color.org: NO_COLOR set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


err_console = Console(
    stderr=True, highlight=False, soft_wrap=True, color_system=None if no_color() else "auto"
)  # soft_wrap: never break a line (paths, commands)


def warn(message: str, console: Console = err_console) -> None:
    console.print(f"[yellow]warning:[/] {message}")


def error(message: str) -> None:
    """The one line on stderr that says what went wrong (a Text, so brackets in paths stay as written)."""
    err_console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)

"""The stderr console every message to a person goes through, warnings, and how user text is shown safely.

stdout is kept for payload (samples, scores, JSON); nothing here ever writes to it. Colour and styling codes
are written only when stderr is a terminal and NO_COLOR is unset (rich decides the first; we add the second,
as rich's own NO_COLOR mode still writes bold and dim).

Paths, regexes, primes and texts come from the user, so whatever is printed through a `SafeConsole` is shown
as written: rich's markup (`[bold]`, `[/]`) and emoji codes (`:smile:`) are off, and control characters
(an escape sequence that would clear the screen or retitle the window, a bidi override) are shown escaped,
as `\\x1b`, by `escape_controls`, the one function that does so.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

# C0 and C1 control characters, DEL, line and paragraph separators, the bidi controls and lone surrogates:
# what can move the cursor, recolour or retitle a terminal, reorder a line, or not be written at all.
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_PATTERNS: dict[str, re.Pattern[str]] = {}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")  # bytes that arrived as surrogate escapes


def _as_utf8(m: re.Match[str]) -> str:
    return m.group().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def escape_controls(text: str, keep: str = "\n\t") -> str:
    """`text` with every control character but those in `keep` written out as an escape (ESC as `\\x1b`).

    A file name whose bytes arrived as surrogate escapes (a locale Python does not read as UTF-8) is shown as
    the UTF-8 it is, where it is.
    """
    # each run of surrogate escapes on its own, so that a lone surrogate elsewhere in the text (which no codec
    # writes) does not change how the run is shown, and a text shows the same escaped whole or in pieces
    text = _ESCAPED_BYTES.sub(_as_utf8, text)
    pattern = _PATTERNS.get(keep)
    if pattern is None:
        allowed = "".join(re.escape(c) for c in keep)
        pattern = re.compile(f"(?![{allowed}])[{_UNSAFE}]" if keep else f"[{_UNSAFE}]")
        _PATTERNS[keep] = pattern
    return pattern.sub(_escape, text)


def no_color() -> bool:
    """True when the user asked for no colour (https://no-color.org: NO_COLOR set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


class SafeConsole(Console):
    """A rich Console that shows every string literally: no markup, no emoji codes, control characters escaped.

    Strings (printed, or in a table's cells, title and caption) are read as plain text; whatever reaches the
    output, Text objects included, has its control characters escaped, apart from newlines and tabs. Styles
    are given as rich objects (Text, Style), never as markup in a string.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("highlight", False)
        kwargs.setdefault("soft_wrap", True)  # never break a line (paths, commands)
        if no_color():
            kwargs["color_system"] = None
        super().__init__(markup=False, emoji=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs.update(markup=False, emoji=False)
        return super().render_str(escape_controls(text), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for seg in super().render(renderable, options):
            # control segments are rich's own cursor movements (a live display); text never is one
            yield seg if seg.control or not seg.text else Segment(escape_controls(seg.text), seg.style)


err_console = SafeConsole(stderr=True)


def text(message: str, style: str = "", keep: str = "\n\t") -> Text:
    """User text as a rich Text: shown as written, its control characters but `keep` escaped."""
    return Text(escape_controls(message, keep), style=style)


def shell_word(value: object) -> str:
    """A path or value as one word of a shell command the user can paste (quoted where the shell would split
    or expand it: `exp[lr=0.01]` is a glob)."""
    return shlex.quote(str(value))


def say(message: str | Text, console: Console = err_console) -> None:
    """A line for a person on stderr, printed as written."""
    console.print(message if isinstance(message, Text) else text(message), soft_wrap=True)


def warn(message: str, console: Console = err_console) -> None:
    console.print(Text.assemble(("warning:", "yellow"), " ", text(message, keep="")), soft_wrap=True)


def error(message: str) -> None:
    """The one line on stderr that says what went wrong (a newline in a path is shown as \\n)."""
    err_console.print(Text.assemble(("error:", "red"), " ", text(message, keep="")), soft_wrap=True)

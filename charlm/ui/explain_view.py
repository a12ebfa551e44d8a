"""How `charlm explain` and `charlm units` look on a terminal: coloured text, summaries and tables as rich objects.

They are printed on stdout (they are the payload); rich drops the colour when stdout is not a terminal or
NO_COLOR is set, leaving the plain text.
"""

from __future__ import annotations

import sys

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.table import Table
from rich.text import Text

from charlm.interpret.explain import Explanation, surprising_spans
from charlm.interpret.units import UnitScore
from charlm.tokenizer import describe_char
from charlm.ui.console import SafeConsole, escape_controls
from charlm.ui.console import text as user_text

MAX_BITS = 8.0  # surprisal shown at full colour, here and in the HTML page


def out_console() -> SafeConsole:
    """The console on stdout: the text shown as written (control characters escaped), coloured on a terminal."""
    return SafeConsole(file=sys.stdout)


def _bg(r: float, g: float, b: float) -> Style:
    return Style(bgcolor=Color.from_rgb(r, g, b), color="black")


def _shade(strength: float, rgb: tuple[int, int, int]) -> Style | None:
    """White blended towards rgb by strength in [0, 1]; None below a visible amount."""
    a = float(np.clip(strength, 0.0, 1.0))
    if a < 0.05:
        return None
    return _bg(*(255 + (c - 255) * a for c in rgb))


def coloured(chars: list[str], strengths: np.ndarray, negative: np.ndarray | None = None) -> Text:
    """The text with each character's background set by its strength (red), or blue where `negative`."""
    text = Text()
    for i, ch in enumerate(chars):
        neg = negative is not None and bool(negative[i])
        style = (
            None
            if ch == "\n" or np.isnan(strengths[i])
            else _shade(strengths[i], (70, 110, 235) if neg else (235, 60, 45))
        )
        text.append(escape_controls(ch), style=style)
    return text


def by_surprisal(ex: Explanation) -> Text:
    return coloured(ex.chars, ex.bits / MAX_BITS)


def by_unit(ex: Explanation, layer: int, unit: int) -> Text:
    """Red where the unit's state h is positive, blue where negative; the deeper, the further from 0."""
    h = ex.layers[layer].h[:, unit]
    return coloured(ex.chars, np.abs(h), h < 0)


def _show(s: str) -> str:
    return escape_controls(s, keep="")


def summary(ex: Explanation, spans: int = 5) -> Text:
    out = Text(f"{ex.bits_per_char:.4f} bits/char over {ex.scored} predicted characters ({ex.total_bits:.1f} bits)\n")
    out.append("most surprising spans:\n")
    for start, end, bits in surprising_spans(ex.bits, count=spans):
        out.append(f"  {start:>6}-{end - 1:<6} {bits:6.1f} bits  ")
        out.append(_show("".join(ex.chars[start:end])) + "\n", style="bold")
    return out


def at(ex: Explanation, n: int) -> Table:
    """The model's top guesses for the character at position n, with what was actually there."""
    context = _show("".join(ex.chars[max(0, n - 30) : n]))
    table = Table(title=f"position {n}: after …{context}", title_justify="left", box=None)
    for col in ("guess", "probability", "bits"):
        table.add_column(col, justify="left" if col == "guess" else "right")
    for c, p in zip(ex.top_chars[n], ex.top_probs[n], strict=False):
        mark = "  <- actual" if c == ex.chars[n] else ""
        table.add_row(describe_char(c) + mark, f"{p:.4f}", f"{-np.log2(p):.2f}")
    table.caption = f"actual {describe_char(ex.chars[n])}: {ex.bits[n]:.2f} bits"
    table.caption_justify = "left"
    return table


def gates_table(rows: list[dict]) -> Table:
    """The rows of `saturation_summary`; an LSTM's cell candidate g in a section of its own, as it is no gate."""
    table = Table(title="gate saturation (fraction of characters: left < 0.1, right > 0.9)", title_justify="left")
    for col in ("layer", "gate", "left", "right", "units mostly left", "units mostly right", "never saturated"):
        table.add_column(col, justify="right")
    rows = sorted(rows, key=lambda r: r["kind"] != "gate")  # stable: the gates by layer, then the candidates
    for i, r in enumerate(rows):
        table.add_row(
            str(r["layer"]),
            r["gate"],
            f"{r['left']:.3f}",
            f"{r['right']:.3f}",
            f"{r['units_mostly_left']}/{r['units']}",
            f"{r['units_mostly_right']}/{r['units']}",
            f"{r['units_never_saturated']}/{r['units']}",
            end_section=i + 1 < len(rows) and rows[i + 1]["kind"] != r["kind"],
        )
    if not rows:
        table.caption = "no gates: a plain RNN has none; each step overwrites its state, h' = tanh(W_ih x + W_hh h + b)"
    elif rows[-1]["kind"] == "candidate":
        table.caption = (
            "i input, f forget, o output gate. g, the cell candidate, is not a gate: it is the new content,"
            " in (-1, 1), that i lets into the cell state; its row counts g < -0.8 (left) and g > 0.8 (right)"
        )
    table.caption_justify = "left"
    return table


def units_table(found: dict[str, list[UnitScore] | str]) -> Table:
    """The ranking of `find_units`; a "state" column appears when it ranked more than h (an LSTM's c)."""
    states = {s.state for v in found.values() if not isinstance(v, str) for s in v} - {"h"}
    what = "h; |corr| ranks them" if not states else "h, and the cell state c; |corr| ranks each"
    table = Table(title=f"units that track features of the text ({what})", title_justify="left")
    # a feature's name is escaped before the table measures it, or an escape would overflow its column
    cols = ("feature", "layer", "unit", *(["state"] if states else []), "corr", "balanced acc.")
    for col in cols:
        table.add_column(col, justify="left" if col == "feature" else "right")
    for name, scores in found.items():
        if isinstance(scores, str):
            table.add_row(user_text(name, keep=""), *["-"] * (len(cols) - 2), user_text(scores, keep=""))
            continue
        for i, s in enumerate(scores):
            acc = "-" if s.balanced_accuracy is None else f"{s.balanced_accuracy:.3f}"
            state = [s.state] if states else []
            shown = user_text(name, keep="") if i == 0 else ""
            table.add_row(shown, str(s.layer), str(s.unit), *state, f"{s.corr:+.3f}", acc)
        table.add_section()
    return table

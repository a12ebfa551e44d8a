"""Every user string (paths, regexes, primes, texts) through every console and view function: nothing raises,
no raw control character reaches the output, and rich markup is shown as written.

The strings are generated: any text, with rich markup, emoji codes, terminal escape sequences, bidi controls
and lone surrogates mixed in.
"""

from __future__ import annotations

import io
import unicodedata
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm.interpret.explain import Explanation, LayerTrace
from charlm.interpret.units import UnitScore
from charlm.ui import console, explain_view, info, progress
from charlm.ui.console import SafeConsole, escape_controls

TRICKY = [
    "[/]", "[bold]", "[red]x[/red]", "[link=file:///etc]y[/link]", "\\[", ":smile:", ":thumbs_up:",
    "\x1b[2J", "\x1b]0;title\x07", "\x1b[31m", "\x9b2J", "\r", "\n", "\t", "\x00", "\x7f", "\u202e", "\u2028",
    "\udce6\udc97", "\ud800", "日本", "🌙", " ", "\\x1b",
]  # fmt: skip
user_text = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=8)), max_size=8).map("".join)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def unsafe(out: str, allowed: str = "\n") -> list[str]:
    """The characters of `out` that could move the cursor, restyle or retitle a terminal, or reorder a line."""
    return [c for c in out if c not in allowed and (unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in BIDI)]


def capture(fn, *args) -> str:
    """What `fn` prints on charlm's stderr console, as a non-terminal (no styling codes) 1000 columns wide."""
    buf = io.StringIO()
    saved = console.err_console.file
    console.err_console.file = buf
    try:
        fn(*args)
    finally:
        console.err_console.file = saved
    return buf.getvalue()


def plain_console() -> tuple[SafeConsole, io.StringIO]:
    buf = io.StringIO()
    return SafeConsole(file=buf, width=1000), buf


@FUZZ
@given(user_text)
def test_escape_controls_leaves_nothing_unsafe_and_changes_nothing_safe(s: str) -> None:
    shown = escape_controls(s)
    assert not unsafe(shown, "\n\t")
    assert not unsafe(escape_controls(s, keep=""), "")
    if not unsafe(s, "\n\t"):
        assert shown == s
    assert escape_controls(shown) == shown  # nothing left to escape


@FUZZ
@given(user_text)
def test_error_and_warning_are_one_line_shown_as_written(s: str) -> None:
    assert capture(console.error, s) == f"error: {escape_controls(s, keep='')}\n"
    assert capture(console.warn, s) == f"warning: {escape_controls(s, keep='')}\n"


@FUZZ
@given(user_text)
def test_say_and_print_show_markup_literally(s: str) -> None:
    out = capture(console.say, s)
    assert not unsafe(out)
    assert out == escape_controls(s).expandtabs(8) + "\n" or "\t" in s  # rich expands tabs
    con, buf = plain_console()
    con.print(s)
    assert not unsafe(buf.getvalue()) and ("\t" in s or escape_controls(s) in buf.getvalue())


@FUZZ
@given(user_text, user_text)
def test_run_folder_in_the_closing_lines(run: str, note: str) -> None:
    result = SimpleNamespace(
        stopped_by="max_steps", step=3, elapsed=1.0, chars_per_sec=10.0, best_val_bpc=1.5, best=f"{run}/step-3",
        early_stop=note or None, interrupted=True, run=run,
    )  # fmt: skip
    out = capture(progress.train_done, result)
    assert not unsafe(out)
    assert f"charlm sample {escape_controls(console.shell_word(run))}" in out.expandtabs(1) or "\t" in run


@FUZZ
@given(user_text)
def test_training_display_messages(s: str) -> None:
    buf = io.StringIO()
    display = progress.TrainDisplay(console=SafeConsole(file=buf, width=1000))
    for kind in ("warn", "note"):
        display(kind, {"message": s})
    display("eval", {"step": 1, "val_bpc": 1.0, "val_loss": 0.7})
    assert not unsafe(buf.getvalue())
    assert escape_controls(s, keep="") in buf.getvalue()  # the warning, on one line


def explanation(text: str) -> Explanation:
    chars = list(text)
    t, rng = len(chars), np.random.default_rng(0)
    bits = np.concatenate([[np.nan], rng.uniform(0, 9, t - 1)])
    tops = [[] if i == 0 else [chars[(i + j) % t] for j in range(3)] for i in range(t)]
    probs = np.concatenate([np.full((1, 3), np.nan), np.tile([0.5, 0.3, 0.2], (t - 1, 1))])
    layer = LayerTrace(h=rng.normal(size=(t, 4)), gates={"z": rng.uniform(size=(t, 4)), "r": rng.uniform(size=(t, 4))})
    return Explanation(chars, bits, tops, probs, [layer])


@FUZZ
@given(user_text.filter(lambda s: len(s) >= 2))
def test_explain_views_show_the_text_escaped(text: str) -> None:
    ex = explanation(text)
    for colour in (False, True):  # plain, and coloured as on a terminal
        buf = io.StringIO()
        con = SafeConsole(file=buf, width=1000, force_terminal=colour, color_system="truecolor" if colour else None)
        con.print(explain_view.by_surprisal(ex), end="")
        con.print(explain_view.by_unit(ex, 0, 1), end="")
        con.print(explain_view.summary(ex), end="")
        con.print(explain_view.at(ex, len(text) - 1))
        out = buf.getvalue()
        if colour:  # styling codes are the only escape sequences
            import re

            out = re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert not unsafe(out)
        assert escape_controls(text) in out.replace("\n\n", "\n") or "\t" in text or "\n" in text


@FUZZ
@given(user_text)
def test_units_table_shows_a_regex_as_written(regex: str) -> None:
    con, buf = plain_console()
    found = {f"regex {regex}": [UnitScore(0, 1, 0.5, 0.9)], "inside_quotes": "never true in this text"}
    con.print(explain_view.units_table(found))
    out = buf.getvalue()
    assert not unsafe(out)
    assert escape_controls(f"regex {regex}").split("\n")[0].split("\t")[0] in out


@FUZZ
@given(user_text, user_text)
def test_info_shows_paths_escaped(path: str, source: str) -> None:
    d = {
        "checkpoint": path, "model": {"cell": "gru", "layers": 1, "hidden": 8, "embed": 4, "dropout": 0.0,
        "parameters": 10, "vocab_size": 3}, "vocabulary": "ab\x1b", "step": 1, "chars_seen": 1,
        "elapsed_seconds": 1.0, "val_bpc": None, "best_val_bpc": None, "best_checkpoint": path,
        "data": {"sources": [source]}, "metrics": [], "auto": None,
    }  # fmt: skip
    assert not unsafe(info.render(d))


@pytest.mark.parametrize("keep", ["", "\n", "\n\t"])
def test_escapes_read_as_python_would(keep: str) -> None:
    assert escape_controls("a\x1b[2Jb\x07\u202e", keep) == "a\\x1b[2Jb\\x07\\u202e"
    assert escape_controls("x\ny", keep) == ("x\ny" if "\n" in keep else "x\\ny")
    assert escape_controls("\udce6\udc97\udca5") == "日"  # a UTF-8 file name read under an ASCII locale


def test_bytes_that_arrived_as_surrogate_escapes_show_the_same_whole_or_in_pieces() -> None:
    # found by the explain-view test: a lone surrogate elsewhere used to change how the escaped bytes were shown
    text = "[/]\udce6\udc97\ud800"
    pieces = escape_controls("[/]\udce6\udc97") + escape_controls("\ud800")
    assert escape_controls(text) == "[/]\\xe6\\x97\\ud800" == pieces
    assert escape_controls("name-\udce6\udc97\udca5.txt") == "name-日.txt"  # valid UTF-8 is shown as what it is

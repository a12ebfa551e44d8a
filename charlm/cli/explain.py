"""The `explain` and `units` commands: what a model sees in a text, character by character and unit by unit.

Like the other commands they only parse, call the library and print.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from charlm import outfile
from charlm.cli.options import Device, Quiet, SkipUnknown, checkpoint_and_text, load_model, text_option
from charlm.cli.output import print_json
from charlm.errors import UsageError
from charlm.ui.console import say, warn

if TYPE_CHECKING:
    from charlm.api import Model

TextArgs = Annotated[
    Optional[list[str]],
    typer.Argument(
        metavar="[CHECKPOINT] FILE|-",
        help="Optional checkpoint, then a text file to read (- for stdin). Or give --text instead of a file.",
        show_default=False,
    ),
]
LiteralText = Annotated[Optional[str], text_option("--text", help="Use this string as the text instead of a file.")]
MaxChars = Annotated[int, typer.Option(help="Read at most this many characters of the text (the rest is ignored).")]


def _explain_input(
    paths: Optional[list[str]], literal: Optional[str], max_chars: int, device: str, quiet: bool
) -> tuple[Model, str, str]:
    """Checkpoint and text from `[CHECKPOINT] FILE|-` or `[CHECKPOINT] --text STRING` -> (model, text, what the
    text is called in messages)."""
    from charlm.data.corpus import read_text

    usage = "give [CHECKPOINT] FILE (or - for stdin), or [CHECKPOINT] --text STRING"
    checkpoint, files = checkpoint_and_text(paths or [], 0 if literal is not None else 1, usage)
    if max_chars < 2:
        raise UsageError(f"--max-chars must be at least 2 (got {max_chars})")
    text = literal if literal is not None else read_text(files[0])
    what = "--text" if literal is not None else files[0]
    if len(text) > max_chars:
        if not quiet:
            warn(f"{what}: using the first {max_chars:,} of {len(text):,} characters (raise --max-chars for more)")
        text = text[:max_chars]
    return load_model(checkpoint, device, quiet), text, what


def _check_unit(ex: Any, layer: Optional[int], unit: int) -> tuple[int, int]:
    n_layers, hidden = len(ex.layers), ex.layers[0].h.shape[1]
    layer = n_layers - 1 if layer is None else layer
    problems = []
    if not 0 <= layer < n_layers:
        problems.append(f"--layer must be in 0..{n_layers - 1} (got {layer})")
    if not 0 <= unit < hidden:
        problems.append(f"--unit must be in 0..{hidden - 1} (got {unit})")
    if problems:
        raise UsageError(problems)
    return layer, unit


def explain(
    paths: TextArgs = None,
    literal: LiteralText = None,
    at: Annotated[
        Optional[int], typer.Option(help="Show the top guesses for the character at position N (0-based).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Guesses to show per position.")] = 5,
    gates: Annotated[
        bool, typer.Option("--gates", help="Summarise gate saturation per layer (with --json: add gate values).")
    ] = False,
    unit: Annotated[
        Optional[int], typer.Option(help="Colour the text by hidden unit K's state instead of surprisal.")
    ] = None,
    layer: Annotated[Optional[int], typer.Option(help="The layer of --unit. Default: the top layer.")] = None,
    html_out: Annotated[
        Optional[Path], typer.Option("--html", help="Also write a self-contained HTML page here.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Let --html replace an existing file that charlm did not write.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print per-character records as one JSON object.")] = False,
    max_chars: MaxChars = 20000,
    skip_unknown: SkipUnknown = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Show a text coloured by how surprised the model is at each character, with its guesses and gate values."""
    from charlm.interpret import explain as ex_lib
    from charlm.ui import explain_view as view

    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1 (got {top_k})")
    if html_out is not None:  # refused before any work: an existing file not charlm's, the input, a run's files
        outfile.check_file(html_out, option="--html", kind="html", force=force, inputs=(paths or [])[-1:])
    model, text, what = _explain_input(paths, literal, max_chars, device, quiet)
    traced = gates or unit is not None or html_out is not None
    explained = model.explain(text, top_k=top_k, gates=traced, skip_unknown=skip_unknown, source=what)
    ex = explained.explanation
    if at is not None and not 1 <= at < len(ex.chars):
        raise UsageError(f"--at must be in 1..{len(ex.chars) - 1}: position 0 has nothing before it to predict from")
    chosen = _check_unit(ex, layer, unit) if unit is not None else None
    if html_out is not None:
        from charlm.ui import html as html_report

        html_report.write(html_out, html_report.render(ex, f"charlm explain: {len(ex.chars)} characters", chosen))
        if not quiet:
            say(f"wrote {html_out}")
    if json_out:
        print_json(explained.to_dict(gates))
        return
    con = view.out_console()
    con.print(view.by_unit(ex, *chosen) if chosen else view.by_surprisal(ex), end="")
    con.print("\n" if ex.chars[-1] != "\n" else "")
    con.print(view.summary(ex), end="")
    if at is not None:
        con.print(view.at(ex, at))
    if gates:
        con.print(view.gates_table(ex_lib.saturation_summary(ex.layers)))


def units(
    paths: TextArgs = None,
    literal: LiteralText = None,
    regex: Annotated[
        Optional[str], text_option(help="Also rank units by a feature: inside a match of this regex.")
    ] = None,
    top: Annotated[int, typer.Option(help="Units to list per feature.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print the ranking as JSON.")] = False,
    max_chars: MaxChars = 20000,
    skip_unknown: SkipUnknown = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Rank hidden units by how well they track features of a text: quotes, brackets, line position, words, regex."""
    from charlm.interpret.units import regex_feature
    from charlm.ui import explain_view as view

    if top < 1:
        raise UsageError(f"--top must be at least 1 (got {top})")
    if regex is not None:
        regex_feature(regex)  # a bad pattern is a usage error before any work is done
    model, text, what = _explain_input(paths, literal, max_chars, device, quiet)
    found = model.units(text, regex=regex, top=top, skip_unknown=skip_unknown, source=what)
    if json_out:
        print_json({k: v if isinstance(v, str) else [s.to_dict() for s in v] for k, v in found.items()})
    else:
        view.out_console().print(view.units_table(found))

"""The `evaluate` command: score a text with a model, as a whole or line by line."""

from __future__ import annotations

from typing import Annotated

import typer

from charlm.cli.options import Device, Jsonl, Quiet, ReplaceBadBytes, SkipUnknown, checkpoint_and_text, load_model
from charlm.cli.output import print_line_scores, print_score
from charlm.errors import UsageError

PER_LINE_HELP = "Score each line on its own, as if it began a line: bits/char, bits, characters, line (tab-separated)."
CheckpointThenFile = Annotated[
    list[str],
    typer.Argument(metavar="[CHECKPOINT] FILE|-", help="Optional checkpoint, then the text to score (- for stdin)."),
]


def evaluate(
    paths: CheckpointThenFile,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    per_line: Annotated[bool, typer.Option("--per-line", help=PER_LINE_HELP)] = False,
    jsonl: Jsonl = False,
    skip_unknown: SkipUnknown = False,
    replace_bad_bytes: ReplaceBadBytes = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Score a text: loss in nats/char, bits/char and perplexity (lower means less surprised)."""
    from charlm.data.corpus import read_text

    checkpoint, (file,) = checkpoint_and_text(paths, 1, "evaluate takes at most two arguments: [CHECKPOINT] FILE")
    if jsonl and not per_line or json_out and per_line:
        raise UsageError("use --jsonl with --per-line (many records), --json without it (one summary)")
    text = read_text(file, replace_bad_bytes)
    model = load_model(checkpoint, device, quiet)
    if per_line:
        return print_line_scores(model.iter_score_lines(text, skip_unknown=skip_unknown), jsonl)
    print_score(model.score(text, skip_unknown=skip_unknown, source=file), json_out)

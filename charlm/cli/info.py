"""The `info` and `plot` commands: what a checkpoint holds, and how its run's training went."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.options import Ckpt, Quiet, resolve
from charlm.cli.output import print_json
from charlm.ui.console import say


def info(
    checkpoint: Ckpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Describe a model: shape, size, vocabulary, training so far and the data it learned from."""
    from charlm.ui.info import describe, render

    d = describe(resolve(checkpoint, quiet))
    if json_out:
        print_json(d)
    else:
        print(render(d))


def plot(
    checkpoint: Ckpt = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="PNG to write, - for stdout. \\[default: RUN/curve.png]")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing file that charlm did not write.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Draw a run's training curve (train and validation bits/char) as a PNG; needs matplotlib."""
    from charlm.ui.plot import plot_run

    written = plot_run(checkpoint, output, force)
    if written is not None and not quiet:
        say(f"wrote {written}")

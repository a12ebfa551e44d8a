"""The `sample` command: generate text from a model and stream it to stdout."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from charlm.cli.options import SEED_RANGE, Ckpt, Device, Quiet, SkipUnknown, flag, load_model, text_option
from charlm.cli.output import read_stdin, read_stdin_line, write_samples, write_stream
from charlm.errors import UsageError
from charlm.ui import console
from charlm.ui.console import err_console

if TYPE_CHECKING:
    from charlm.api import Model

SEPARATOR_HELP = "Put between samples (--num-samples); the last ends with a newline. \\[default: a blank line]"


def sample(
    checkpoint: Ckpt = None,
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 1000,
    temperature: Annotated[float, typer.Option(help="Randomness: 0 is greedy, 1 the model's own odds.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k most likely characters only.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Sample among the likeliest characters covering p.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: same seed, same text.", **SEED_RANGE)] = None,
    prime: Annotated[str, text_option(help="Text the model reads first and continues; - reads stdin.")] = "",
    num_samples: Annotated[int, typer.Option(help="Samples to generate, side by side.")] = 1,
    separator: Annotated[str, text_option(help=SEPARATOR_HELP, show_default=False)] = "\n\n",
    stop: Annotated[Optional[str], text_option(help="End each sample before the first occurrence of this.")] = None,
    jsonl: Annotated[bool, typer.Option("--jsonl", help='One JSON object per sample: {"sample": i, "text": ...}.')] = (
        False
    ),
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Continue each line read from stdin, until end of input.")
    ] = False,
    skip_unknown: SkipUnknown = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Generate text; only the generated text goes to stdout, streamed as it is produced."""
    # One BLAS thread, set before NumPy loads OpenBLAS: a sampling step is a few small products, and a second
    # thread waiting for a busy core slows them several times over (measured: 32 samples, 8x slower).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from charlm.api import check_sample

    if interactive and prime == "-":
        raise UsageError("--interactive reads primes from stdin; it cannot also take --prime -")
    if prime == "-":
        prime = read_stdin()
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "prime": prime, "stop": stop,
               "seed": seed, "skip_unknown": skip_unknown}  # fmt: skip
    check_sample(length, n=num_samples, **options)  # before a checkpoint is looked for
    model = load_model(checkpoint, device, quiet)
    if interactive:
        show = sys.stdin.isatty() and not quiet
        prompt_loop(model, length, options, (lambda: err_console.print("> ", end="")) if show else None)
    elif num_samples == 1 and not jsonl:
        write_stream(model.stream(length, **options))
    else:
        write_samples(model.stream_many(length, n=num_samples, **options), separator, jsonl)


def prompt_loop(model: Model, length: int, options: dict[str, Any], prompt: Callable[[], None] | None = None) -> None:
    """Read a prime per line of stdin and stream a continuation of it, until end of input; the seed (if any)
    goes up by one from each line to the next."""
    n, seed = 0, options.get("seed")
    while True:
        if prompt is not None:
            prompt()
        line = read_stdin_line()
        if not line:
            return
        given = {**options, "prime": line.rstrip("\n"), "seed": None if seed is None else seed + n}
        n += 1
        try:
            write_stream(model.stream(length, **given))
        except UsageError as e:  # a prime with unknown characters: say so and take the next one
            console.error(e.render(flag))
        print(flush=True)

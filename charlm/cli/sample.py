"""The `sample` command: generate text from a model and stream it to stdout."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from charlm.cli.options import SEED_RANGE, Ckpt, Device, Quiet, SkipUnknown, resolve, text_option
from charlm.cli.output import interactive as prompt_loop
from charlm.cli.output import read_stdin, write_samples, write_stream
from charlm.errors import UsageError
from charlm.ui.console import err_console

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
    from charlm.inference import sample as sampling

    if interactive and prime == "-":
        raise UsageError("--interactive reads primes from stdin; it cannot also take --prime -")
    if prime == "-":
        prime = read_stdin()
    opts = sampling.SampleOptions(
        length, temperature, top_k, top_p, seed, prime, stop or None, "skip" if skip_unknown else "error"
    )
    sampling.check(opts, num_samples)
    model, tok, dev = sampling.load(resolve(checkpoint, quiet), device, 1 if interactive else num_samples)
    if interactive:
        show = sys.stdin.isatty() and not quiet
        prompt_loop(model, tok, opts, dev, (lambda: err_console.print("> ", end="")) if show else None)
    elif num_samples == 1 and not jsonl:
        write_stream(sampling.stream(model, tok, opts, dev))
    else:
        write_samples(sampling.sample_pieces(model, tok, opts, num_samples, dev), separator, jsonl)

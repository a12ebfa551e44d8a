"""The `charlm` command line: parse arguments, call the library, print. No logic lives here.

stdout carries only payload (sample text, scores, JSON); everything else goes to stderr (see charlm.shell).
Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from charlm import __version__
from charlm.cli.output import print_json, silence_stdout
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CharlmError, UsageError
from charlm.ui.console import err_console

EXIT_CODES = (
    "stdout carries only payload (text, scores, JSON); progress, warnings and errors go to stderr. "
    "A FILE of - reads stdin. Exit status: 0 success, 1 runtime failure, 2 usage error, "
    "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
)
app = typer.Typer(
    help="Train character-level GRU language models on your own text, then sample from them and score text.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Typer raises Click's exceptions; newer Typer releases vendor Click, so find the base class through Typer.
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_M, _T = ModelConfig(vocab_size=1), TrainConfig()
Ckpt = Annotated[
    Optional[Path],
    typer.Argument(
        help="A run folder, a step-* checkpoint folder or a file in one. Default: the newest run under ./checkpoints.",
        show_default=False,
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
SkipUnknown = Annotated[
    bool, typer.Option("--skip-unknown", help="Drop characters the model never saw, instead of stopping with an error.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but the payload and errors.")]
PER_LINE_HELP = "Score each line on its own, as if it began a line: bits/char, bits, characters, line (tab-separated)."
SEPARATOR_HELP = "Put between samples (--num-samples); the last ends with a newline. \\[default: a blank line]"
Jsonl = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per record, one per line.")]


def _handled(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn a CharlmError into its one-line message on stderr and its exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except CharlmError as e:
            err_console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            # The reader went away (`charlm sample | head`): that is a normal end for a pipeline, not an error.
            silence_stdout()
            raise typer.Exit(0) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"charlm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


def _opt(help: str, default: Any = None) -> Any:
    return typer.Option(help=help + (f" \\[default: {default}]" if default is not None else ""), show_default=False)


@app.command()
@_handled
def train(
    corpus: Annotated[
        Optional[list[str]],
        typer.Argument(help="UTF-8 text file(s) to learn from, or - for stdin.", show_default=False),
    ] = None,
    out: Annotated[Optional[Path], _opt("Run folder for checkpoints and metrics.", "checkpoints/<corpus name>")] = None,
    hidden: Annotated[Optional[int], _opt("GRU state size.", _M.hidden)] = None,
    layers: Annotated[Optional[int], _opt("Stacked GRU layers.", _M.layers)] = None,
    embed: Annotated[Optional[int], _opt("Character embedding size.", _M.embed)] = None,
    dropout: Annotated[Optional[float], _opt("Dropout between layers and before the head.", _M.dropout)] = None,
    seq_len: Annotated[Optional[int], _opt("Characters per stream per step (BPTT length).", _T.seq_len)] = None,
    batch_size: Annotated[Optional[int], _opt("Parallel streams per step.", _T.batch_size)] = None,
    lr: Annotated[Optional[float], _opt("Peak learning rate (AdamW; warmup, then cosine decay).", _T.lr)] = None,
    max_steps: Annotated[Optional[int], _opt("Stop after this many steps.")] = None,
    max_time: Annotated[Optional[str], _opt("Stop after this long, e.g. 90s, 10m, 2h. With neither limit: 5m.")] = None,
    val_fraction: Annotated[
        Optional[float], _opt("Last fraction of the text held out for validation.", _T.val_fraction)
    ] = None,
    val: Annotated[Optional[str], _opt("Validate on this file instead of a held-out fraction.")] = None,
    eval_every: Annotated[
        Optional[int], _opt("Steps between validations (each saves a checkpoint).", _T.eval_every)
    ] = None,
    save_every: Annotated[Optional[int], _opt("Steps between extra checkpoints.")] = None,
    keep: Annotated[Optional[int], _opt("Recent checkpoints to keep, besides the best.", _T.keep)] = None,
    seed: Annotated[Optional[int], _opt("Random seed.", _T.seed)] = None,
    device: Annotated[Optional[str], _opt("auto, cpu, cuda or mps.", _T.device)] = None,
    precision: Annotated[
        Optional[str],
        _opt("Training arithmetic: auto (bf16 on CPUs that compute it natively), fp32 or bf16.", _T.precision),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly where it stopped.")] = False,
    init_from: Annotated[Optional[Path], _opt("Start from this checkpoint's weights (fine-tuning).")] = None,
    replace_bad_bytes: Annotated[bool, typer.Option(help="Read bytes that are not UTF-8 as U+FFFD.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")] = False,
    backend: Annotated[
        Optional[str], _opt("Under torchrun: auto (NCCL on CUDA, gloo otherwise), gloo or nccl.", "auto")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Train a model on CORPUS; progress on stderr, checkpoints in the run folder.

    Under torchrun (torchrun --nproc_per_node=N -m charlm train ...) the N processes train one model together.
    """
    from charlm.cli.output import train_summary
    from charlm.training import distributed
    from charlm.training import request as run
    from charlm.ui.console import TrainDisplay, train_done

    given = {k: v for k, v in locals().items() if v is not None and k in {*_M.to_dict(), *_T.to_dict()}}
    req = run.TrainRequest(corpus or [], out, val, resume, init_from, replace_bad_bytes, given)
    many = distributed.launched()
    if backend is not None and not many:
        raise UsageError("--backend applies only to a run launched by torchrun")
    main_rank = distributed.rank_info().is_main
    with TrainDisplay(quiet=quiet or not main_rank) as display:
        result = distributed.train(req, display, backend or "auto") if many else run.train(req, display)
    if main_rank:
        train_done(result, quiet)
        if json_out:
            print_json(train_summary(result))
    if result.interrupted:
        raise typer.Exit(143 if result.stopped_by == "SIGTERM" else 130)


def _resolve(checkpoint: Optional[Path], quiet: bool) -> Any:
    """The best checkpoint of what was named; when nothing was, stderr says which run was picked."""
    from charlm import checkpoint as ckpt_io

    ck = ckpt_io.resolve(checkpoint, "best")
    if checkpoint is None and not quiet:
        err_console.print(f"using {ck.path}", soft_wrap=True)
    return ck


def _load(checkpoint: Optional[Path], device: str, quiet: bool) -> tuple[Any, Any, Any]:
    from charlm import checkpoint as ckpt_io
    from charlm.training.trainer import pick_device

    ck = _resolve(checkpoint, quiet)
    dev = pick_device(device)
    model, tok = ckpt_io.load_model(ck, dev)
    return model, tok, dev


@app.command()
@_handled
def sample(
    checkpoint: Ckpt = None,
    length: Annotated[int, typer.Option(help="Characters to generate per sample.")] = 1000,
    temperature: Annotated[float, typer.Option(help="Randomness: 0 is greedy, 1 the model's own odds.")] = 1.0,
    top_k: Annotated[Optional[int], typer.Option(help="Sample among the k most likely characters only.")] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Sample among the likeliest characters covering p.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed; the same seed gives the same text.")] = None,
    prime: Annotated[str, typer.Option(help="Text the model reads first and continues; - reads stdin.")] = "",
    num_samples: Annotated[int, typer.Option(help="Samples to generate, side by side.")] = 1,
    separator: Annotated[str, typer.Option(help=SEPARATOR_HELP, show_default=False)] = "\n\n",
    stop: Annotated[Optional[str], typer.Option(help="End each sample before the first occurrence of this.")] = None,
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
    from charlm.cli.output import interactive as prompt_loop
    from charlm.cli.output import write_samples, write_stream
    from charlm.inference import sample as sampling

    if interactive and prime == "-":
        raise UsageError("--interactive reads primes from stdin; it cannot also take --prime -")
    if prime == "-":
        prime = sys.stdin.read()
    opts = sampling.SampleOptions(
        length, temperature, top_k, top_p, seed, prime, stop or None, "skip" if skip_unknown else "error"
    )
    sampling.check(opts, num_samples)
    model, tok, dev = sampling.load(_resolve(checkpoint, quiet), device, 1 if interactive else num_samples)
    if interactive:
        show = sys.stdin.isatty() and not quiet
        prompt_loop(model, tok, opts, dev, (lambda: err_console.print("> ", end="")) if show else None)
    elif num_samples == 1 and not jsonl:
        write_stream(sampling.stream(model, tok, opts, dev))
    else:
        write_samples(sampling.sample_many(model, tok, opts, num_samples, dev), separator, jsonl)


@app.command()
@_handled
def evaluate(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="[CHECKPOINT] FILE|-", help="Optional checkpoint, then the text to score (- for stdin)."
        ),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    per_line: Annotated[bool, typer.Option("--per-line", help=PER_LINE_HELP)] = False,
    jsonl: Jsonl = False,
    skip_unknown: SkipUnknown = False,
    replace_bad_bytes: Annotated[bool, typer.Option(help="Read bytes that are not UTF-8 as U+FFFD.")] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Score a text: loss in nats/char, bits/char and perplexity (lower means less surprised)."""
    from charlm.cli.output import line_records, print_line_scores
    from charlm.data.corpus import read_text
    from charlm.inference.evaluate import score_ids

    if len(paths) > 2:
        raise UsageError("evaluate takes at most two arguments: [CHECKPOINT] FILE")
    if jsonl and not per_line or json_out and per_line:
        raise UsageError("use --jsonl with --per-line (many records), --json without it (one summary)")
    text = read_text(paths[-1], replace_bad_bytes)
    model, tok, dev = _load(Path(paths[0]) if len(paths) == 2 else None, device, quiet)
    if per_line:
        return print_line_scores(line_records(model, tok, text, skip_unknown, dev), jsonl)
    ids = tok.encode(text, "skip" if skip_unknown else "error", what=paths[-1])
    if len(ids) < 2:
        raise UsageError(f"{paths[-1]}: needs at least two (known) characters to score")
    r = score_ids(model, ids, dev)
    if json_out:
        print_json(r.to_dict())
    else:
        print(
            f"{r.loss:.4f} nats/char\t{r.bits_per_char:.4f} bits/char\tperplexity {r.perplexity:.3f}\t{r.chars} chars"
        )


@app.command()
@_handled
def info(
    checkpoint: Ckpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    quiet: Quiet = False,
) -> None:
    """Describe a model: shape, size, vocabulary, training so far and the data it learned from."""
    from charlm.ui.info import describe, render

    d = describe(_resolve(checkpoint, quiet))
    if json_out:
        print_json(d)
    else:
        print(render(d))


@app.command()
@_handled
def plot(
    checkpoint: Ckpt = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="PNG to write, - for stdout. \\[default: RUN/curve.png]")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Draw a run's training curve (train and validation bits/char) as a PNG; needs matplotlib."""
    from charlm.ui.plot import plot_run

    written = plot_run(checkpoint, output)
    if written is not None and not quiet:
        err_console.print(f"wrote {written}", soft_wrap=True)


def main() -> None:
    """Entry point: runs the app and turns every error a user can cause into one line on stderr."""
    try:
        code = app(prog_name="charlm", standalone_mode=False)
        sys.stdout.flush()  # here, not at exit, so a reader that went away cannot cause a traceback
    except BrokenPipeError:
        silence_stdout()
        code = 0
    except typer.Abort:
        code = 130
    except ClickException as e:
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else "charlm: "
        if e.format_message():  # empty for a bare `charlm`, whose help has been shown already
            err_console.print(f"[red]error:[/] {escape(where + e.format_message())}", soft_wrap=True)
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


# The explain and units commands live in their own module and register on `app` when it is imported.
from charlm.cli import explain as _explain_commands  # noqa: E402, F401

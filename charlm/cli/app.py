"""The `charlm` Typer app: its commands, the root options, and how errors and signals become exit statuses.

The commands are plain functions in their own modules; this is the one place that registers them, in the
order `charlm --help` lists them. stdout carries only payload (see charlm.cli.output); everything else goes
to stderr. Exit status: 0 success, 1 runtime failure, 2 usage error, 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from charlm import __version__
from charlm.cli import compare, evaluate, explain, export, forecast, info, sample, serve, train
from charlm.cli.options import flag
from charlm.cli.output import guard_stdio, silence_stdout
from charlm.errors import CharlmError, OutputError
from charlm.ui.console import error

EXIT_CODES = (
    "stdout carries only payload (text, scores, JSON); progress, warnings and errors go to stderr. "
    "A FILE of - reads stdin. Exit status: 0 success, 1 runtime failure, 2 usage error, "
    "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)."
)
COMMANDS = (
    train.train,
    sample.sample,
    evaluate.evaluate,
    info.info,
    info.plot,
    explain.explain,
    explain.units,
    compare.compare,
    export.export,
    serve.serve,
    forecast.forecast,
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


def fail(e: CharlmError) -> int:
    """Say what went wrong in one line on stderr; the exit status."""
    if isinstance(e, OutputError):
        silence_stdout()  # what is left in stdout's buffer cannot be written either, at exit or ever
    error(e.render(flag))
    return e.exit_code


def handled(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn a CharlmError into its one-line message on stderr (settings named by their flags) and its exit status."""

    @functools.wraps(fn)  # Typer reads the options from the wrapped function's signature
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except CharlmError as e:
            raise typer.Exit(fail(e)) from None
        except BrokenPipeError:
            # The reader went away (`charlm sample | head`): that is a normal end for a pipeline, not an error.
            silence_stdout()
            raise typer.Exit(0) from None

    return wrapper


for command in COMMANDS:
    app.command()(handled(command))


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


def main() -> None:
    """Entry point: runs the app and turns every error a user can cause into one line on stderr."""
    guard_stdio()
    try:
        code = app(prog_name="charlm", standalone_mode=False)
        sys.stdout.flush()  # here, not at exit, so a reader that went away cannot cause a traceback
    except CharlmError as e:  # raised while the options were read (--version), or by the last flush
        code = fail(e)
    except BrokenPipeError:
        silence_stdout()
        code = 0
    except typer.Abort:
        code = 130
    except ClickException as e:
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else "charlm: "
        if e.format_message():  # empty for a bare `charlm`, whose help has been shown already
            error(where + e.format_message())
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.exit(code if isinstance(code, int) else 0)

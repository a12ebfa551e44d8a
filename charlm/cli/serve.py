"""The `serve` command: a model behind an OpenAI-compatible HTTP API, with a playground page."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from charlm.cli.options import Ckpt, Device, Quiet
from charlm.errors import CharlmError, UsageError
from charlm.ui.console import err_console, warn

_LIMITS = "Limits"


def _limit(help: str) -> object:
    return typer.Option(help=help, rich_help_panel=_LIMITS, min=1)


def serve(
    checkpoint: Ckpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port; stderr says which).", min=0)] = 8000,
    api_key: Annotated[
        Optional[str],
        typer.Option(envvar="CHARLM_API_KEY", help="Require Authorization: Bearer KEY on every route but /health."),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Serve the run's best checkpoint as training writes new ones.")
    ] = False,
    max_prompt: Annotated[int, _limit("Longest prompt, in characters.")] = 8192,
    max_tokens: Annotated[int, _limit("Most characters per sample (max_tokens).")] = 4096,
    max_n: Annotated[
        Optional[int],
        typer.Option(
            help="Most samples per request (n). \\[default: 16, at most --max-streams]",
            rich_help_panel=_LIMITS,
            min=1,
            show_default=False,
        ),
    ] = None,
    max_request_chars: Annotated[int, _limit("Most characters per request (n x max_tokens).")] = 32768,
    max_streams: Annotated[int, _limit("Most samples in the batch at once.")] = 256,
    max_queue: Annotated[int, _limit("Most requests waiting for a place (then 503).")] = 256,
    shutdown_wait: Annotated[
        float, typer.Option(help="On SIGTERM or Ctrl-C, wait this many seconds for requests in flight.", min=0)
    ] = 10.0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Serve a model over HTTP: OpenAI's /v1/completions (streamed or not), /v1/score, /v1/explain, a playground."""
    # One BLAS thread, set before NumPy loads OpenBLAS (as `sample` does): the engine's steps are small products.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CharlmError("charlm serve needs its extra: pip install 'charlm[serve]'") from None
    from dataclasses import replace

    from charlm.serve import server
    from charlm.serve.protocol import Limits

    if max_n is None:
        max_n = min(Limits().max_n, max_streams)
    if max_n > max_streams:
        raise UsageError(f"--max-n ({max_n}) cannot be more than --max-streams ({max_streams})")
    limits = replace(
        Limits(),
        max_prompt_chars=max_prompt,
        max_tokens=max_tokens,
        default_max_tokens=min(Limits().default_max_tokens, max_tokens),
        max_n=max_n,
        max_chars_per_request=max_request_chars,
        max_streams=max_streams,
        max_queue=max_queue,
    )
    opts = server.Options(host, port, api_key or None, watch, device, shutdown_wait, limits)
    if not server.is_loopback(host) and not opts.api_key:
        warn(
            f"listening on {host} without an API key: anyone who can reach this machine can use the model "
            "(give --api-key or set CHARLM_API_KEY)"
        )

    def say(message: str) -> None:
        if not quiet:
            err_console.print(message, soft_wrap=True, highlight=False, markup=False)

    served, run = server.load(checkpoint, device)
    server.serve(served, run, opts, say)

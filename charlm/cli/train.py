"""The `train` command: turn its options into a training request, run it, and report how it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.options import Quiet, ReplaceBadBytes, setting
from charlm.cli.output import print_json, train_summary
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import UsageError

_M, _T = ModelConfig(vocab_size=1), TrainConfig()  # the defaults shown in --help


def train(
    corpus: Annotated[
        Optional[list[str]],
        typer.Argument(help="UTF-8 text file(s) to learn from, or - for stdin.", show_default=False),
    ] = None,
    out: Annotated[Optional[Path], setting("Run folder for checkpoints and metrics.", "checkpoints/<corpus name>")] = (
        None
    ),
    hidden: Annotated[Optional[int], setting("GRU state size.", _M.hidden)] = None,
    layers: Annotated[Optional[int], setting("Stacked GRU layers.", _M.layers)] = None,
    embed: Annotated[Optional[int], setting("Character embedding size.", _M.embed)] = None,
    dropout: Annotated[Optional[float], setting("Dropout between layers and before the head.", _M.dropout)] = None,
    seq_len: Annotated[Optional[int], setting("Characters per stream per step (BPTT length).", _T.seq_len)] = None,
    batch_size: Annotated[Optional[int], setting("Parallel streams per step.", _T.batch_size)] = None,
    lr: Annotated[Optional[float], setting("Peak learning rate (AdamW; warmup, then cosine decay).", _T.lr)] = None,
    max_steps: Annotated[Optional[int], setting("Stop after this many steps.")] = None,
    max_time: Annotated[
        Optional[str], setting("Stop after this long, e.g. 90s, 10m, 2h. With neither limit: 5m.")
    ] = None,
    val_fraction: Annotated[
        Optional[float], setting("Last fraction of the text held out for validation.", _T.val_fraction)
    ] = None,
    val: Annotated[Optional[str], setting("Validate on this file instead of a held-out fraction.")] = None,
    eval_every: Annotated[
        Optional[int], setting("Steps between validations (each saves a checkpoint).", _T.eval_every)
    ] = None,
    save_every: Annotated[Optional[int], setting("Steps between extra checkpoints.")] = None,
    keep: Annotated[Optional[int], setting("Recent checkpoints to keep, besides the best.", _T.keep)] = None,
    seed: Annotated[Optional[int], setting("Random seed.", _T.seed)] = None,
    device: Annotated[Optional[str], setting("auto, cpu, cuda or mps.", _T.device)] = None,
    precision: Annotated[
        Optional[str],
        setting("Training arithmetic: auto (bf16 on CPUs that compute it natively), fp32 or bf16.", _T.precision),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly where it stopped.")] = False,
    init_from: Annotated[Optional[Path], setting("Start from this checkpoint's weights (fine-tuning).")] = None,
    replace_bad_bytes: ReplaceBadBytes = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")] = False,
    backend: Annotated[
        Optional[str], setting("Under torchrun: auto (NCCL on CUDA, gloo otherwise), gloo or nccl.", "auto")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Train a model on CORPUS; progress on stderr, checkpoints in the run folder.

    Under torchrun (torchrun --nproc_per_node=N -m charlm train ...) the N processes train one model together.
    """
    from charlm.training import distributed
    from charlm.training import request as run
    from charlm.ui.progress import TrainDisplay, train_done

    # Each setting under its ModelConfig/TrainConfig field name, never picked out of locals(): a renamed option
    # or field then fails (here, or in tests/test_cli_wiring.py) instead of being dropped without a word.
    settings = {
        "hidden": hidden, "layers": layers, "embed": embed, "dropout": dropout,
        "seq_len": seq_len, "batch_size": batch_size, "lr": lr, "max_steps": max_steps, "max_time": max_time,
        "val_fraction": val_fraction, "eval_every": eval_every, "save_every": save_every, "keep": keep,
        "seed": seed, "device": device, "precision": precision,
    }  # fmt: skip
    given = {k: v for k, v in settings.items() if v is not None}  # the request tells given from default
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

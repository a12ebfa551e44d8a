"""The `train` command: turn its options into a training request, run it, and report how it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.options import (
    BatchSize,
    Cell,
    Corpus,
    DecayFraction,
    Dropout,
    Ema,
    Embed,
    EvalEvery,
    Hidden,
    JsonSummary,
    Layers,
    Lr,
    LrSchedule,
    MaxSteps,
    MaxTime,
    MinLrRatio,
    Precision,
    Quiet,
    ReplaceBadBytes,
    Seed,
    SeqLen,
    TrainDevice,
    ValFraction,
    WeightDecay,
    flag,
    given,
    setting,
)
from charlm.cli.output import print_json, train_summary
from charlm.config import TrainConfig


def train(
    corpus: Corpus = None,
    out: Annotated[Optional[Path], setting("Run folder for checkpoints and metrics.", "checkpoints/<corpus name>")] = (
        None
    ),
    cell: Cell = None,
    hidden: Hidden = None,
    layers: Layers = None,
    embed: Embed = None,
    dropout: Dropout = None,
    seq_len: SeqLen = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    lr_schedule: LrSchedule = None,
    min_lr_ratio: MinLrRatio = None,
    decay_fraction: DecayFraction = None,
    weight_decay: WeightDecay = None,
    ema: Ema = None,
    max_steps: MaxSteps = None,
    max_time: MaxTime = None,
    val_fraction: ValFraction = None,
    val: Annotated[Optional[str], setting("Validate on this file instead of a held-out fraction.")] = None,
    eval_every: EvalEvery = None,
    save_every: Annotated[Optional[int], setting("Steps between extra checkpoints.")] = None,
    keep: Annotated[Optional[int], setting("Recent checkpoints to keep, besides the best.", TrainConfig().keep)] = None,
    patience: Annotated[
        Optional[int],
        setting(
            "Validations without improvement before the learning rate is halved (at most twice, then training "
            "stops early); 0 trains the whole budget.",
            TrainConfig().patience,
        ),
    ] = None,
    seed: Seed = None,
    device: TrainDevice = None,
    precision: Precision = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out exactly where it stopped.")] = False,
    init_from: Annotated[Optional[Path], setting("Start from this checkpoint's weights (fine-tuning).")] = None,
    replace_bad_bytes: ReplaceBadBytes = False,
    json_out: JsonSummary = False,
    backend: Annotated[
        Optional[str], setting("Under torchrun: auto (NCCL on CUDA, gloo otherwise), gloo or nccl.", "auto")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Train a model on CORPUS; progress on stderr, checkpoints in the run folder.

    Settings whose default is auto are chosen for the budget, the text and the device's measured speed, unless
    given; stderr says what was chosen and why.

    Under torchrun (torchrun --nproc_per_node=N -m charlm train ...) the N processes train one model together.
    """
    from charlm import training
    from charlm.api import train_request
    from charlm.errors import TrainingInterrupted
    from charlm.ui.progress import TrainDisplay, train_done

    # Each setting under its ModelConfig/TrainConfig field name, never picked out of locals(): a renamed option
    # or field then fails (here, or in tests/test_cli_wiring.py) instead of being dropped without a word.
    settings = {
        "cell": cell, "hidden": hidden, "layers": layers, "embed": embed, "dropout": dropout,
        "seq_len": seq_len, "batch_size": batch_size, "lr": lr, "max_steps": max_steps, "max_time": max_time,
        "lr_schedule": lr_schedule, "min_lr_ratio": min_lr_ratio, "decay_fraction": decay_fraction,
        "weight_decay": weight_decay, "ema": ema,
        "val_fraction": val_fraction, "eval_every": eval_every, "save_every": save_every, "keep": keep,
        "patience": patience,
        "seed": seed, "device": device, "precision": precision,
    }  # fmt: skip
    req = training.TrainRequest(corpus or [], out, val, resume, init_from, replace_bad_bytes, given(settings))
    main_rank = training.RankInfo.from_env().is_main
    with TrainDisplay(quiet=quiet or not main_rank, names=flag) as display:
        try:
            run = train_request(req, display, progress=False, backend=backend, second_interrupt="exit", names=flag)
            result = run.result
        except TrainingInterrupted as e:  # stopped cleanly by Ctrl-C or SIGTERM: say where it is, exit 130/143
            result = e.run.result
    if main_rank:
        train_done(result, quiet)
        if json_out:
            print_json(train_summary(result))
    if result.interrupted:
        raise typer.Exit(143 if result.stopped_by == "SIGTERM" else 130)

"""The `compare` command: train several cells on the same text and budget, then print them side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from charlm.cli import options as opt
from charlm.cli.output import print_json
from charlm.errors import UsageError
from charlm.ui.console import say


def compare(
    corpus: opt.Corpus = None,
    cells: Annotated[str, typer.Option(help="Cells to train, in order; the first is the reference.")] = "gru,lstm,rnn",
    match: Annotated[
        str, typer.Option(help="params: each cell's width gives the reference's parameter count; width: one width.")
    ] = "params",
    out: Annotated[
        Optional[Path], opt.setting("Parent folder, one run folder per cell in it.", "checkpoints/<corpus>-compare")
    ] = None,
    hidden: opt.Hidden = None,
    layers: opt.Layers = None,
    embed: opt.Embed = None,
    dropout: opt.Dropout = None,
    seq_len: opt.SeqLen = None,
    batch_size: opt.BatchSize = None,
    lr: opt.Lr = None,
    lr_schedule: opt.LrSchedule = None,
    min_lr_ratio: opt.MinLrRatio = None,
    decay_fraction: opt.DecayFraction = None,
    weight_decay: opt.WeightDecay = None,
    ema: opt.Ema = None,
    max_steps: opt.MaxSteps = None,
    max_time: opt.MaxTime = None,
    val_fraction: opt.ValFraction = None,
    eval_every: opt.EvalEvery = None,
    seed: opt.Seed = None,
    device: opt.TrainDevice = None,
    precision: opt.Precision = None,
    replace_bad_bytes: opt.ReplaceBadBytes = False,
    json_out: opt.JsonSummary = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train each cell on CORPUS with the same split, seed and budget (each per cell), one after another.

    Each run is a normal run folder under --out (sample, evaluate, resume or plot it like any other);
    `charlm plot` of the parent folder draws one validation curve per cell.
    """
    from charlm import training
    from charlm.training.compare import compare as run_compare
    from charlm.training.compare import default_parent, parse_cells
    from charlm.ui.compare import compare_table
    from charlm.ui.explain_view import out_console
    from charlm.ui.progress import TrainDisplay

    if not corpus:
        raise UsageError("give a CORPUS file to train on (or '-' for standard input)")
    if "-" in corpus:
        raise UsageError("compare reads its corpus once per cell, so not from standard input ('-'); save it to a file")
    names = parse_cells(cells)
    settings = {
        "hidden": hidden, "layers": layers, "embed": embed, "dropout": dropout, "seq_len": seq_len,
        "batch_size": batch_size, "lr": lr, "max_steps": max_steps, "max_time": max_time,
        "lr_schedule": lr_schedule, "min_lr_ratio": min_lr_ratio, "decay_fraction": decay_fraction,
        "weight_decay": weight_decay, "ema": ema,
        "val_fraction": val_fraction, "eval_every": eval_every, "seed": seed, "device": device, "precision": precision,
    }  # fmt: skip
    parent = out if out is not None else default_parent(corpus)

    def train_one(cell: str, own: dict[str, Any], run: Path) -> Any:
        if not quiet:
            say(f"compare: {cell} ({names.index(cell) + 1} of {len(names)}) into {run}")
        req = training.TrainRequest(list(corpus), run, replace_bad_bytes=replace_bad_bytes, overrides=own)
        with TrainDisplay(quiet=quiet, names=opt.flag) as display:
            result = training.train(req, display)
        return result

    results = run_compare(names, parent, opt.given(settings), match, train_one)  # type: ignore[arg-type]
    if json_out:
        print_json({"parent": str(parent), "cells": [r.to_dict() for r in results]})
    else:
        out_console().print(compare_table(results))
    stopped = results[-1].stopped_by if results else None
    if stopped in ("SIGINT", "SIGTERM"):
        raise typer.Exit(143 if stopped == "SIGTERM" else 130)

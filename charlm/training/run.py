"""`charlm train` from a request to a finished run, in one process or as one rank of a torchrun job.

`train` is the one entry point, whether torchrun started the process or not. Under torchrun the process joins
the process group first; rank 0 checks the request and encodes the corpus into the run folder while the other
ranks wait, then sends them its plan, and they memory-map the id file it wrote. Every rank builds the same
rank-aware Trainer; rank 0 alone holds the run lock. When torchrun restarts its workers after a fault, a run
that has checkpoints resumes from the last one.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Literal

import torch

from charlm import checkpoint as ckpt_io
from charlm.checkpoint.schema import expected_shapes
from charlm.config import ModelConfig
from charlm.errors import CharlmError, UsageError, param
from charlm.tokenizer import CharTokenizer
from charlm.training import distributed
from charlm.training.distributed import RankInfo
from charlm.training.request import RunPlan, TrainRequest, plan_run
from charlm.training.trainer import OnEvent, TrainData, Trainer, TrainResult, warn


def train(
    req: TrainRequest,
    on_event: OnEvent | None = None,
    backend: str | None = None,
    *,
    stop: threading.Event | None = None,
    second_interrupt: Literal["exit", "raise"] = "exit",
) -> TrainResult:
    """Check, lock the run folder, train; the lock is released however training ends.

    `backend` (auto, gloo or nccl) applies only under torchrun; `on_event` hears only rank 0. Training stops
    cleanly (after its current step, saving a checkpoint) once `stop` is set (stopped_by "stop"), and, when
    called from the main thread, on Ctrl-C or SIGTERM (see `stop_on_signals`); from any other thread no signal
    handler is installed."""
    rank = RankInfo.from_env()
    if backend is not None and not rank.launched:
        raise UsageError(f"{param('backend')} applies only to a run launched by torchrun")
    on_event = on_event if rank.is_main else None
    device = req.overrides.get("device", "auto")
    if rank.launched and torch.cuda.is_available() and device != "cpu":
        torch.cuda.set_device(rank.local_rank)
    if rank.restart and req.out is not None and not req.resume and ckpt_io.list_checkpoints(req.out):
        req = replace(req, resume=True)  # torchrun restarted the workers after a fault: continue the run
        warn(on_event, f"restart {rank.restart}: resuming from the last checkpoint in {req.out}")
    trainer = None
    with distributed.process_group(rank, device, backend or "auto"), ExitStack() as lock:
        try:
            trainer = prepare(req, on_event, rank, lock)  # rank 0 locks the run folder before writing in it
            distributed.barrier()
            with stop_on_signals(trainer, second_interrupt), stop_when_set(trainer, stop):
                result = trainer.fit()
            distributed.barrier()
            return result
        finally:
            if trainer is not None:
                trainer.net = trainer.model  # release DDP (and its hold on the process group) before the group ends


def prepare(
    req: TrainRequest, on_event: OnEvent | None = None, rank: RankInfo | None = None, hold: ExitStack | None = None
) -> Trainer:
    """Check the request and build this process's Trainer; raises UsageError listing every problem.

    Rank 0 checks and encodes the corpus while the others wait; they then build theirs from its plan. With
    `hold`, rank 0's run lock stays held by that stack (else it is released once the corpus is encoded)."""
    rank = rank or RankInfo()
    plan, failure = None, None
    if rank.is_main:
        try:
            plan = plan_run(req, on_event, rank.world_size, hold)
        except CharlmError as e:
            failure = e
    plan = distributed.broadcast_object(plan)  # rank 0's plan on every rank, or None if it failed
    if plan is None:
        raise failure or CharlmError(f"rank {rank.rank}: rank 0 could not start the run (its error says why)")
    return build(plan, on_event, rank)


def build(plan: RunPlan, on_event: OnEvent | None = None, rank: RankInfo | None = None) -> Trainer:
    """The Trainer a plan describes, reading its ids through a memory map."""
    tok = plan.corpus.tokenizer
    data = TrainData(tok, plan.corpus.train_ids, plan.corpus.val_ids, plan.info)
    weights = None
    if plan.init_from is not None:
        weights = init_weights(plan.init_from, tok, plan.model)
    try:
        trainer = Trainer(plan.run, plan.model, plan.train, data, on_event, plan.resume_from, weights, rank)
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CharlmError(f"cannot start training: {first}") from None
    trainer.auto = plan.auto
    return trainer


def init_weights(ck: ckpt_io.Checkpoint, tok: CharTokenizer, model: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights a fine-tuning run starts from: the checkpoint's (checked against its own config as they are
    read), their vocabulary rows remapped to `tok`, then checked against the model about to be built."""
    weights = ckpt_io.read_tensors(ck)
    if ck.tokenizer.vocab_size != tok.vocab_size:
        weights = remap_vocab(weights, ck.tokenizer, tok)
    ckpt_io.check_fits(
        ck.path / ckpt_io.WEIGHTS, weights, expected_shapes(model.to_dict()), "the model this run trains (--init-from)"
    )
    return weights


def remap_vocab(weights: dict[str, torch.Tensor], old: CharTokenizer, new: CharTokenizer) -> dict[str, torch.Tensor]:
    """Weights for a larger vocabulary: rows of known characters are copied, new characters start fresh."""
    out = dict(weights)
    idx = torch.tensor([old.id_of(c) if c in old else -1 for c in new.chars])
    known = idx >= 0
    for name, std in (("embed.weight", 1.0), ("head.weight", 0.01), ("head.bias", 0.0)):
        w = weights[name]
        fresh = torch.randn((new.vocab_size, *w.shape[1:]), dtype=w.dtype) * std
        fresh[known] = w[idx[known]]
        out[name] = fresh
    return out


@contextmanager
def stop_when_set(trainer: Trainer, stop: threading.Event | None) -> Iterator[None]:
    """Ask the trainer to stop (after its current step, saving) once `stop` is set: checked at each event it
    reports, which is at least once a step."""
    if stop is None:
        yield
        return
    emit = trainer.emit

    def checking(kind: str, info: dict[str, object]) -> None:
        emit(kind, info)  # first: the caller's own callback may be what sets it
        if stop.is_set() and not trainer.stop_requested:
            trainer.stop_requested = "stop"

    trainer.emit = checking
    try:
        yield
    finally:
        trainer.emit = emit


@contextmanager
def stop_on_signals(trainer: Trainer, second: Literal["exit", "raise"] = "exit") -> Iterator[None]:
    """Ctrl-C or SIGTERM asks the trainer to stop after its current step and save; a second Ctrl-C quits at
    once (every checkpoint already on disk is whole, since each is renamed into place only when complete):
    it ends the process (`second` "exit"), or raises KeyboardInterrupt ("raise", for a program or notebook
    that goes on). Python lets only the main thread install signal handlers: in any other, nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if trainer.stop_requested and second == "raise":
            raise KeyboardInterrupt
        if trainer.stop_requested:
            show_cursor = b"\x1b[?25h" if os.isatty(2) else b""  # a live progress bar hides it
            last = ckpt_io.list_checkpoints(trainer.run)
            where = f"; the last checkpoint is {last[-1].path}" if last else ""
            os.write(2, show_cursor + f"\nstopped at once by a second interrupt{where}\n".encode())
            os._exit(128 + signum)
        trainer.stop_requested = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)

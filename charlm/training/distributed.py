"""Data-parallel training on several processes with torch.distributed and DistributedDataParallel.

charlm does not start processes itself: ``torchrun`` does, and sets RANK, WORLD_SIZE and LOCAL_RANK, which is
how a run knows it is one of several. Every rank builds the same model from the same seed and reads its own
share of the batch's parallel streams: ``--batch-size`` is the global number of streams, and rank r reads the
contiguous block of rows [r * B/N, (r + 1) * B/N). DDP averages the gradients, so N processes take exactly
the step one process would take over the whole batch (up to float rounding).

Only rank 0 reports progress, validates, writes ``metrics.jsonl`` and writes checkpoints. The carried hidden
state and the RNG states are per rank: they are gathered to rank 0 for each checkpoint, so a checkpoint holds
the full (layers, batch, hidden) state and loads in a single process; on resume each rank takes its rows back.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charlm import checkpoint as ckpt_io
from charlm.data.corpus import TokenStreams
from charlm.errors import CharlmError, UsageError
from charlm.training.trainer import Trainer, TrainResult

BACKENDS = ("auto", "gloo", "nccl")
_SIGNALS = {"SIGINT": 2, "SIGTERM": 15}  # what stop_requested holds, as numbers that can be all-reduced


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart: int = 0  # how many times torchrun has restarted the worker group (--max-restarts)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's share of the batch's streams: one contiguous block of rows."""
        per = batch_size // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def rank_info() -> RankInfo:
    """Where this process stands, from the variables torchrun sets; one process alone when they are absent."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return RankInfo()
    return RankInfo(
        int(env["RANK"]),
        int(env["WORLD_SIZE"]),
        int(env.get("LOCAL_RANK", 0)),
        int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
    )


def launched() -> bool:
    """True in a process that torchrun started (even with one process: it still gets a process group)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def init(device: torch.device, backend: str = "auto") -> str:
    """Join the process group torchrun set up: NCCL for CUDA, gloo otherwise, unless `backend` says."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UsageError(f"--backend nccl needs CUDA GPUs, but this run trains on {device.type}; use gloo")
    if not dist.is_initialized():
        timeout = timedelta(minutes=10)
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
        if backend == "nccl":
            kwargs["device_id"] = device
        # torchrun's store outlives a restart of the workers (--max-restarts) and still holds the dead group's
        # addresses; keying this attempt's entries by the restart count keeps the new group from reading them.
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        store = dist.PrefixStore(f"charlm/attempt-{rank_info().restart}", store)
        dist.init_process_group(store=store, rank=rank, world_size=world, **kwargs)
    return backend


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` as rank `src` has it, on every rank (any picklable value; only between our own processes)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(t: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
    """`t` reduced over all ranks (a new tensor on t's device)."""
    if not dist.is_initialized():
        return t
    work = t.detach().to(_comm_device(), copy=True)
    dist.all_reduce(work, op=op)
    return work.to(t.device)


def gather_cat(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's `t` concatenated along `dim` in rank order (on every rank; all shapes must agree)."""
    if not dist.is_initialized():
        return t
    work = t.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(work) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, work)
    return torch.cat(parts, dim=dim).to(t.device)


class RankStreams(TokenStreams):
    """One rank's rows of the global streams; `chars_per_batch` counts what all ranks read in one step."""

    def __init__(self, ids: Any, num_streams: int, seq_len: int, info: RankInfo) -> None:
        super().__init__(ids, num_streams, seq_len, rows=info.rows(num_streams))
        self.world_size = info.world_size

    @property
    def chars_per_batch(self) -> int:
        return self._x.shape[0] * self.seq_len * self.world_size


class DistributedTrainer(Trainer):
    """A Trainer whose steps are taken together by all ranks; rank 0 alone reports and writes."""

    def __init__(self, *args: Any, backend: str = "auto", info: RankInfo | None = None, **kwargs: Any) -> None:
        self.info = info or rank_info()
        self.saved_world_size: int | None = None
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        if cfg.batch_size % self.info.world_size:
            raise UsageError(
                f"--batch-size {cfg.batch_size} (the global number of streams) cannot be split evenly across "
                f"{self.info.world_size} processes; use a multiple of {self.info.world_size}"
            )
        self.backend = init(self.device, backend)
        offset = self.streams.offset
        self.streams = RankStreams(self.data.train_ids, cfg.batch_size, cfg.seq_len, self.info)
        self.streams.offset = offset
        ids = [self.device.index or 0] if self.device.type == "cuda" else None
        self.net = DistributedDataParallel(self.model, device_ids=ids)  # broadcasts rank 0's weights
        if not self.info.is_main:
            self.emit = lambda kind, info: None
        if self.saved_world_size is None:  # a new run: every rank has just seeded the same generator
            self._seed_rank()
        if self.saved_world_size not in (None, self.info.world_size) and self.model.config.dropout > 0:
            self.emit(
                "warn",
                {
                    "message": f"resuming a {self.saved_world_size}-process run on {self.info.world_size}: "
                    "dropout masks will differ from an uninterrupted run (the data and state continue exactly)"
                },
            )

    # ------------------------------------------------------------ per-rank state in and out of checkpoints

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        t = super()._state_tensors()  # rank 0's RNG is saved under the plain names a single process reads
        if self.hidden is not None:
            t["hidden"] = gather_cat(self.hidden, dim=1)
        for name in [k for k in t if k.startswith("rng.")]:
            for r, state in enumerate(gather_cat(t[name].unsqueeze(0), dim=0)):
                t[f"{name}.rank{r}"] = state
        return t

    def _meta(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**super()._meta(metrics), "distributed": {"world_size": self.info.world_size}}

    def _restore(self, ck: ckpt_io.Checkpoint) -> None:
        super()._restore(ck)
        self.saved_world_size = int(ck.meta.get("distributed", {}).get("world_size", 1))
        if self.hidden is not None:
            self.hidden = self.hidden[:, self.info.rows(self.cfg.batch_size)].contiguous()
        t = ckpt_io.read_tensors(ck.path, ckpt_io.STATE)
        if self.saved_world_size == self.info.world_size:
            torch.set_rng_state(t.get(f"rng.cpu.rank{self.info.rank}", t["rng.cpu"]))
            if self.device.type == "cuda" and f"rng.cuda.rank{self.info.rank}" in t:
                torch.cuda.set_rng_state(t[f"rng.cuda.rank{self.info.rank}"], self.device)
        else:
            self._seed_rank()

    def _seed_rank(self) -> None:
        """Ranks other than 0 draw their own dropout masks (rank 0 keeps the stream a single process would use)."""
        if self.info.rank:
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.info.rank + self.step)

    def save(self, metrics: dict[str, Any]) -> Path:
        state = self._state_tensors()  # every rank takes part in the gathers
        if not self.info.is_main:
            return ckpt_io.step_dir(self.run, self.step)
        path = ckpt_io.save(self.run, self._meta(metrics), self.model.state_dict(), state)
        ckpt_io.prune(self.run, self.cfg.keep)
        self.emit("save", {"step": self.step, "path": path})
        return path

    # ------------------------------------------------------------ keeping the ranks in step

    def done_reason(self) -> str | None:
        """All ranks agree: on the slowest rank's clock (which drives the schedule) and on any stop signal."""
        flag = _SIGNALS.get(self.stop_requested or "", 0)
        both = all_reduce(torch.tensor([self.elapsed, float(flag)], dtype=torch.float64), dist.ReduceOp.MAX)
        self.elapsed = float(both[0])
        if both[1] and not self.stop_requested:
            self.stop_requested = next(k for k, v in _SIGNALS.items() if v == int(both[1]))
        return super().done_reason()

    def train_step(self) -> tuple[float, bool]:
        loss, ok = super().train_step()
        # The reported loss is the mean over the whole batch, as a single process would report it.
        total = all_reduce(torch.tensor([loss], dtype=torch.float64))
        return float(total[0]) / self.info.world_size, ok

    def validate(self) -> float | None:
        """Rank 0 scores the validation text with the same code as a single process; the others wait."""
        return broadcast_object(super().validate() if self.info.is_main else None)

    def _checkpoint(self, train_loss: float | None, evaluate: bool) -> Path:
        if self.info.is_main:
            return super()._checkpoint(train_loss, evaluate)
        if evaluate:
            val = self.validate()
            if val is not None and (self.best_val_bpc is None or val < self.best_val_bpc):
                self.best_val_bpc = val
        return self.save({})


def _run_lock(trainer: Trainer) -> Any:
    return ckpt_io.RunLock(trainer.run) if is_main() else nullcontext()


def _prepare_in_turn(req: Any, on_event: Any, make: Any, info: RankInfo, backend: str) -> DistributedTrainer:
    """Rank 0 checks the request and encodes the corpus into the run folder first; the other ranks then find
    that id file there and memory-map it, instead of each encoding the corpus again."""
    from charlm.training import request as run
    from charlm.training.trainer import pick_device

    init(pick_device(req.overrides.get("device", "auto")), backend)
    out, failure = None, None
    if info.is_main:
        try:  # every check, and the encoding, but no trainer yet: building one takes all ranks
            out = run.prepare(req, None, trainer_cls=lambda run_dir, *args, **kwargs: run_dir)
        except CharlmError as e:
            failure = e
    out = broadcast_object(out)  # rank 0's run folder (the default one included), or None if it failed
    if out is None:
        raise failure or CharlmError(f"rank {info.rank}: rank 0 could not start the run (its error says why)")
    req.out = out
    return run.prepare(req, on_event if info.is_main else None, trainer_cls=make)


def train(req: Any, on_event: Any = None, backend: str = "auto") -> TrainResult:
    """`charlm train` as one rank of a torchrun job: check, wait for every rank, lock (rank 0), train together."""
    from charlm.training import request as run

    info = rank_info()
    if torch.cuda.is_available() and req.overrides.get("device", "auto") != "cpu":
        torch.cuda.set_device(info.local_rank)
    if info.restart and req.out is not None and not req.resume and ckpt_io.list_checkpoints(req.out):
        req.resume = True  # torchrun restarted the workers after a fault: continue from the last checkpoint
        if info.is_main and on_event is not None:
            on_event("warn", {"message": f"restart {info.restart}: resuming from the last checkpoint in {req.out}"})

    def make(*args: Any, **kwargs: Any) -> DistributedTrainer:
        return DistributedTrainer(*args, backend=backend, info=info, **kwargs)

    trainer = None
    try:
        trainer = _prepare_in_turn(req, on_event, make, info, backend)
        barrier()  # every rank has checked the run folder before rank 0 locks it
        with _run_lock(trainer), run.stop_on_signals(trainer):
            result = trainer.fit()
        barrier()
        return result
    except (RuntimeError, dist.DistBackendError) as e:
        raise CharlmError(f"rank {info.rank}: distributed training failed: {str(e).splitlines()[0]}") from None
    finally:
        if trainer is not None:
            trainer.net = trainer.model  # release DDP (and its hold on the process group) before the group ends
        teardown()

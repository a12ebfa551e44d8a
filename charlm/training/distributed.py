"""The torch.distributed hooks of data-parallel training: which rank this is, the process group, and the few
collective operations the Trainer uses. The Trainer is the same class on every rank.

charlm does not start processes itself: ``torchrun`` does, and sets RANK, WORLD_SIZE and LOCAL_RANK, which is
how a run knows it is one of several. Every rank builds the same model from the same seed and reads its own
share of the batch's parallel streams: ``--batch-size`` is the global number of streams, and rank r reads the
contiguous block of rows [r * B/N, (r + 1) * B/N). DDP averages the gradients, so N processes take exactly
the step one process would take over the whole batch (up to float rounding).

Only rank 0 reports progress, validates, writes ``metrics.jsonl`` and writes checkpoints. The carried hidden
state and the RNG states are per rank: they are gathered to rank 0 for each checkpoint, so a checkpoint holds
the full (layers, batch, hidden) state and loads in a single process; on resume each rank takes its rows back.
In a process that belongs to no process group, every collective here returns its input unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from charlm.device import pick_device
from charlm.errors import CharlmError, UsageError, param

BACKENDS = ("auto", "gloo", "nccl")
_SIGNALS = {"SIGINT": 2, "SIGTERM": 15}  # what stop_requested holds, as numbers that can be all-reduced


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart: int = 0  # how many times torchrun has restarted the worker group (--max-restarts)
    launched: bool = False  # started by torchrun, so part of a process group (even a group of one)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's share of the batch's streams: one contiguous block of rows."""
        per = batch_size // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    @classmethod
    def from_env(cls) -> RankInfo:
        """Where this process stands, from the variables torchrun sets; one process alone when they are absent."""
        env = os.environ
        if not all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            return cls()
        restart = int(env.get("TORCHELASTIC_RESTART_COUNT", 0))
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]), restart, launched=True)


@contextmanager
def process_group(info: RankInfo, device: str = "auto", backend: str = "auto") -> Iterator[None]:
    """Join torchrun's process group for the body and leave it after, with a failure of the group as one line.
    Nothing at all for a process that torchrun did not start."""
    if not info.launched:
        yield
        return
    try:
        _init(pick_device(device), backend, info.restart)
        yield
    except (RuntimeError, dist.DistBackendError) as e:
        raise CharlmError(f"rank {info.rank}: distributed training failed: {str(e).splitlines()[0]}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _init(device: torch.device, backend: str, restart: int) -> None:
    """NCCL for CUDA, gloo otherwise, unless `backend` says."""
    if backend not in BACKENDS:
        raise UsageError(f"{param('backend')} must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UsageError(f"{param('backend')} nccl needs CUDA GPUs, but this run trains on {device.type}; use gloo")
    timeout = timedelta(minutes=10)
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timeout}
    if backend == "nccl":
        kwargs["device_id"] = device
    # torchrun's store outlives a restart of the workers (--max-restarts) and still holds the dead group's
    # addresses; keying this attempt's entries by the restart count keeps the new group from reading them.
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    store = dist.PrefixStore(f"charlm/attempt-{restart}", store)
    dist.init_process_group(store=store, rank=rank, world_size=world, **kwargs)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model under DDP, which averages gradients across ranks (and broadcasts rank 0's weights now)."""
    if not dist.is_initialized():
        return model
    return DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None)


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


def mean(value: float) -> float:
    """The mean of `value` over all ranks: a loss of each rank's rows becomes the loss of the whole batch."""
    if not dist.is_initialized():
        return value
    total = all_reduce(torch.tensor([value], dtype=torch.float64))
    return float(total[0]) / dist.get_world_size()


def agree(elapsed: float, stop: str | None) -> tuple[float, str | None]:
    """The slowest rank's clock (which drives the schedule) and any rank's stop signal, on every rank."""
    if not dist.is_initialized():
        return elapsed, stop
    flag = _SIGNALS.get(stop or "", 0)
    both = all_reduce(torch.tensor([elapsed, float(flag)], dtype=torch.float64), dist.ReduceOp.MAX)
    if both[1] and not stop:
        stop = next(k for k, v in _SIGNALS.items() if v == int(both[1]))
    return float(both[0]), stop

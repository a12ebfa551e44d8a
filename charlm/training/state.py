"""A training run's resume state in and out of checkpoints: optimizer moments, RNG states, the hidden state.

With these (and the step, the stream offset and the schedule's scale, kept in checkpoint.json) a resumed run
continues exactly. Under torchrun the carried hidden state is gathered from all ranks, so a checkpoint holds
the full (layers, batch, hidden) state and loads in a single process, and every rank's RNG states are saved
under `rng.cpu.rank<r>` (rank 0's also under the plain names, which a single process reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from charlm import checkpoint as ckpt_io
from charlm.errors import CharlmError, CheckpointError
from charlm.training import distributed
from charlm.training.distributed import RankInfo


def state_tensors(
    opt: torch.optim.Optimizer, hidden: torch.Tensor | None, device: torch.device, rank: RankInfo
) -> dict[str, torch.Tensor]:
    """The tensors of state.safetensors (on every rank: the gathers take them all)."""
    t: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    if device.type == "cuda":
        t["rng.cuda"] = torch.cuda.get_rng_state(device)
    if hidden is not None:
        t["hidden"] = distributed.gather_cat(hidden, dim=1)
    for i, s in opt.state_dict()["state"].items():
        for k, v in s.items():
            t[f"optim.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    if rank.launched:
        for name in [k for k in t if k.startswith("rng.")]:
            for r, state in enumerate(distributed.gather_cat(t[name].unsqueeze(0), dim=0)):
                t[f"{name}.rank{r}"] = state
    return t


def load_optimizer(opt: torch.optim.Optimizer, t: dict[str, torch.Tensor], ck: ckpt_io.Checkpoint) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    groups = ck.meta["optimizer"]["param_groups"]
    for g in groups:
        g["betas"] = tuple(g["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CharlmError(f"{ck.path / ckpt_io.STATE}: optimizer state does not fit the model ({e})") from None


def restore_rng(t: dict[str, torch.Tensor], device: torch.device, rank: RankInfo, saved_world_size: int) -> bool:
    """Put back rank 0's RNG states (a single process's), then under torchrun this rank's own when as many
    ranks saved them. False when they did not: this rank must then draw a stream of its own."""
    torch.set_rng_state(t["rng.cpu"])
    if "rng.cuda" in t and device.type == "cuda":
        torch.cuda.set_rng_state(t["rng.cuda"], device)
    if not rank.launched:
        return True
    if saved_world_size != rank.world_size:
        return False
    torch.set_rng_state(t.get(f"rng.cpu.rank{rank.rank}", t["rng.cpu"]))
    if device.type == "cuda" and f"rng.cuda.rank{rank.rank}" in t:
        torch.cuda.set_rng_state(t[f"rng.cuda.rank{rank.rank}"], device)
    return True


def save(run: Path, meta: dict[str, Any], weights: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> Path:
    """Write a checkpoint; if that fails (disk full, folder not writable), stop with an error that says
    which checkpoint is the last good one."""
    try:
        return ckpt_io.save(run, meta, weights, state)
    except CheckpointError as e:
        ckpts = ckpt_io.list_checkpoints(run)
        last = f"the last good checkpoint is {ckpts[-1].path}" if ckpts else "no checkpoint was saved before"
        resume = f"make room, then continue with: charlm train --resume --out {run}"
        raise CheckpointError(f"{e}; {last} ({resume})") from None

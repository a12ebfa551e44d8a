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
from charlm.errors import CheckpointError
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


MOMENTS = ("exp_avg", "exp_avg_sq")


def _bad(ck: ckpt_io.Checkpoint, what: str) -> CheckpointError:
    return CheckpointError(f"{ck.path / ckpt_io.STATE}: {what}; the resume state does not fit the model")


def check_state(
    t: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    ck: ckpt_io.Checkpoint,
    hidden_shape: tuple[int, ...],
    trained: dict[str, torch.Tensor] | None = None,
) -> None:
    """Every tensor of state.safetensors against what it must be, before any is used: each optimizer moment
    the shape and dtype of its parameter (a smaller one would make the fused step read past its end), the step
    a scalar, the RNG states byte tensors of the generator's size, the carried state (layers, batch, hidden);
    with a weight average, `trained` (name in the state file -> the model's tensor) the weights being trained
    and the average's count."""
    if trained is not None:
        missing = [k for k in trained if k not in t] + [k for k in ("ema.n_averaged",) if k not in t]
        if missing:
            raise _bad(ck, f"{missing[0]} is missing (the run averages its weights)")
        for k, p in trained.items():
            if tuple(t[k].shape) != tuple(p.shape) or not t[k].is_floating_point():
                raise _bad(ck, f"{k} has shape {tuple(t[k].shape)}, not {tuple(p.shape)}")
        n = t["ema.n_averaged"]
        if n.numel() != 1 or n.is_floating_point() or int(n) < 0:
            raise _bad(ck, "ema.n_averaged is not a count")
    params = [p for g in opt.param_groups for p in g["params"]]
    rng_size = tuple(torch.get_rng_state().shape)
    want_shape: tuple[int, ...]
    for k, v in t.items():
        if k.startswith("optim."):
            parts = k.split(".")
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params):
                raise _bad(ck, f"{k} names no parameter of the model (it has {len(params)})")
            p, name = params[int(parts[1])], parts[2]
            if name == "step":
                want_shape, want_dtype = (), torch.float32
            elif name in MOMENTS:
                want_shape, want_dtype = tuple(p.shape), p.dtype
            else:
                raise _bad(ck, f"{k} is not AdamW state")
        elif k == "hidden":  # float32, or bfloat16 from a step under autocast
            floats = (torch.float32, torch.bfloat16)
            want_shape, want_dtype = hidden_shape, v.dtype if v.dtype in floats else torch.float32
        elif k == "rng.cpu" or k.startswith("rng.cpu.rank"):
            want_shape, want_dtype = rng_size, torch.uint8
        elif k.startswith("rng.cuda"):
            if v.dtype != torch.uint8 or v.dim() != 1:
                raise _bad(ck, f"{k} is not a random generator state")
            continue
        else:
            continue  # a name a newer charlm writes: not used here
        if tuple(v.shape) != want_shape or v.dtype != want_dtype:
            raise _bad(
                ck,
                f"{k} is {str(v.dtype).removeprefix('torch.')} of shape {tuple(v.shape)}, "
                f"not {str(want_dtype).removeprefix('torch.')} of shape {want_shape}",
            )
    if "rng.cpu" not in t:
        raise _bad(ck, "rng.cpu is missing")
    for i in sorted({int(k.split(".")[1]) for k in t if k.startswith("optim.")}):
        lacking = [n for n in ("step", *MOMENTS) if f"optim.{i}.{n}" not in t]
        if lacking:
            raise _bad(ck, f"optim.{i} lacks {', '.join(lacking)}")


def load_optimizer(opt: torch.optim.Optimizer, t: dict[str, torch.Tensor], ck: ckpt_io.Checkpoint) -> None:
    """The optimizer's moments and settings from a checkpoint whose state check_state has checked."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    groups = [dict(g) for g in ck.meta["optimizer"]["param_groups"]]
    own = [list(range(len(g["params"]))) for g in opt.param_groups]
    offset = 0
    for g, n in zip(groups, own, strict=False):
        want = list(range(offset, offset + len(n)))
        if g["params"] != want:
            raise _bad(ck, f"the optimizer's groups in {ckpt_io.META} name other parameters than the model's")
        offset += len(n)
    if len(groups) != len(own):
        raise _bad(ck, f"{ckpt_io.META} has {len(groups)} optimizer group(s), the model {len(own)}")
    for g in groups:
        g["betas"] = tuple(g["betas"])
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _bad(ck, f"the optimizer refused it ({first})") from None


def stream_offset(meta: dict[str, Any], stream_len: int, seq_len: int, ck: ckpt_io.Checkpoint) -> int:
    """The position in the streams a checkpoint continues from, checked against the text's streams."""
    offset = meta["data"]["offset"]
    if not 0 <= offset <= max(stream_len - seq_len, 0):
        raise CheckpointError(
            f"{ck.path / ckpt_io.META}: data.offset {offset} lies outside the training text's streams "
            f"(0 to {max(stream_len - seq_len, 0)})"
        )
    return int(offset)


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

"""The only module that reads or writes checkpoints.

A run folder holds one sub-folder per checkpoint, ``step-00001200/``, with
  checkpoint.json      format version, model and training configs, vocabulary, step, metrics, data position
  model.safetensors    the weights (all that sampling and evaluation read)
  state.safetensors    optimizer moments, RNG states and the carried hidden state, for an exact --resume
plus ``metrics.jsonl`` (one line per validation) and a ``.lock`` file held while a run trains.

No pickle anywhere: JSON and safetensors hold only data, so loading a checkpoint cannot run code.
A checkpoint is written into a temporary folder, each file fsynced, then renamed into place in one step,
so a crash at any moment leaves every earlier checkpoint whole and never a half-written one under its name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from charlm import __version__
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CheckpointError, RunLockedError, UsageError
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer

FORMAT = "charlm-checkpoint"
VERSION = 1
META, WEIGHTS, STATE = "checkpoint.json", "model.safetensors", "state.safetensors"
REQUIRED = ("format", "version", "model", "train", "vocab", "step")
DEFAULT_ROOT = Path("checkpoints")


@dataclass
class Checkpoint:
    path: Path  # the step-NNNNNNNN folder
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def val_bpc(self) -> float:
        v = self.meta.get("metrics", {}).get("val_bpc")
        return float(v) if v is not None and math.isfinite(v) else math.inf

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model"])

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.meta["train"])

    @property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer.from_dict(self.meta["vocab"])


def step_dir(run: Path, step: int) -> Path:
    return run / f"step-{step:08d}"


# ---------------------------------------------------------------- writing


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, write: Any) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save(run: Path, meta: dict[str, Any], weights: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> Path:
    """Write one checkpoint atomically into `run`; returns its folder. Raises CheckpointError on I/O failure."""
    meta = {"format": FORMAT, "version": VERSION, "charlm_version": __version__, **meta}
    final = step_dir(run, int(meta["step"]))
    tmp = run / f".tmp-{final.name}-{os.getpid()}"
    try:
        run.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
        _write_file(tmp / WEIGHTS, lambda p: save_file(cpu, str(p)))
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        _write_file(tmp / STATE, lambda p: save_file(cpu, str(p)))
        _write_file(tmp / META, lambda p: p.write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n"))
        _fsync_dir(tmp)
        old = None
        if final.exists():  # the same step saved again (e.g. right after a resume): swap, then drop the old
            old = run / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(run)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not save a checkpoint in {run}: {e.strerror or e}; nothing was saved") from None
    return final


def prune(run: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints and the best one; returns what was deleted."""
    ckpts = list_checkpoints(run)
    keep_set = {c.path for c in ckpts[-keep:]}
    best = best_of(ckpts)
    if best is not None:
        keep_set.add(best.path)
    gone = [c.path for c in ckpts if c.path not in keep_set]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)  # the first validation can come before the first checkpoint
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """Every whole line of metrics.jsonl; a line cut short by a crash is skipped."""
    out = []
    try:
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---------------------------------------------------------------- reading


def read_meta(folder: Path) -> dict[str, Any]:
    """checkpoint.json of a step folder, checked field by field. Raises CheckpointError naming the file."""
    f = folder / META
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{f}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: not a readable checkpoint description ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a charlm checkpoint")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"{f}: field(s) missing: {', '.join(missing)}")
    if not isinstance(meta["version"], int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{f}: format version {meta['version']} is newer than this charlm reads ({VERSION}); upgrade charlm"
        )
    try:
        (
            ModelConfig.from_dict(meta["model"]),
            TrainConfig.from_dict(meta["train"]),
            CharTokenizer.from_dict(meta["vocab"]),
        )
        int(meta["step"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{f}: a field has a wrong value ({e})") from None
    return meta


def read_tensors(folder: Path, name: str = WEIGHTS) -> dict[str, torch.Tensor]:
    f = folder / name
    if not f.is_file():
        raise CheckpointError(f"{f}: missing")
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{f}: damaged or not a safetensors file ({str(e).splitlines()[0]})") from None


def list_checkpoints(run: Path) -> list[Checkpoint]:
    """The readable checkpoints of a run, oldest step first; damaged ones are left out."""
    out = []
    for d in sorted(run.glob("step-*")):
        try:
            out.append(Checkpoint(d, read_meta(d)))
        except CheckpointError:
            continue
    return sorted(out, key=lambda c: c.step)


def best_of(ckpts: list[Checkpoint]) -> Checkpoint | None:
    scored = [c for c in ckpts if math.isfinite(c.val_bpc)]
    return min(scored, key=lambda c: (c.val_bpc, -c.step)) if scored else (ckpts[-1] if ckpts else None)


def find_runs(root: Path = DEFAULT_ROOT) -> list[Path]:
    """Run folders under `root`, most recently trained last."""
    runs = []
    for d in root.glob("*/") if root.is_dir() else []:
        steps = list(d.glob("step-*"))
        if steps:
            runs.append((max(s.stat().st_mtime for s in steps), d))
    return [d for _, d in sorted(runs)]


Which = Literal["best", "latest"]


def resolve(path: Path | None, which: Which = "best", root: Path = DEFAULT_ROOT) -> Checkpoint:
    """A checkpoint from a run folder, a step folder, a file inside one, or (None) the newest run under `root`."""
    if path is None:
        runs = find_runs(root)
        if not runs:
            raise CheckpointError(
                f"no checkpoint given and none found under {root}/ (looked for {root}/*/step-*); "
                "train one with: charlm train CORPUS"
            )
        path = runs[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if path.is_file():
        if path.parent.name.startswith("step-"):
            path = path.parent
        else:
            raise CheckpointError(
                f"{path}: not a charlm checkpoint (give a run folder, a step-* folder or a file inside one)"
            )
    if (path / META).exists():
        return Checkpoint(path, read_meta(path))
    ckpts = list_checkpoints(path)
    if not ckpts:
        found = sorted(p.name for p in path.iterdir())[:8]
        raise CheckpointError(
            f"{path}: holds no readable checkpoint (no step-*/{META}); it holds: {', '.join(found) or 'nothing'}"
        )
    return (best_of(ckpts) if which == "best" else ckpts[-1]) or ckpts[-1]


def load_weights(ckpt: Checkpoint, model: torch.nn.Module) -> None:
    """Load model.safetensors into `model`, with a one-line error if names or shapes do not fit."""
    tensors = read_tensors(ckpt.path, WEIGHTS)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or wrong:
        what = f"missing {', '.join(missing)}" if missing else ""
        if wrong:
            k = wrong[0]
            what += ("; " if what else "") + (
                f"{k} has shape {tuple(tensors[k].shape)} but the config needs {tuple(expected[k].shape)}"
            )
        raise CheckpointError(f"{ckpt.path / WEIGHTS}: does not fit the model in {META}: {what}")
    model.load_state_dict({k: tensors[k] for k in expected})


def load_model(ckpt: Checkpoint, device: torch.device | str = "cpu") -> tuple[CharGRU, CharTokenizer]:
    """The model, in eval mode on `device`, and its tokenizer: all that sampling and scoring need."""
    model = CharGRU(ckpt.model_config)
    load_weights(ckpt, model)
    return model.to(device).eval(), ckpt.tokenizer


# ---------------------------------------------------------------- the run lock


def is_locked(run: Path) -> bool:
    """Whether a live process holds the run's lock (checked without taking it)."""
    import fcntl

    try:
        fd = os.open(run / ".lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class RunLock:
    """An exclusive lock on a run folder, so that two trainings never write into the same one.

    The kernel drops a flock when its process dies, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, run: Path) -> None:
        self.run = run
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        try:
            self.run.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"--out {self.run}: cannot create the run folder ({e.strerror or e})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RunLockedError(
                f"{self.run}: another charlm train is writing to this run folder; wait for it or use another --out"
            ) from None
        for stale in self.run.glob(".tmp-step-*"):  # left by a process killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
        for old in self.run.glob(".old-step-*"):  # killed between the two renames of a re-save
            final = self.run / old.name.removeprefix(".old-").rsplit("-", 1)[0]
            if final.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(old, final)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

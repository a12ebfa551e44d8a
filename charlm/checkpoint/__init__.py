"""The only module that reads or writes checkpoints.

A run folder holds one sub-folder per checkpoint, ``step-00001200/``, with
  checkpoint.json      format version, model and training configs, vocabulary, step, metrics, data position
  model.safetensors    the weights (all that sampling and evaluation read)
  state.safetensors    optimizer moments, RNG states and the carried hidden state, for an exact --resume
plus ``metrics.jsonl`` (one line per validation) and a ``.lock`` file held while a run trains.

No pickle anywhere: JSON and safetensors hold only data, so loading a checkpoint cannot run code.
checkpoint.json records the SHA-256 of both tensor files, so a file damaged after it was written is refused.
A checkpoint is written into a temporary folder, each file fsynced, then renamed into place in one step,
so a crash at any moment leaves every earlier checkpoint whole and never a half-written one under its name.
Old checkpoints are likewise renamed out of the way before they are deleted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from charlm import __version__
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CheckpointError, CheckpointNotFoundError, RunLockedError, UsageError
from charlm.tokenizer import CharTokenizer

if TYPE_CHECKING:  # torch is imported where it is used: sampling on a CPU reads checkpoints without it
    import torch

    from charlm.model import CharGRU

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


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(run: Path, meta: dict[str, Any], weights: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save as save_bytes

    """Write one checkpoint atomically into `run`; returns its folder. Raises CheckpointError on I/O failure."""
    final = step_dir(run, int(meta["step"]))
    tmp = run / f".tmp-{final.name}-{os.getpid()}"
    old = run / f".old-{final.name}-{os.getpid()}"
    blobs = {
        name: save_bytes({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
        for name, tensors in ((WEIGHTS, weights), (STATE, state))
    }
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "charlm_version": __version__,
        **meta,
        "sha256": {name: _sha256(b) for name, b in blobs.items()},
    }
    try:
        run.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, blob in blobs.items():
            _write_file(tmp / name, blob)
        _write_file(tmp / META, (json.dumps(meta, indent=1, allow_nan=False) + "\n").encode())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. right after a resume): swap, then drop the old
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(run)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.rename(old, final)
        raise CheckpointError(
            f"could not save the checkpoint of step {meta['step']} in {run}: {e.strerror or e}; nothing was saved"
        ) from None
    shutil.rmtree(old, ignore_errors=True)
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint folder: renamed away first (one atomic step), so no half-deleted one keeps its name."""
    trash = path.parent / f".trash-{path.name}-{os.getpid()}"
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def prune(run: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints and the best one; returns what was deleted."""
    ckpts = list_checkpoints(run)
    keep_set = {c.path for c in ckpts[-keep:]}
    best = best_of(ckpts)
    if best is not None:
        keep_set.add(best.path)
    gone = [c.path for c in ckpts if c.path not in keep_set]
    for p in gone:
        _remove(p)
    return gone


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    """Add one line to metrics.jsonl; a line a crash cut short is ended first, so it spoils only itself."""
    path = run / "metrics.jsonl"
    try:
        run.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            cut = f.tell() > 0 and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n"
            f.write((("\n" if cut else "") + json.dumps(record) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise CheckpointError(f"could not write {path}: {e.strerror or e}") from None


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
    if not isinstance(meta.get("sha256", {}), dict):
        missing.append("sha256 (not a table)")
    if missing:
        raise CheckpointError(f"{f}: field(s) missing: {', '.join(missing)}")
    if not isinstance(meta["version"], int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{f}: format version {meta['version']} is newer than this charlm reads ({VERSION}); upgrade charlm"
        )
    try:
        model, vocab = ModelConfig.from_dict(meta["model"]), CharTokenizer.from_dict(meta["vocab"])
        TrainConfig.from_dict(meta["train"])
        int(meta["step"])
        wrong = model.problems()[:1] + [
            f"{k} is not a whole number"
            for k in ("vocab_size", "embed", "hidden", "layers")
            if not isinstance(getattr(model, k), int)
        ]
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{f}: a field has a wrong value ({e})") from None
    if not wrong and model.vocab_size != vocab.vocab_size:
        wrong = [f"the model has {model.vocab_size} characters but the vocabulary {vocab.vocab_size}"]
    if wrong:
        raise CheckpointError(f"{f}: a field has a wrong value ({wrong[0].removeprefix('--')})")
    return meta


def read_tensors(folder: Path, name: str = WEIGHTS, framework: Literal["torch", "numpy"] = "torch") -> dict[str, Any]:
    """One tensor file of a checkpoint, checked against the SHA-256 its checkpoint.json records, as torch
    tensors or NumPy arrays."""
    if framework == "numpy":
        from safetensors.numpy import load as load_bytes
    else:
        from safetensors.torch import load as load_bytes
    f = folder / name
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{f}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{f}: cannot read it ({e.strerror or e})") from None
    expected = read_meta(folder).get("sha256", {}).get(name) if (folder / META).exists() else None
    try:
        tensors = load_bytes(data)
    except Exception as e:  # the parser reports bad input with several exception types; all mean the same here
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{f}: damaged or not a safetensors file ({msg})") from None
    if expected is not None and _sha256(data) != expected:
        raise CheckpointError(f"{f}: damaged (its SHA-256 differs from the one in {META}; the file was changed)")
    return tensors


def _step_folders(run: Path) -> list[Path]:
    """step-* folders, plus any checkpoint a crash left renamed aside during a re-save (.old-step-*)."""
    found = {d.name: d for d in sorted(run.glob("step-*"))}
    for d in sorted(run.glob(".old-step-*")):
        found.setdefault(d.name.removeprefix(".old-").rsplit("-", 1)[0], d)
    return [found[k] for k in sorted(found)]


def list_checkpoints(run: Path) -> list[Checkpoint]:
    """The readable checkpoints of a run, oldest step first; damaged ones are left out."""
    out = []
    for d in _step_folders(run):
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
            raise CheckpointNotFoundError(
                f"no checkpoint given and none found under {root}/ (looked for {root}/*/step-*); "
                "train one with: charlm train CORPUS"
            )
        path = runs[-1]
    if not path.exists():
        runs = ", ".join(str(r) for r in find_runs(root)[-5:])
        raise CheckpointNotFoundError(
            f"{path}: no such checkpoint or run folder"
            + (f" (runs under {root}/: {runs})" if runs else f" (and no runs under {root}/)")
        )
    if path.is_file():
        if path.parent.name.startswith("step-"):
            path = path.parent
        else:
            raise CheckpointNotFoundError(
                f"{path}: not a charlm checkpoint (give a run folder, a step-* folder or a file inside one)"
            )
    if (path / META).exists() or path.name.startswith("step-"):
        return Checkpoint(path, read_meta(path))
    ckpts = list_checkpoints(path)
    if not ckpts:
        steps = _step_folders(path)
        if steps:  # there are checkpoints, but none reads: say what is wrong with the newest
            try:
                read_meta(steps[-1])
            except CheckpointError as e:
                raise CheckpointError(f"{path}: holds no readable checkpoint ({e})") from None
        found = sorted(p.name for p in path.iterdir())[:8]
        raise CheckpointNotFoundError(
            f"{path}: holds no readable checkpoint (looked for {path}/step-*/{META}); "
            f"it holds: {', '.join(found) or 'nothing'}"
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
    from charlm.model import CharGRU

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
        for pattern in (".tmp-step-*", ".trash-step-*"):  # left by a process killed mid-save or mid-delete
            for stale in self.run.glob(pattern):
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

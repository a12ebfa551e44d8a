"""One checkpoint: the files of a step folder, writing them atomically, and reading them back checked.

A step folder holds
  checkpoint.json      format version, model and training configs, vocabulary, step, metrics, data position
  model.safetensors    the weights (all that sampling and evaluation read)
  state.safetensors    optimizer moments, RNG states and the carried hidden state, for an exact --resume

No pickle anywhere: JSON and safetensors hold only data, so loading a checkpoint cannot run code.
checkpoint.json records the SHA-256 of both tensor files, so a file damaged after it was written is refused.
A checkpoint is written into a temporary folder, each file fsynced, then renamed into place in one step,
so a crash at any moment leaves every earlier checkpoint whole and never a half-written one under its name.
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
from charlm.checkpoint.layout import aside, step_dir
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CheckpointError
from charlm.tokenizer import CharTokenizer

if TYPE_CHECKING:  # torch is imported where it is used: sampling on a CPU reads checkpoints without it
    import torch

    from charlm.model import CharLM

FORMAT = "charlm-checkpoint"
VERSION = 1
META, WEIGHTS, STATE = "checkpoint.json", "model.safetensors", "state.safetensors"
REQUIRED = ("format", "version", "model", "train", "vocab", "step")
# A checkpoint's "kind": a language model (the default: checkpoint.json without the field), or a forecaster,
# whose model and training fields its own package checks (charlm.series).
KIND_REQUIRED = {"lm": REQUIRED, "forecaster": ("format", "version", "model", "train", "series", "step")}


@dataclass
class Checkpoint:
    path: Path  # the step-NNNNNNNN folder
    meta: dict[str, Any]  # its checkpoint.json, as read_meta checked it

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "lm"))

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
    tmp, old = aside(final, "tmp"), aside(final, "old")
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


# ---------------------------------------------------------------- reading


def _parse_meta(f: Path) -> dict[str, Any]:
    """checkpoint.json parsed, with its required fields present; their values are checked by read_meta."""
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{f}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{f}: not a readable checkpoint description ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not a charlm checkpoint")
    kind = meta.get("kind", "lm")
    if kind not in KIND_REQUIRED:
        raise CheckpointError(f"{f}: a checkpoint of a kind this charlm does not know ({kind!r}); upgrade charlm")
    missing = [k for k in KIND_REQUIRED[kind] if k not in meta]
    if not isinstance(meta.get("sha256", {}), dict):
        missing.append("sha256 (not a table)")
    if missing:
        raise CheckpointError(f"{f}: field(s) missing: {', '.join(missing)}")
    return meta


def read_meta(folder: Path) -> dict[str, Any]:
    """checkpoint.json of a step folder, checked field by field. Raises CheckpointError naming the file."""
    f = folder / META
    meta = _parse_meta(f)
    if not isinstance(meta["version"], int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{f}: format version {meta['version']} is newer than this charlm reads ({VERSION}); upgrade charlm"
        )
    if meta.get("kind", "lm") != "lm":
        if not isinstance(meta["step"], int) or not isinstance(meta["model"], dict):
            raise CheckpointError(f"{f}: a field has a wrong value (step or model)")
        return meta
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
        raise CheckpointError(f"{f}: a field has a wrong value ({wrong[0]})")
    return meta


def _recorded_sha256(source: Checkpoint | Path, name: str) -> str | None:
    """The SHA-256 checkpoint.json records for the tensor file `name`; None where it records none."""
    if isinstance(source, Checkpoint):
        meta = source.meta
    elif (source / META).exists():
        meta = read_meta(source)
    else:
        return None
    return meta.get("sha256", {}).get(name)


def read_tensors(
    source: Checkpoint | Path, name: str = WEIGHTS, framework: Literal["torch", "numpy"] = "torch"
) -> dict[str, Any]:
    """One tensor file of a checkpoint, checked against the SHA-256 its checkpoint.json records, as torch
    tensors or (framework="numpy", which never loads torch) NumPy arrays.

    Given a Checkpoint, the digest comes from the checkpoint.json it already read; given a step folder,
    checkpoint.json is read here (a folder without one, from before the digests, is read unchecked).
    """
    if framework == "numpy":
        from safetensors.numpy import load as load_bytes
    else:
        from safetensors.torch import load as load_bytes
    folder = source.path if isinstance(source, Checkpoint) else source
    f = folder / name
    try:
        data = f.read_bytes()
    except OSError as e:
        raise CheckpointError(
            f"{f}: missing" if isinstance(e, FileNotFoundError) else f"{f}: cannot read it ({e.strerror or e})"
        ) from None
    expected = _recorded_sha256(source, name)
    try:
        tensors = load_bytes(data)
    except Exception as e:  # the parser reports bad input with several exception types; all mean the same here
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{f}: damaged or not a safetensors file ({msg})") from None
    if expected is not None and _sha256(data) != expected:
        raise CheckpointError(f"{f}: damaged (its SHA-256 differs from the one in {META}; the file was changed)")
    return tensors


def load_weights(ckpt: Checkpoint, model: torch.nn.Module) -> None:
    """Load model.safetensors into `model`, with a one-line error if names or shapes do not fit."""
    tensors = read_tensors(ckpt, WEIGHTS)
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


def load_model(ckpt: Checkpoint, device: torch.device | str = "cpu") -> tuple[CharLM, CharTokenizer]:
    """The model, in eval mode on `device`, and its tokenizer: all that sampling and scoring need."""
    from charlm.model import CharLM

    if ckpt.kind != "lm":
        raise CheckpointError(f"{ckpt.path}: a {ckpt.kind}, not a language model (use it with: charlm forecast --from)")
    model = CharLM(ckpt.model_config)
    load_weights(ckpt, model)
    return model.to(device).eval(), ckpt.tokenizer

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
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from charlm import __version__
from charlm.checkpoint import schema
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


def _unreadable(f: Path, e: OSError) -> CheckpointError:
    return CheckpointError(
        f"{f}: missing" if isinstance(e, FileNotFoundError) else f"{f}: cannot read it ({e.strerror or e})"
    )


def _parse_meta(f: Path) -> dict[str, Any]:
    """checkpoint.json parsed with limits and held to the whole schema (charlm.checkpoint.schema)."""
    try:
        meta = schema.parse(schema.read_capped(f))
    except OSError as e:
        raise _unreadable(f, e) from None
    except schema.Bad as e:
        raise CheckpointError(f"{f}: not a readable checkpoint description (it {e})") from None
    try:
        return schema.check(meta, FORMAT, VERSION, KIND_REQUIRED)
    except schema.Bad as e:
        raise CheckpointError(f"{f}: {e}") from None


def _header(f: Path, data: bytes | None = None) -> dict[str, schema.TensorInfo]:
    """A tensor file's header, checked (from `data` when its bytes are already read, else from the file)."""
    try:
        if data is not None:
            return schema.read_header(io.BytesIO(data), len(data))
        with open(f, "rb") as fh:
            return schema.read_header(fh, os.fstat(fh.fileno()).st_size)
    except OSError as e:
        raise _unreadable(f, e) from None
    except schema.Bad as e:
        raise CheckpointError(f"{f}: damaged or not a safetensors file ({e})") from None


def _fits(f: Path, header: dict[str, schema.TensorInfo], meta: dict[str, Any]) -> None:
    try:
        schema.check_header(header, meta["model"])
    except schema.Bad as e:
        raise CheckpointError(f"{f}: {e}") from None


def read_meta(folder: Path) -> dict[str, Any]:
    """checkpoint.json of a step folder, checked as a whole, and the weight file's header checked against it
    (shapes, dtypes, offsets: read without reading the weights). Raises CheckpointError naming the file."""
    meta = _parse_meta(folder / META)
    header = _header(folder / WEIGHTS)
    if meta.get("kind", "lm") == "lm":  # a forecaster's weights are its own package's to check
        _fits(folder / WEIGHTS, header, meta)
    return meta


@dataclass
class Checkpoint:
    path: Path  # the step-NNNNNNNN folder
    meta: dict[str, Any]  # its checkpoint.json, as read_meta checked it
    # the weight file, held open once `pin` has opened it: a run pruning this checkpoint cannot take it away
    pinned: IO[bytes] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # sent to other processes under torchrun: without the open file
        return {"path": self.path, "meta": self.meta, "pinned": None}

    def __del__(self) -> None:
        if self.pinned is not None:
            self.pinned.close()

    def pin(self) -> Checkpoint:
        """Open the weight file now, so that reading it later gets these weights even if the folder is deleted."""
        if self.pinned is None:
            try:
                self.pinned = open(self.path / WEIGHTS, "rb")  # noqa: SIM115 (held for the object's life)
            except OSError as e:
                raise _unreadable(self.path / WEIGHTS, e) from None
        return self

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


def _recorded_sha256(source: Checkpoint | Path, name: str) -> str | None:
    """The SHA-256 checkpoint.json records for the tensor file `name`; None where it records none."""
    if isinstance(source, Checkpoint):
        meta = source.meta
    elif (source / META).exists():
        meta = read_meta(source)
    else:
        return None
    return (meta.get("sha256") or {}).get(name)


def _read_bytes(source: Checkpoint | Path, name: str) -> bytes:
    folder = source.path if isinstance(source, Checkpoint) else source
    f = folder / name
    try:
        if isinstance(source, Checkpoint) and name == WEIGHTS and source.pinned is not None:
            source.pinned.seek(0)
            return source.pinned.read()
        return f.read_bytes()
    except OSError as e:
        raise _unreadable(f, e) from None


def _numpy_tensors(data: bytes, header: dict[str, schema.TensorInfo]) -> dict[str, Any]:
    """The tensors as NumPy arrays, read straight from the bytes the header describes (floats as float32)."""
    import numpy as np

    base = 8 + int.from_bytes(data[:8], "little")
    kinds = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "I16": "<i2"}
    kinds |= {"I8": "i1", "U8": "u1", "BOOL": "?", "U16": "<u2"}
    out = {}
    for name, t in header.items():
        a = np.frombuffer(data, dtype=kinds[t.dtype], count=math.prod(t.shape), offset=base + t.start)
        a = a.reshape(t.shape)
        if t.dtype == "BF16":  # bfloat16 is the top half of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        elif t.dtype == "F16":
            a = a.astype(np.float32)
        out[name] = a
    return out


def _not_finite(f: Path, tensors: dict[str, Any], framework: str) -> None:
    """Refuse a float tensor holding NaN or an infinity, naming it."""
    import numpy as np

    for name, t in tensors.items():
        if framework == "numpy":
            bad = t.dtype.kind == "f" and not bool(np.isfinite(t).all())
        else:
            bad = t.is_floating_point() and not bool(t.isfinite().all())
        if bad:
            raise CheckpointError(f"{f}: tensor {name} holds NaN or infinite values; the checkpoint is unusable")


def read_tensors(
    source: Checkpoint | Path, name: str = WEIGHTS, framework: Literal["torch", "numpy"] = "torch"
) -> dict[str, Any]:
    """One tensor file of a checkpoint, checked against the SHA-256 its checkpoint.json records, as torch
    tensors or (framework="numpy", which never loads torch) NumPy arrays.

    Given a Checkpoint, the digest comes from the checkpoint.json it already read (and a pinned weight file is
    read from the file it holds open); given a step folder, checkpoint.json is read here (a folder without
    one, from before the digests, is read unchecked). Its header is checked before any tensor is made; the
    weights must fit the model in checkpoint.json and be finite; float16 and bfloat16 weights are read as
    float32, the same for every command.
    """
    folder = source.path if isinstance(source, Checkpoint) else source
    f = folder / name
    data = _read_bytes(source, name)
    header = _header(f, data)
    expected = _recorded_sha256(source, name)
    if expected is not None and _sha256(data) != expected:
        raise CheckpointError(f"{f}: damaged (its SHA-256 differs from the one in {META}; the file was changed)")
    meta = source.meta if isinstance(source, Checkpoint) else None
    if name == WEIGHTS and meta is not None and meta.get("kind", "lm") == "lm":
        _fits(f, header, meta)
    if framework == "numpy":
        tensors = _numpy_tensors(data, header)
    else:
        from safetensors.torch import load as load_bytes

        try:
            tensors = load_bytes(data)
        except Exception as e:  # the parser reports bad input with several exception types; all mean the same
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{f}: damaged or not a safetensors file ({msg})") from None
        if name == WEIGHTS:
            tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    _not_finite(f, tensors, framework)
    return tensors


def check_fits(
    where: Path, tensors: dict[str, Any], expected: dict[str, tuple[int, ...]], what: str = f"the model in {META}"
) -> None:
    """One line if `tensors` lack a name `expected` has, or hold it in another shape."""
    missing = sorted(set(expected) - set(tensors))
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k])]
    if missing or wrong:
        problem = f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "") if missing else ""
        if wrong:
            k = wrong[0]
            problem += ("; " if problem else "") + (
                f"{k} has shape {tuple(tensors[k].shape)} but {tuple(expected[k])} is needed"
            )
        raise CheckpointError(f"{where}: does not fit {what}: {problem}")


def load_weights(ckpt: Checkpoint, model: torch.nn.Module) -> None:
    """Load model.safetensors into `model`, with a one-line error if names or shapes do not fit."""
    tensors = read_tensors(ckpt, WEIGHTS)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_fits(ckpt.path / WEIGHTS, tensors, expected)
    model.load_state_dict({k: tensors[k] for k in expected})


def load_model(ckpt: Checkpoint, device: torch.device | str = "cpu") -> tuple[CharLM, CharTokenizer]:
    """The model, in eval mode on `device`, and its tokenizer: all that sampling and scoring need.

    The weights are read and checked against the config before the model is built, so a config that claims a
    model larger than its weight file never allocates it."""
    from charlm.model import CharLM

    if ckpt.kind != "lm":
        raise CheckpointError(f"{ckpt.path}: a {ckpt.kind}, not a language model (use it with: charlm forecast --from)")
    tensors = read_tensors(ckpt, WEIGHTS)
    check_fits(ckpt.path / WEIGHTS, tensors, schema.expected_shapes(ckpt.meta["model"]))
    model = CharLM(ckpt.model_config)
    model.load_state_dict({k: tensors[k] for k in model.state_dict()})
    return model.to(device).eval(), ckpt.tokenizer

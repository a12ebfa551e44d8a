"""checkpoint.json and the tensor files' headers are untrusted input: the one check of each, before use.

`parse` reads checkpoint.json with limits (its size, the digits of a number, no NaN or Infinity, its depth),
and `check` holds the whole document to one schema: every field's type, range and finiteness, code points
that are characters (no surrogates), a vocabulary as large as the model says. `read_header` reads a
safetensors header without reading the tensors, and `check_header` holds it to the config: the tensors the
model needs, their shapes and dtypes, offsets inside the file. So the model is never allocated from a size
that the weight file does not back, and every problem is one line naming the file and the field.

None of this imports torch: sampling on a CPU reads checkpoints without it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, fields
from typing import Any

from charlm.config import CELLS, TrainConfig

MAX_META_BYTES = 64 << 20  # a full Unicode vocabulary is about 9 MB of JSON
MAX_HEADER_BYTES = 16 << 20
MAX_DIGITS = 30
MAX_WIDTH = 1 << 16  # embed, hidden
MAX_LAYERS = 1024
MAX_CODE_POINT = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)
MAX_COUNT = 1 << 53  # steps, characters, offsets: as far as a JSON number is exact
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}  # weights charlm reads (converted to float32)
DTYPE_SIZES = {**FLOAT_DTYPES, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2}
BLOCKS = {"gru": 3, "lstm": 4, "rnn": 1}  # as charlm.model.BLOCKS, which needs torch


class Bad(ValueError):
    """One problem with a document, as a phrase: "model.hidden must be ... (got ...)"."""


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


# ---------------------------------------------------------------- parsing


def _parse_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_DIGITS:
        raise Bad(f"holds a number of {len(s.lstrip('-'))} digits (at most {MAX_DIGITS} are read)")
    return int(s)


def _parse_float(s: str) -> float:
    if len(s) > 64:
        raise Bad(f"holds a number written with {len(s)} characters")
    v = float(s)
    if not math.isfinite(v):
        raise Bad(f"holds a number ({s[:20]}) too large to be finite")
    return v


def _parse_constant(s: str) -> float:
    raise Bad(f"holds {s}, which is not a number JSON allows")


def parse(data: bytes) -> Any:
    """A JSON document read with limits: raises Bad with a phrase saying what is wrong."""
    if len(data) > MAX_META_BYTES:
        raise Bad(f"is {len(data):,} bytes, more than a checkpoint description can be ({MAX_META_BYTES:,})")
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except UnicodeDecodeError:
        raise Bad("is not UTF-8 text") from None
    except RecursionError:
        raise Bad("is nested too deeply to be a checkpoint description") from None
    except json.JSONDecodeError as e:
        raise Bad(f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def read_capped(path: os.PathLike[str] | str, cap: int = MAX_META_BYTES) -> bytes:
    """A file's bytes, refusing one larger than `cap` before reading it all."""
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise Bad(f"is larger than {cap:,} bytes, more than a checkpoint description can be")
    return data


# ---------------------------------------------------------------- the schema


def _whole(v: Any, where: str, lo: int = 0, hi: int = MAX_COUNT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise Bad(f"{where} must be a whole number from {lo:,} to {hi:,} (got {_show(v)})")
    return v


def _number(v: Any, where: str, lo: float = -math.inf, hi: float = math.inf, open_lo: bool = False) -> float:
    ok = type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi and not (open_lo and v == lo)
    if not ok:
        span = f"more than {lo:g}" if open_lo else f"from {lo:g}" if lo > -math.inf else "any"
        if hi < math.inf:
            span += f" to {hi:g}"
        raise Bad(f"{where} must be a finite number {span} (got {_show(v)})")
    return float(v)


def _text(v: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(v, str) or (choices is not None and v not in choices):
        want = f"one of {', '.join(choices)}" if choices else "text"
        raise Bad(f"{where} must be {want} (got {_show(v)})")
    return v


def _table(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise Bad(f"{where} must be a table (a JSON object), not {type(v).__name__}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise Bad(f"{where} must be a list, not {type(v).__name__}")
    return v


def _optional(d: dict[str, Any], key: str, check: Any, *args: Any, **kw: Any) -> None:
    if d.get(key) is not None:
        check(d[key], *args, **kw)


def check_model(m: Any) -> dict[str, Any]:
    m = _table(m, "model")
    for key in ("vocab_size", "embed", "hidden", "layers"):
        if key not in m:
            raise Bad(f"model.{key} is missing")
    _whole(m["vocab_size"], "model.vocab_size", 1, MAX_CODE_POINT + 1)
    _whole(m["embed"], "model.embed", 1, MAX_WIDTH)
    _whole(m["hidden"], "model.hidden", 1, MAX_WIDTH)
    _whole(m["layers"], "model.layers", 1, MAX_LAYERS)
    if "dropout" in m:
        _number(m["dropout"], "model.dropout", 0.0, 0.999999)
    if "cell" in m:
        _text(m["cell"], "model.cell", CELLS)
    return m


def _train_field_kinds() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(TrainConfig)}


def check_train(t: Any) -> None:
    t = _table(t, "train")
    for name, kind in _train_field_kinds().items():
        if name not in t:
            continue
        v, where = t[name], f"train.{name}"
        if v is None and "None" in kind:
            continue
        if kind.startswith("int"):
            _whole(v, where, -(1 << 63) if name == "seed" else 0, (1 << 64) - 1 if name == "seed" else 1 << 40)
        elif kind.startswith("float"):
            _number(v, where)
        elif kind.startswith("str"):
            _text(v, where)
        elif not isinstance(v, (bool, int, float, str)):
            raise Bad(f"{where} must be a number, text or true/false (got {type(v).__name__})")
    problems = TrainConfig.from_dict(t).problems()
    if problems:
        raise Bad(f"train: {problems[0].removeprefix('--')}")


def check_vocab(v: Any, vocab_size: int) -> None:
    v = _table(v, "vocab")
    cps = _list(v.get("code_points"), "vocab.code_points")
    prev = -1
    for i, c in enumerate(cps):
        where = f"vocab.code_points[{i}]"
        _whole(c, where, 0, MAX_CODE_POINT)
        if c in SURROGATES:
            raise Bad(f"{where} is U+{c:04X}, a surrogate, not a character")
        if c <= prev:
            raise Bad(f"{where} (U+{c:04X}) is out of order or repeated; the vocabulary is sorted and unique")
        prev = c
    if len(cps) != vocab_size:
        raise Bad(f"the model has {vocab_size} characters but the vocabulary {len(cps)}")


def _scalars(d: dict[str, Any], where: str) -> None:
    for k, v in d.items():
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise Bad(f"{where}.{k} must be a number, text, true/false or null (got {type(v).__name__})")


def check_optimizer(o: Any) -> None:
    o = _table(o, "optimizer")
    groups = _list(o.get("param_groups"), "optimizer.param_groups")
    for i, g in enumerate(groups):
        where = f"optimizer.param_groups[{i}]"
        g = _table(g, where)
        for key, lo in (("lr", 0.0), ("eps", 0.0), ("weight_decay", 0.0)):
            if key not in g:
                raise Bad(f"{where}.{key} is missing")
            _number(g[key], f"{where}.{key}", lo)
        betas = _list(g.get("betas"), f"{where}.betas")
        if len(betas) != 2:
            raise Bad(f"{where}.betas must hold two numbers (got {len(betas)})")
        for j, b in enumerate(betas):
            _number(b, f"{where}.betas[{j}]", 0.0, 0.999999)
        for j, p in enumerate(_list(g.get("params"), f"{where}.params")):
            _whole(p, f"{where}.params[{j}]", 0, 1 << 20)
        _scalars({k: v for k, v in g.items() if k not in ("betas", "params")}, where)


def check_plateau(p: Any) -> None:
    p = _table(p, "plateau")
    _optional(p, "patience", _whole, "plateau.patience", 1, 1 << 31)
    _optional(p, "factor", _number, "plateau.factor", 0.0, 0.999999, open_lo=True)
    _optional(p, "min_delta", _number, "plateau.min_delta", 0.0)
    _optional(p, "max_decays", _whole, "plateau.max_decays", 0, 1 << 31)
    _optional(p, "best", _number, "plateau.best")
    _optional(p, "best_step", _whole, "plateau.best_step")
    _optional(p, "stale", _whole, "plateau.stale")
    _optional(p, "decays", _whole, "plateau.decays")


def check_data(d: Any) -> None:
    d = _table(d, "data")
    for key in ("offset", "train_chars", "val_chars"):  # null is no number of characters either
        if key in d:
            _whole(d[key], f"data.{key}")
    _optional(d, "fingerprint", _text, "data.fingerprint")
    _optional(d, "val_source", _text, "data.val_source")
    if "sources" in d:
        for i, s in enumerate(_list(d["sources"], "data.sources")):
            _text(s, f"data.sources[{i}]")


def check(
    meta: Any, format_name: str, version: int, required: dict[str, tuple[str, ...]] | None = None
) -> dict[str, Any]:
    """The whole of checkpoint.json against the schema; raises Bad naming the first field that is wrong.

    `required`: the fields each kind of checkpoint needs ("lm", the default kind, and others such as a
    forecaster, whose own fields its package checks; here only what every kind shares)."""
    required = required or {"lm": ("format", "version", "model", "train", "vocab", "step")}
    if not isinstance(meta, dict) or meta.get("format") != format_name:
        raise Bad("is not a charlm checkpoint description")
    kind = meta.get("kind", "lm")
    if not isinstance(kind, str) or kind not in required:
        raise Bad(f"is a checkpoint of a kind this charlm does not know ({_show(kind)}); upgrade charlm")
    missing = [k for k in required[kind] if k not in meta]
    if missing:
        raise Bad(f"field(s) missing: {', '.join(missing)}")
    v = meta["version"]
    if type(v) is not int or v < 1:
        raise Bad(f"version must be a whole number (got {_show(v)})")
    if v > version:
        raise Bad(f"format version {v} is newer than this charlm reads ({version}); upgrade charlm")
    if kind != "lm":
        _table(meta["model"], "model")
        _whole(meta["step"], "step")
        _optional(meta, "charlm_version", _text, "charlm_version")
        _check_digests(meta)
        return meta
    model = check_model(meta["model"])
    check_train(meta["train"])
    check_vocab(meta["vocab"], model["vocab_size"])
    _whole(meta["step"], "step")
    _check_common(meta)
    return meta


def _check_common(meta: dict[str, Any]) -> None:
    """The fields every kind of checkpoint may hold."""
    _optional(meta, "charlm_version", _text, "charlm_version")
    _optional(meta, "elapsed", _number, "elapsed", 0.0)
    _optional(meta, "chars_seen", _whole, "chars_seen")
    _optional(meta, "best_val_bpc", _number, "best_val_bpc", 0.0)
    _optional(meta, "lr_scale", _number, "lr_scale", 0.0, open_lo=True)
    if "metrics" in meta:
        metrics = _table(meta["metrics"], "metrics")
        for k, x in metrics.items():
            if x is not None:
                _number(x, f"metrics.{k}")
        _optional(metrics, "val_bpc", _number, "metrics.val_bpc", 0.0)
    _optional(meta, "data", check_data)
    _optional(meta, "optimizer", check_optimizer)
    _optional(meta, "plateau", check_plateau)
    if meta.get("auto"):  # what automatic configuration chose: info shows its reason
        _text(_table(meta["auto"], "auto").get("reason"), "auto.reason")
    if meta.get("distributed") is not None:
        _whole(_table(meta["distributed"], "distributed").get("world_size"), "distributed.world_size", 1, 1 << 20)
    _check_digests(meta)


def _check_digests(meta: dict[str, Any]) -> None:
    if meta.get("sha256") is not None:
        for k, h in _table(meta["sha256"], "sha256").items():
            ok = isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)
            if not ok:
                raise Bad(f"sha256.{k} must be 64 hexadecimal digits (got {_show(h)})")


# ---------------------------------------------------------------- tensor file headers


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets in the file, after its header
    end: int


def read_header(f: Any, size: int) -> dict[str, TensorInfo]:
    """The tensors a safetensors file (an open binary file of `size` bytes) holds, checked: every dtype known,
    every shape's bytes exactly the span its offsets give, every span inside the file. Raises Bad."""
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        raise Bad("is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER_BYTES, size - 8):
        raise Bad(f"claims a header of {n:,} bytes in a file of {size:,}")
    doc = parse(f.read(n))
    doc = _table(doc, "the header")
    data_size = size - 8 - n
    out = {}
    for name, t in doc.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name}"
        t = _table(t, where)
        dtype = _text(t.get("dtype"), f"{where}: dtype", tuple(DTYPE_SIZES))
        shape = tuple(_whole(d, f"{where}: a dimension", 0, 1 << 40) for d in _list(t.get("shape"), f"{where}: shape"))
        offsets = _list(t.get("data_offsets"), f"{where}: data_offsets")
        if len(offsets) != 2:
            raise Bad(f"{where}: data_offsets must be two numbers")
        start, end = (_whole(o, f"{where}: an offset", 0, data_size) for o in offsets)
        if end - start != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise Bad(
                f"{where}: shape {list(shape)} of {dtype} needs {math.prod(shape) * DTYPE_SIZES[dtype]:,} "
                f"bytes but its offsets span {end - start:,}"
            )
        out[name] = TensorInfo(dtype, shape, start, end)
    return out


def expected_shapes(model: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The tensors of a model described by a checked `model` table, by their state-dict names, and shapes."""
    cell = model.get("cell", "gru")
    v, e, h, layers = model["vocab_size"], model["embed"], model["hidden"], model["layers"]
    g = BLOCKS[cell] * h
    out: dict[str, tuple[int, ...]] = {"embed.weight": (v, e)}
    for i in range(layers):
        out |= {f"{cell}.weight_ih_l{i}": (g, e if i == 0 else h), f"{cell}.weight_hh_l{i}": (g, h)}
        out |= {f"{cell}.bias_ih_l{i}": (g,), f"{cell}.bias_hh_l{i}": (g,)}
    return out | {"head.weight": (v, h), "head.bias": (v,)}


def check_header(header: dict[str, TensorInfo], model: dict[str, Any]) -> None:
    """The weights' header against the model config: every tensor there, in its shape, a float dtype."""
    want = expected_shapes(model)
    missing = [k for k in want if k not in header]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise Bad(f"does not fit the model in checkpoint.json: missing {', '.join(missing[:3])}{more}")
    for k, shape in want.items():
        t = header[k]
        if t.shape != shape:
            raise Bad(
                f"does not fit the model in checkpoint.json: {k} has shape {tuple(t.shape)} "
                f"but the config needs {shape}"
            )
        if t.dtype not in FLOAT_DTYPES:
            raise Bad(f"{k} holds {t.dtype} values; charlm reads weights of F32, F16 or BF16")

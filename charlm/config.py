"""Configuration dataclasses for the model and for a training run, with up-front validation.

Both are saved inside every checkpoint, so a run can be rebuilt from its folder alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from charlm.errors import Problem, param
from charlm.errors import problems as as_problems

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("cosine", "linear", "wsd")  # the learning rate's decay after warmup (charlm.training.schedule)
CELLS = ("gru", "lstm", "rnn")  # the recurrent cells a model can be built from (see charlm/model.py)
SEED_MAX = 2**32 - 1  # seeds are 0..SEED_MAX: every generator takes them, with room for per-rank offsets


class _Saved:
    """A config as a plain dict (saved in every checkpoint), and back; keys this version does not know are
    dropped, so a checkpoint written by a newer charlm with new fields still loads."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        return cls(**_known(cls, d))


@dataclass
class ModelConfig(_Saved):
    vocab_size: int
    embed: int = 64  # size of the learned vector for each character
    hidden: int = 256  # state size of each layer: the model's memory, and most of its cost (grows as hidden**2)
    layers: int = 2  # stacked recurrent layers; each layer reads the hidden states of the one below
    dropout: float = 0.0  # between recurrent layers and before the output head, during training only
    cell: str = "gru"  # gru, lstm or rnn (tanh); a checkpoint written before this field existed is a GRU

    def problems(self) -> list[Problem]:
        out = []
        for name in ("vocab_size", "embed", "hidden", "layers"):
            if getattr(self, name) < 1:
                out.append(f"{param(name)} must be at least 1 (got {getattr(self, name)})")
        if not 0.0 <= self.dropout < 1.0:
            out.append(f"{param('dropout')} must be in [0, 1) (got {self.dropout})")
        if self.cell not in CELLS:
            out.append(f"{param('cell')} must be {', '.join(CELLS[:-1])} or {CELLS[-1]} (got {self.cell!r})")
        return as_problems(out)


@dataclass
class TrainConfig(_Saved):
    seq_len: int = 64  # characters per stream per step: how far back gradients flow (truncated BPTT)
    batch_size: int = 32  # parallel streams the text is cut into; characters per step = batch_size * seq_len
    lr: float = 3e-3  # peak learning rate, reached after warmup, then decayed to lr * min_lr_ratio
    min_lr_ratio: float = 0.0  # where the decay ends, as a share of lr (0: to zero)
    lr_schedule: str = "wsd"  # wsd: warmup, stable at lr, then linear over decay_fraction; cosine; linear
    decay_fraction: float = 0.4  # wsd: the last share of the budget over which the learning rate decays
    ema: float = 0.0  # decay of an average of the weights that checkpoints save (e.g. 0.999); 0: off
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # clip the global gradient norm to this
    max_steps: int | None = None  # stop after this many steps ...
    max_time: float | None = None  # ... or after this many seconds of training, whichever comes first
    val_fraction: float = 0.1  # the last part of the text held out for validation (ignored with a --val file)
    eval_every: int = 500  # steps between validations (and a checkpoint each time); each costs a pass over val
    save_every: int | None = None  # steps between extra checkpoints; None means at each validation only
    keep: int = 3  # how many recent checkpoints to keep, besides the best one
    patience: int = 3  # validations without a new best before the learning rate is halved (twice), then stop; 0: off
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"  # arithmetic of the training step: auto, fp32 or bf16 (weights always stay fp32)

    def problems(self) -> list[Problem]:
        out = []
        for name in ("seq_len", "batch_size", "eval_every", "warmup_steps"):
            if getattr(self, name) < (0 if name == "warmup_steps" else 1):
                out.append(f"{param(name)} must be positive (got {getattr(self, name)})")
        for name in ("max_steps", "save_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                out.append(f"{param(name)} must be at least 1 (got {getattr(self, name)})")
        if self.keep < 1:
            out.append(f"{param('keep')} must be at least 1 (got {self.keep})")
        if not 0 <= self.seed <= SEED_MAX:
            out.append(f"{param('seed')} must be in 0..{SEED_MAX} (got {self.seed})")
        if self.patience < 0:
            out.append(f"{param('patience')} must be 0 (off) or more (got {self.patience})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            out.append(f"{param('lr')} must be a positive number (got {self.lr})")
        if self.lr_schedule not in LR_SCHEDULES:
            names = f"{', '.join(LR_SCHEDULES[:-1])} or {LR_SCHEDULES[-1]}"
            out.append(f"{param('lr_schedule')} must be {names} (got {self.lr_schedule!r})")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            out.append(f"{param('min_lr_ratio')} must be in [0, 1] (got {self.min_lr_ratio})")
        if not 0.0 < self.decay_fraction <= 1.0:
            out.append(f"{param('decay_fraction')} must be in (0, 1] (got {self.decay_fraction})")
        if not 0.0 <= self.ema < 1.0:
            out.append(f"{param('ema')} must be in [0, 1): 0 is off, e.g. 0.999 (got {self.ema})")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            out.append(f"{param('weight_decay')} must be 0 or more (got {self.weight_decay})")
        if self.max_time is not None and not self.max_time > 0:
            out.append(f"{param('max_time')} must be more than 0 (got {self.max_time})")
        if not 0.0 <= self.val_fraction < 1.0:
            out.append(f"{param('val_fraction')} must be in [0, 1) (got {self.val_fraction})")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            out.append(f"{param('device')} must be auto, cpu, cuda or mps (got {self.device!r})")
        if self.precision not in PRECISIONS:
            choices = f"{', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}"
            out.append(f"{param('precision')} must be {choices} (got {self.precision!r})")
        return as_problems(out)


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)?")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in '90s', '10m', '2h', '1h30m' or a bare number of seconds, more than 0. Raises ValueError."""
    s = text.strip().lower().replace(" ", "")
    pos, total, parts = 0, 0.0, 0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if not m or m.end() == pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos, parts = m.end(), parts + 1
    if not s or pos != len(s):
        raise ValueError(f"cannot read {text!r} as a duration (use e.g. 90s, 10m, 2h or 1h30m)")
    if not total > 0:
        raise ValueError(f"must be more than 0 (got {text!r})")
    return total


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"

"""The learning-rate schedule, and what to do after each validation.

`get_lr` is a small pure function of the step and of the budget spent: linear warmup, then a decay to
lr x min_lr_ratio: warmup-stable-decay (the default: flat until the last decay_fraction of the budget, then
linear), cosine, or linear. Decayed to zero over the last 40%, the same steps trained better than a cosine to a
tenth at every budget benchmarks/sweep.py tried: by 0.018 nats/char in 3 minutes' steps on tiny Shakespeare,
0.008 on a 200,000-character text and 0.002 in 10 minutes' (where linear to zero did better still, but worse
than cosine at the shorter two).
`Plateau` watches the validation loss. While it improves (by at least `min_delta`), training goes on. After
`patience` validations in a row without improvement it halves the learning rate (`factor`): a plateau often
means the step size is now too large to find the smaller improvements left. After `max_decays` such cuts with
still no improvement, more training is not helping (the model has started to memorise the training text), so
it says to stop early. The best checkpoint is kept either way, so stopping loses nothing.

At the defaults a run stops after 3 x 3 = 9 validations without a new best, at the earliest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from charlm.config import TrainConfig

Action = Literal["continue", "decay", "stop"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # one line, for the user: why the learning rate changed or training stopped


@dataclass
class Plateau:
    patience: int = 3  # validations without a new best before acting
    factor: float = 0.5  # the learning rate is multiplied by this on a plateau
    min_delta: float = 1e-3  # nats/char: a smaller gain does not count as an improvement
    max_decays: int = 2  # cuts without a new best before stopping early
    best: float = math.inf
    best_step: int | None = None
    stale: int = 0  # validations since the best, or since the last cut
    decays: int = 0  # cuts since the best

    def __post_init__(self) -> None:
        if self.patience < 1 or not 0.0 < self.factor < 1.0 or self.max_decays < 0 or self.min_delta < 0:
            raise ValueError(f"Plateau needs patience >= 1, 0 < factor < 1, max_decays >= 0, min_delta >= 0: {self}")

    def update(self, loss: float, step: int) -> Decision:
        """Take one validation loss (nats/char) at `step` and say what to do next."""
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.stale, self.decays = loss, step, 0, 0
            return Decision("continue", f"validation improved to {loss:.4f}")
        if loss < self.best:  # a new best, too small to count: remember it, but keep counting the plateau
            self.best, self.best_step = loss, step
        self.stale += 1
        if self.stale < self.patience:
            return Decision("continue", f"no improvement for {self.stale} validation(s)")
        since = f"{self.best:.4f} nats/char at step {self.best_step}"
        if self.decays < self.max_decays:
            self.decays, self.stale = self.decays + 1, 0
            return Decision(
                "decay",
                f"validation has not improved on {since} for {self.patience} validations; "
                f"learning rate x{self.factor:g}",
            )
        return Decision(
            "stop",
            f"stopped early: validation has not improved on {since} in {self.patience * (self.max_decays + 1)} "
            f"validations, {self.max_decays} learning-rate cuts included",
        )

    def to_dict(self) -> dict[str, Any]:
        """The state to keep in a checkpoint, so that a resumed run goes on counting where it stopped."""
        d = asdict(self)
        d["best"] = None if math.isinf(self.best) else self.best  # JSON has no infinity
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plateau:
        p = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        if p.best is None:
            p.best = math.inf
        return p


def get_lr(step: int, progress: float, cfg: TrainConfig, scale: float = 1.0) -> float:
    """Linear warmup over `warmup_steps`, then a decay from lr to lr * min_lr_ratio as progress goes 0 -> 1:
    cosine, linear, or (wsd) flat until 1 - decay_fraction, then linear.

    `progress` is the fraction of the budget spent, by steps or by time, whichever is further along. A time
    budget has no step count to decay over, which torch's own schedulers need, hence this small function.
    """
    peak = cfg.lr * scale
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    if cfg.lr_schedule == "linear":
        share = 1.0 - p
    elif cfg.lr_schedule == "wsd":
        share = min(1.0, (1.0 - p) / cfg.decay_fraction)
    else:
        share = 0.5 * (1.0 + math.cos(math.pi * p))
    return peak * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * share)

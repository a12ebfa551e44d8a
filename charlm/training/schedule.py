"""The learning-rate schedule: a small pure function of the step and of the budget spent.

Kept apart from the loop so that other schedules (automatic configuration, plateau decay) can take its place.
"""

from __future__ import annotations

import math

from charlm.config import TrainConfig


def get_lr(step: int, progress: float, cfg: TrainConfig, scale: float = 1.0) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay from lr to lr * min_lr_ratio as progress goes 0 -> 1.

    `progress` is the fraction of the budget spent, by steps or by time, whichever is further along. A time
    budget has no step count to decay over, which torch's own schedulers need, hence this small function.
    """
    peak = cfg.lr * scale
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return peak * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cos)

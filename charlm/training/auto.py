"""Automatic configuration of a new run: the sizing rule (charlm.training.autoconfig) applied to a request.

The options the user gave are kept; the rule chooses the others (`auto`, the default of each) from the budget,
the encoded corpus and the device's speed. A time budget needs that speed, so the device is timed first on the
real model shapes (charlm.training.calibrate, a few seconds, said on stderr); a budget in steps fixes the
characters read whatever the speed, so it is sized with a typical CPU's speed model and nothing is timed.
A resumed run keeps the choice stored in its checkpoints; a fine-tuned one keeps its checkpoint's shape.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from charlm.config import TrainConfig
from charlm.device import pick_device, pick_precision
from charlm.training.autoconfig import MODEL_KEYS, TRAIN_KEYS, choose
from charlm.training.calibrate import REFERENCE, SpeedModel, measure


def configure(
    given: dict[str, Any],
    model_over: dict[str, Any],
    cfg: TrainConfig,
    vocab_size: int,
    train_chars: int,
    val_chars: int,
    on_event: Any = None,
) -> tuple[dict[str, Any], TrainConfig, dict[str, Any] | None]:
    """(model settings, training config, what was chosen and why) for a new run; None when nothing was left
    to choose."""
    if all(k in given for k in (*MODEL_KEYS, *TRAIN_KEYS) if k != "weight_decay"):  # the rule keeps AdamW's
        return model_over, cfg, None
    device = pick_device(cfg.device)
    speed, timed = REFERENCE, {}
    if cfg.max_time is not None:
        speed, timed = _measure(device, vocab_size, pick_precision(cfg.precision, device), cfg.max_time, on_event)
    choice = choose(
        vocab_size, train_chars, speed, cfg.max_time, cfg.max_steps, val_chars, device.type, overrides=given
    )
    chosen = {k: v for k, v in {**choice.model, **choice.train}.items() if k not in given}
    model_over = {**model_over, **{k: v for k, v in choice.model.items() if k not in given}}
    cfg = replace(cfg, **{k: v for k, v in choice.train.items() if k not in given})
    auto = {
        "reason": choice.reason,
        "chosen": chosen,
        "predicted_chars_per_sec": round(choice.chars_per_sec),
        "planned_passes": round(choice.passes, 2),
        "calibration": timed,
    }
    if on_event is not None:
        on_event("note", {"message": choice.reason})
    return model_over, cfg, auto


def _measure(
    device: Any, vocab_size: int, autocast: Any, budget: float, on_event: Any
) -> tuple[SpeedModel, dict[str, float]]:
    """calibrate.measure, timed and said on stderr; each shape's speed is kept to be stored with the choice."""
    t0 = time.perf_counter()
    speed, measured = measure(device, vocab_size, autocast, budget)
    timed = {s.name: round(v) for s, v in measured.items()}
    if on_event is not None:
        shown = ", ".join(f"{name} {v:,.0f} chars/s" for name, v in timed.items())
        on_event("note", {"message": f"calibrated {device.type} in {time.perf_counter() - t0:.1f}s: {shown}"})
    return speed, timed

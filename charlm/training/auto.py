"""Automatic configuration of a run: the sizing rule (charlm.training.autoconfig) applied to a request, and
applied again once the run has measured its own speed.

The options the user gave are kept; the rule chooses the others (`auto`, the default of each) from the budget,
the encoded corpus and the device's speed. A time budget needs that speed, so the device is timed first
(charlm.training.calibrate: the trainer's own step, on the run's text, cell and precision, for the shapes and
batches the rule weighs; a few seconds, said on stderr); a budget in steps fixes the characters read whatever
the speed, so it is sized with a typical CPU's speed model and nothing is timed.

A calibration of a few steps can misjudge the speed (another process busy at that moment, a CPU unlike the one
the constants were fit on), so a timed run plans once more when REPLAN_SHARE of its time has passed
(`replan_run`, called by the trainer): from the characters per second its own steps reached, the rule
recomputes what can still change (dropout, the pass cap, hence the step count the schedule follows, and the
validation interval), says so on stderr and records it in the checkpoints' `auto` record. The model's shape
and its step stay: they cannot change once training has started.

A resumed run keeps the choice (and the re-plan) stored in its checkpoints; a fine-tuned one keeps its
checkpoint's shape.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from charlm.config import ModelConfig, TrainConfig
from charlm.device import pick_device, pick_precision
from charlm.training.autoconfig import MODEL_KEYS, REPLAN_KEYS, TRAIN_KEYS, AutoChoice, choose, replan, weighed
from charlm.training.calibrate import REFERENCE, Shape, SpeedModel, measure

REPLAN_SHARE = 0.1  # a timed run plans again once this share of its time has passed ...
REPLAN_MIN_STEPS = 10  # ... and it has timed at least this many steps (besides the first, untimed ones)
REPLAN_SKIP = 2  # the first steps of a session are not timed: first use of the kernels


def configure(
    given: dict[str, Any],
    model_over: dict[str, Any],
    cfg: TrainConfig,
    vocab_size: int,
    train_chars: int,
    val_chars: int,
    on_event: Any = None,
    ids: np.ndarray | None = None,
) -> tuple[dict[str, Any], TrainConfig, dict[str, Any] | None]:
    """(model settings, training config, what was chosen and why) for a new run; None when nothing was left
    to choose. `ids`, the training text, is what calibration steps through."""
    if all(k in given for k in (*MODEL_KEYS, *TRAIN_KEYS) if k != "weight_decay"):  # the rule keeps AdamW's
        return model_over, cfg, None
    device = pick_device(cfg.device)
    speed, timed, seconds = REFERENCE, {}, None

    def rule(speed: SpeedModel) -> AutoChoice:
        return choose(
            vocab_size, train_chars, speed, cfg.max_time, cfg.max_steps, val_chars, device.type, overrides=given
        )

    if cfg.max_time is not None:
        t0 = time.perf_counter()
        speed, measured = measure(
            device,
            vocab_size,
            pick_precision(cfg.precision, device),
            cfg.max_time,
            given.get("cell", "gru"),
            ids,
            consider=lambda s: weighed(rule(s).shape, "batch_size" in given),
        )
        seconds = time.perf_counter() - t0
        timed = {s.label: round(v) for s, v in measured.items()}
        if on_event is not None:
            shown = ", ".join(f"{name} {v:,.0f} chars/s" for name, v in timed.items())
            on_event("note", {"message": f"calibrated {device.type} in {seconds:.1f}s: {shown}"})
    choice = rule(speed)
    chosen = {k: v for k, v in {**choice.model, **choice.train}.items() if k not in given}
    model_over = {**model_over, **{k: v for k, v in choice.model.items() if k not in given}}
    cfg = replace(cfg, **{k: v for k, v in choice.train.items() if k not in given})
    auto = {
        "reason": choice.reason,
        "chosen": chosen,
        "given": sorted(given),
        "predicted_chars_per_sec": round(choice.chars_per_sec),
        "planned_passes": round(choice.passes, 2),
        "calibration": timed,
    }
    if seconds is not None:
        auto["calibration_seconds"] = round(seconds, 2)
    if on_event is not None:
        on_event("note", {"message": choice.reason})
    return model_over, cfg, auto


def replan_due(auto: dict[str, Any] | None, cfg: TrainConfig, elapsed: float, timed_steps: int) -> bool:
    """Whether a run should plan again now: a timed run configured automatically, not yet re-planned, with
    REPLAN_SHARE of its time spent and enough steps timed."""
    if auto is None or "given" not in auto or "replanned" in auto or cfg.max_time is None:
        return False  # "given" is missing in runs from before re-planning: they keep their plan
    return timed_steps >= REPLAN_MIN_STEPS and elapsed >= REPLAN_SHARE * cfg.max_time


def replan_run(
    auto: dict[str, Any],
    model: ModelConfig,
    cfg: TrainConfig,
    info: dict[str, Any],
    chars_per_sec: float,
    step: int,
    device_kind: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The REPLAN_KEYS to change now (field name -> new value; max_steps may become None), and the `auto`
    record with the re-plan added (its reason is one line for the user)."""
    assert cfg.max_time is not None
    current = {**model.to_dict(), **cfg.to_dict()}
    shape = Shape(model.layers, model.hidden, model.embed, cfg.batch_size, cfg.seq_len, model.cell)
    given = set(auto["given"])
    c = replan(
        shape,
        chars_per_sec,
        model.vocab_size,
        int(info.get("train_chars", 0)),
        cfg.max_time,
        current,
        given,
        int(info.get("val_chars", 0)),
        device_kind,
    )
    new = {**c.model, **c.train}
    new.setdefault("max_steps", current["max_steps"] if "max_steps" in given else None)
    changes = {k: new[k] for k in REPLAN_KEYS if k not in given and new.get(k) != current[k]}
    predicted = float(auto.get("predicted_chars_per_sec") or 0)
    said = ", ".join(f"{_flag(k)} {_shown(current[k])} -> {_shown(v)}" for k, v in changes.items())
    reason = (
        f"re-planned at step {step:,}: measured ~{chars_per_sec:,.0f} chars/s (calibration predicted "
        f"~{predicted:,.0f}), {c.passes:.2g} passes over the text in the budget; "
        + (said if changes else "the plan stands")
    )
    record = {
        "step": step,
        "measured_chars_per_sec": round(chars_per_sec),
        "planned_passes": round(c.passes, 2),
        "changed": {k: [current[k], v] for k, v in changes.items()},
        "reason": reason,
    }
    return changes, {**auto, "replanned": record}


def _flag(name: str) -> str:
    return {"max_steps": "step cap"}.get(name, name.replace("_", " "))


def _shown(value: Any) -> str:
    return "none" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"

"""The sizing rule: the model and training settings that make the best use of a budget, a corpus and a device.

`choose` is a pure function of what is known before training starts: the budget (seconds or steps), the size of
the training text and its vocabulary, and the device's speed (a `SpeedModel`, measured by `calibrate`). It
reasons in characters read: for each candidate shape the budget buys `seconds x chars/s` of them, and

* passes over the text are capped at MAX_PASSES, where dropout reaches DROPOUT_MAX: beyond it the model
  memorises the training text, so a longer budget trains the same model and stops early (never a worse one);
* width and depth: the largest candidate that reads at least CHARS_PER_PARAM characters per parameter within
  that plan (a bigger model learns more per character, but one that reads too little is still far from
  trained when the plan ends). On a small text that candidate may reach the pass cap long before the budget
  ends; then a larger one is taken, if it still reads STEP_UP_PASSES passes and has at most
  PARAMS_PER_TEXT_CHAR parameters per character of text: on 180,000 characters for a minute, a 2x256 reading
  8 passes generalises better than a 1x256 stopped at 12 (benchmarks/auto_vs_fixed.py, both CPU kinds), and in
  the sweep a 2x256 had matched the finished 1x256's 12 passes after 5.6 passes of a longer schedule;
* dropout from the planned passes: none below DROPOUT_FROM (SHORT_DROPOUT_FROM in a plan of fewer than
  MIN_STEPS steps), then from DROPOUT_START up to DROPOUT_MAX (see dropout_for);
* batch: 32 streams, doubled while that trains BATCH_GAIN times faster (a GPU, whose step is mostly the
  recurrence's latency); the learning rate grows with the batch's square root;
* validation: often enough for the plateau rule (about EVALS_PER_RUN per run), rarely enough to cost at most
  EVAL_COST of the time.

Each candidate is sized as the run's cell (`overrides["cell"]`, a GRU when not given): its own parameter count
and its own speed. `weighed` names the steps the batch rule weighed for a choice, for calibration to time.
`replan` is the same rule once a run has measured its own speed: with the model and its step fixed (they
cannot change once training has started), what the budget buys at that speed decides the dropout, the pass
cap (the step count the schedule follows) and the validation interval, as they would have been chosen had
the speed been known from the start.

Every option the user gave is kept as given, and the rest is chosen around it. The constants were fit to
benchmarks/sweep.py (tiny Shakespeare, a 200,000-character part of it, corpora/markov.txt; see the README).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from charlm.training.calibrate import Shape, SpeedModel

CANDIDATES = ((1, 128), (1, 256), (2, 256), (2, 384), (2, 512), (2, 768), (3, 1024), (3, 1536))
CHARS_PER_PARAM = 3.0  # the fewest characters per parameter a chosen model reads in its plan
STEP_UP_PASSES, PARAMS_PER_TEXT_CHAR = 5.0, 4.0  # see pick: when a capped plan gives way to a larger model
DROPOUT_FROM, MAX_PASSES = 5.0, 12.0  # dropout: none below 5 passes, 0.1 at 5, rising to 0.2 at 12 (the cap)
SHORT_DROPOUT_FROM = 9.0  # the same in a plan of fewer than MIN_STEPS steps: none below 9 passes
DROPOUT_START, DROPOUT_MAX = 0.1, 0.2
OVERHEAD = 0.9  # share of a run's time spent in training steps (the rest: validation, batching)
BATCH_GAIN, MIN_STEPS = 1.4, 2000  # see batch_for
BATCH_START, BATCH_MAX = 32, 1024  # the batch starts at 32 streams (tuned on a CPU) and may double up to 1024
BASE_LR, BASE_BATCH, MAX_LR = 3e-3, 32, 1e-2
SEQ_LEN = 64
EVAL_SPEEDUP = 3.0  # validation runs forward only: about this many times the training speed
EVAL_COST, EVALS_PER_RUN = 0.04, 20
MODEL_KEYS = ("embed", "hidden", "layers", "dropout")
TRAIN_KEYS = ("batch_size", "seq_len", "lr", "weight_decay", "eval_every")
REPLAN_KEYS = ("dropout", "max_steps", "eval_every")  # what a run's measured speed may change mid-run


@dataclass(frozen=True)
class AutoChoice:
    model: dict[str, Any]  # ModelConfig fields: embed, hidden, layers, dropout
    train: dict[str, Any]  # TrainConfig fields: batch_size, seq_len, lr, eval_every, and max_steps when capped
    chars_per_sec: float  # predicted training speed of the chosen shape
    planned_chars: float  # characters it will read: what the budget buys, at most MAX_PASSES over the text
    passes: float  # planned_chars over the training text's length
    reason: str  # one or two lines for the user: what was chosen and why
    shape: Shape  # the chosen shape and step, as the speed model saw it


@dataclass(frozen=True)
class Plan:
    shape: Shape
    chars_per_sec: float
    bought: float  # characters the budget buys for this shape
    chars: float  # characters it will read: `bought`, at most MAX_PASSES passes over the text

    def steps(self) -> int:
        return max(1, int(self.chars // (self.shape.batch_size * self.shape.seq_len)))


def dropout_for(passes: float, steps: int = MIN_STEPS) -> float:
    """None below DROPOUT_FROM passes over the text, then DROPOUT_START, rising in a straight line to DROPOUT_MAX
    at MAX_PASSES; but in a plan of fewer than MIN_STEPS steps none below SHORT_DROPOUT_FROM passes, rising from
    there. Dropout makes a CPU's step 10-15% slower (2x256, batch 32: 69 ms a step without, 77-80 ms with 0.14)
    and slows learning, which a short run cannot pay back before it ends: on 180,000 characters for a minute a
    2x256 reading 8 passes in 826 steps reached 1.5421 nats/char without dropout and 1.5594 with 0.14. A long
    run memorises without it: tiny Shakespeare for 10 minutes, a 2x384 reading 9 passes in 4,409 steps without
    dropout was best at step 3,500 (1.4937) and ended at 1.5054 (AMD EPYC, bf16)."""
    start = DROPOUT_FROM if steps >= MIN_STEPS else SHORT_DROPOUT_FROM
    if passes < start:
        return 0.0
    share = min(1.0, (passes - start) / (MAX_PASSES - start))
    return round(DROPOUT_START + (DROPOUT_MAX - DROPOUT_START) * share, 2)


def batch_for(
    shape: Shape, speed: SpeedModel, vocab_size: int, train_chars: int, reads: Callable[[Shape], float]
) -> int:
    """32 streams, doubled while that reads BATCH_GAIN times as many characters a second (a step that is mostly
    the recurrence's latency, as on a GPU) and the doubled batch's own plan (`reads`: the characters a plan at
    that step would read) still has MIN_STEPS steps.
    On a 2-core CPU a doubled batch read 1.2-1.36x as many characters a second, and trained worse in the same
    time: tiny Shakespeare for 3 minutes, 2x256 without dropout at 64 streams 1.4576 nats/char (33k chars/s,
    1,469 steps), at 32 streams 1.4499 (28k, 2,460 steps; AMD EPYC, bf16)."""
    fits = max(1, (train_chars - 1) // (16 * shape.seq_len))  # every stream at least 16 windows long
    b = min(BATCH_START, max(1, (train_chars - 1) // shape.seq_len))
    while 2 * b <= min(fits, BATCH_MAX):
        now, wider = speed.chars_per_sec(shape.with_batch(b), vocab_size), shape.with_batch(2 * b)
        faster = speed.chars_per_sec(wider, vocab_size)
        if faster < BATCH_GAIN * now or reads(wider) < MIN_STEPS * 2 * b * shape.seq_len:
            break
        b *= 2
    return b


def lr_for(batch_size: int) -> float:
    """BASE_LR at the batch it was tuned for, growing with the square root of the batch (more stable gradients)."""
    return round(min(MAX_LR, BASE_LR * math.sqrt(batch_size / BASE_BATCH)), 5)


def eval_every_for(plan: Plan, val_chars: int) -> int:
    """About EVALS_PER_RUN validations, but fewer when a validation would cost over EVAL_COST of the time."""
    step_s = plan.shape.batch_size * plan.shape.seq_len / plan.chars_per_sec
    eval_s = min(val_chars, 2_000_000) / (plan.chars_per_sec * EVAL_SPEEDUP)  # validation reads at most 2M
    every = max(plan.steps() / EVALS_PER_RUN, eval_s / (EVAL_COST * step_s), 10)
    unit = 50 if every > 100 else 10  # round numbers, for the progress display
    return int(math.ceil(every / unit) * unit)


def _plans(
    over: dict[str, Any], vocab_size: int, train_chars: int, speed: SpeedModel, seconds: float | None, steps: int | None
) -> list[Plan]:
    """A plan per candidate shape, with the given options in place of the candidate's own values."""

    def bought(s: Shape) -> float:  # characters the budget buys for this shape: in its time or its steps
        chars = [seconds * OVERHEAD * speed.chars_per_sec(s, vocab_size)] if seconds is not None else []
        return min(chars + ([steps * s.batch_size * s.seq_len] if steps is not None else []))

    def reads(s: Shape) -> float:  # what a plan at this shape reads: what it buys, at most MAX_PASSES passes
        return min(bought(s), MAX_PASSES * train_chars)

    shapes = {
        Shape(
            over.get("layers", layers),
            over.get("hidden", hidden),
            over.get("embed", 64),
            over.get("batch_size", BATCH_START),
            over.get("seq_len", SEQ_LEN),
            over.get("cell", "gru"),
        )
        for layers, hidden in CANDIDATES
    }
    plans = []
    for s in shapes:
        if not over.get("batch_size"):
            s = s.with_batch(batch_for(s, speed, vocab_size, train_chars, reads))
        plans.append(Plan(s, speed.chars_per_sec(s, vocab_size), bought(s), reads(s)))
    return sorted(plans, key=lambda p: p.shape.params(vocab_size))


def pick(plans: list[Plan], vocab_size: int, train_chars: int) -> Plan:
    """The largest plan whose model reads at least CHARS_PER_PARAM characters per parameter; else the smallest.
    When that plan is cut short by the pass cap (its budget buys more than MAX_PASSES), the largest plan that
    still reads STEP_UP_PASSES passes, with at most PARAMS_PER_TEXT_CHAR parameters per character of the text:
    the time the cap would leave unused goes into a larger model instead."""
    fit = [p for p in plans if p.chars >= CHARS_PER_PARAM * p.shape.params(vocab_size)]
    chosen = fit[-1] if fit else plans[0]
    if chosen.chars < chosen.bought:
        larger = [
            p
            for p in plans
            if p.shape.params(vocab_size) > chosen.shape.params(vocab_size)
            and p.chars >= STEP_UP_PASSES * train_chars
            and p.shape.params(vocab_size) <= PARAMS_PER_TEXT_CHAR * train_chars
        ]
        chosen = larger[-1] if larger else chosen
    return chosen


def choose(
    vocab_size: int,
    train_chars: int,
    speed: SpeedModel,
    budget_seconds: float | None = None,
    budget_steps: int | None = None,
    val_chars: int = 0,
    device_kind: str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> AutoChoice:
    """The model and training settings for this budget, text and device. `overrides`, the options the user gave
    by ModelConfig/TrainConfig field name (None or "auto" for not given), are kept, and the rest is chosen
    around them: a given --hidden still gets its depth, dropout and batch chosen for it."""
    if budget_seconds is None and budget_steps is None:
        raise ValueError("choose needs a budget: budget_seconds or budget_steps")
    over = {k: v for k, v in (overrides or {}).items() if v is not None and v != "auto"}
    plan = pick(_plans(over, vocab_size, train_chars, speed, budget_seconds, budget_steps), vocab_size, train_chars)
    s, passes = plan.shape, plan.chars / max(train_chars, 1)
    model = {"embed": s.embed, "hidden": s.hidden, "layers": s.layers, "dropout": dropout_for(passes, plan.steps())}
    train = {"batch_size": s.batch_size, "seq_len": s.seq_len, "lr": lr_for(s.batch_size)}
    train["eval_every"] = eval_every_for(plan, val_chars)
    if plan.chars < plan.bought and budget_steps is None:  # a given --max-steps is kept; a time budget is capped
        train["max_steps"] = plan.steps()
    model.update({k: over[k] for k in MODEL_KEYS if k in over})
    train.update({k: over[k] for k in TRAIN_KEYS if k in over})
    reason = _reason(model, train, plan, train_chars, budget_seconds, budget_steps, device_kind, over)
    return AutoChoice(model, train, plan.chars_per_sec, plan.chars, passes, reason, s)


def weighed(shape: Shape, batch_given: bool = False) -> list[Shape]:
    """The steps `batch_for` weighed for a chosen shape: its own batch, the doubling it tried next, and the
    batch below (when it doubled): what calibration times, so the batch is chosen on measured speeds."""
    if batch_given:
        return [shape]
    out = [shape, shape.with_batch(2 * shape.batch_size)]
    return out + ([shape.with_batch(shape.batch_size // 2)] if shape.batch_size > BATCH_START else [])


def replan(
    shape: Shape,
    chars_per_sec: float,
    vocab_size: int,
    train_chars: int,
    budget_seconds: float,
    current: dict[str, Any],
    given: set[str],
    val_chars: int = 0,
    device_kind: str = "cpu",
) -> AutoChoice:
    """The plan `choose` would have made, had it known that `shape` trains at `chars_per_sec`: the shape and
    its step (batch, sequence length, learning rate) kept as they are in `current` (the run's settings by
    field name), the REPLAN_KEYS the user gave (`given`) kept too, and a step budget given by the user kept."""
    speed = SpeedModel.fit({shape: chars_per_sec}, vocab_size)
    keep = ("embed", "hidden", "layers", "cell", "batch_size", "seq_len", "lr", "weight_decay")
    over = {k: current[k] for k in keep if k in current}
    over.update({k: current[k] for k in REPLAN_KEYS if k in given and k != "max_steps"})
    steps = current.get("max_steps") if "max_steps" in given else None
    return choose(vocab_size, train_chars, speed, budget_seconds, steps, val_chars, device_kind, over)


def _reason(
    model: dict[str, Any],
    train: dict[str, Any],
    plan: Plan,
    train_chars: int,
    seconds: float | None,
    steps: int | None,
    device_kind: str,
    over: dict[str, Any],
) -> str:
    """E.g. 'auto: 2x384, dropout 0.1, batch 32x64, lr 0.003: 10 min at ~11k chars/s on cpu is ~5.9M characters,
    5.3 passes over 1.1M'; a second line when passes were capped or options were kept as given."""
    s = plan.shape
    if steps is not None and steps * s.batch_size * s.seq_len <= plan.bought:
        bought = f"{steps:,} steps of {s.batch_size}x{s.seq_len}"
    else:
        bought = f"{_duration(seconds or 0.0)} at ~{_count(plan.chars_per_sec)} chars/s on {device_kind}"
    line = (
        f"auto: {model['layers']}x{model['hidden']}, dropout {model['dropout']:g}, batch {train['batch_size']}x"
        f"{train['seq_len']}, lr {train['lr']:g}: {bought} is ~{_count(plan.bought)} characters, "
        f"{_passes(plan.bought / max(train_chars, 1))} passes over {_count(train_chars)}"
    )
    notes = []
    if "max_steps" in train:
        notes.append(
            f"it stops after {plan.chars / max(train_chars, 1):.0f} passes ({train['max_steps']:,} steps): "
            "more would memorise the text"
        )
    kept = [f"--{k.replace('_', '-')}" for k in (*MODEL_KEYS, *TRAIN_KEYS) if k in over]
    if kept:
        notes.append(f"kept as given: {', '.join(kept)}")
    return line + ("\n" + "; ".join(notes) if notes else "")


def _count(n: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{suffix}" if n < 10 * size else f"{n / size:.0f}{suffix}"
    return f"{n:.0f}"


def _passes(n: float) -> str:
    return f"{n:.1f}" if n < 10 else f"{n:,.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"

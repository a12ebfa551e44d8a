"""Training a forecaster on one series: the shape chosen for its length and budget, windows of its steps
read side by side, AdamW, the best validation kept, and a run folder of checkpoints like every charlm run.

The last steps of the series (as many as the horizon, at most a quarter of those that can be predicted) are
held out for validation: each evaluation scores them one step ahead, and the weights that scored best are the
ones saved. The model's linear part starts as the least-squares autoregression on the lags, so training only
ever keeps a GRU that validates better than it.

Each checkpoint holds the best weights in model.safetensors, and the weights being trained, the optimizer's
moments and the random state in state.safetensors, so `--resume` continues where training stopped. A run
keeps one checkpoint, the newest.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm import checkpoint as ckpt_io
from charlm.errors import CheckpointError, SeriesError, UsageError
from charlm.series.data import Series, detect_season
from charlm.series.model import (
    LIKELIHOODS,
    MAX_SEASONS_BACK,
    RECENT_CHANGES,
    ForecasterConfig,
    GRUForecaster,
    count_params,
    feature_matrix,
    nll,
    transform,
)
from charlm.training.types import OnEvent, _silent

KIND = "forecaster"
DEFAULT_MAX_TIME = 30.0  # seconds: series are small
EVAL_EVERY = 10  # steps between validations
PATIENCE = 30  # validations without a new best before training stops
SAVE_EVERY = 3.0  # seconds between checkpoints while training (and one at the end)
BATCH = 32  # windows per step
MAX_WINDOW = 96
PRIOR_STEPS = 48  # the spread factor is shrunk towards 1 as if this many held-out steps had said 1


@dataclass
class FitOptions:
    """How to train; every field None is chosen from the series and the budget."""

    horizon: int | None = None
    season: int | None = None
    likelihood: str = "student-t"
    hidden: int | None = None
    layers: int | None = None
    lr: float = 3e-3
    max_time: float | None = None
    max_steps: int | None = None
    seed: int = 1337
    log: bool | None = None  # model log(values); None: where every value is positive and the swings grow with it

    def problems(self) -> list[str]:
        p = []
        if self.likelihood not in LIKELIHOODS:
            p.append(f"--likelihood must be one of {', '.join(LIKELIHOODS)} (got {self.likelihood!r})")
        for name in ("horizon", "season", "hidden", "layers", "max_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                p.append(f"--{name.replace('_', '-')} must be at least 1 (got {v})")
        if self.max_time is not None and not self.max_time > 0:
            p.append("--max-time must be positive")
        if not self.lr > 0:
            p.append("--lr must be positive")
        return p


@dataclass
class FitResult:
    run: Path
    checkpoint: Path
    model: GRUForecaster
    series: Series  # what it trained on (without any held-out part)
    step: int
    best_val: float
    elapsed: float
    stopped_by: str  # "max_steps", "max_time", "early_stop", "already_done", or a signal's name
    notes: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stopped_by not in ("max_steps", "max_time", "early_stop", "already_done")


# ---------------------------------------------------------------- the plan


def min_length(season: int, horizon: int) -> int:
    return max(2 * season, 8) + horizon


def default_horizon(season: int) -> int:
    return season if season > 1 else 10


def _swings_grow(values: np.ndarray, season: int) -> bool:
    """Whether the series' changes grow with its level (a reason to model its log)."""
    if np.min(values) <= 0:
        return False
    width = max(season, 8)
    blocks = [values[i : i + width] for i in range(0, len(values) - width + 1, width)]
    if len(blocks) < 4:
        return False
    level = np.array([b.mean() for b in blocks])
    swing = np.array([np.abs(np.diff(b)).mean() for b in blocks])
    if level.max() < 1.5 * level.min() or swing.std() == 0:
        return False
    return float(np.corrcoef(level, swing)[0, 1]) > 0.6


def plan(series: Series, opts: FitOptions, backtest: bool = False) -> tuple[ForecasterConfig, int, list[str]]:
    """The model's config for this series, the horizon, and what was chosen and why (lines for stderr). With
    `backtest`, the config is for the series without its last `horizon` values (the season is found on all)."""
    problems = opts.problems()
    if problems:
        raise UsageError(problems)
    if opts.season is not None:
        season, why = opts.season, "given"
    else:
        season, why = detect_season(series)
    horizon = opts.horizon or default_horizon(season)
    need = min_length(season, horizon) + (horizon if backtest else 0)
    if len(series) < need:
        raise SeriesError(
            f"{series.source or series.name}: {len(series)} values, too few for a season of {season} and a horizon "
            f"of {horizon}: at least {need} are needed (two seasons, or 8 values, plus the horizon"
            + (" twice: a backtest holds one out)" if backtest else ")")
            + ("; --season sets a shorter season" if opts.season is None and season > 1 else "")
        )
    if backtest:
        series = held_out(series, horizon)[0]
    n = len(series)
    seasons_back = 0
    if season > 1:  # as many seasons back as leave half the series (at least a season) to learn from
        seasons_back = max(
            [k for k in range(1, MAX_SEASONS_BACK + 1) if n - (k * season + 2) >= max(season, 12, n // 2)] or [1]
        )
    log = opts.log if opts.log is not None else _swings_grow(series.values, season)
    if log and np.min(series.values) <= 0:
        raise SeriesError(f"{series.source or series.name}: a log scale needs every value above 0")
    z = np.log(series.values) if log else series.values
    scale = float(np.mean(np.abs(np.diff(z)))) or 1.0
    hidden = opts.hidden or (32 if n < 1000 else 64)
    cfg = ForecasterConfig(
        season=season,
        seasons_back=seasons_back,
        recent=RECENT_CHANGES if season > 1 else 2 * RECENT_CHANGES,
        calendar=series.calendar_phase() is not None,
        hidden=hidden,
        layers=opts.layers or 1,
        likelihood=opts.likelihood,
        log=bool(log),
        scale=scale,
    )
    notes = [
        f"season {season} ({why}); horizon {horizon}; "
        f"{'log scale' if log else 'linear scale'}, changes divided by {scale:.4g}",
        f"model: nn.GRU {cfg.layers} x {cfg.hidden} over {cfg.n_features} features "
        f"({cfg.recent} recent changes, {seasons_back} season(s) back"
        + (", calendar" if cfg.calendar else "")
        + f"), {opts.likelihood} likelihood",
    ]
    return cfg, horizon, notes


def held_out(series: Series, horizon: int) -> tuple[Series, np.ndarray]:
    """The series without its last `horizon` values, and those values."""
    times = series.timestamps[:-horizon] if series.timestamps is not None else None
    return replace(series, values=series.values[:-horizon], timestamps=times), series.values[-horizon:]


# ---------------------------------------------------------------- training


class ForecastTrainer:
    """Trains one forecaster into a run folder; reports through `on_event` like charlm's Trainer."""

    def __init__(
        self,
        run: Path,
        series: Series,
        cfg: ForecasterConfig,
        opts: FitOptions,
        horizon: int,
        on_event: OnEvent | None = None,
        resume_from: ckpt_io.Checkpoint | None = None,
    ) -> None:
        self.run, self.series, self.cfg, self.opts, self.horizon = run, series, cfg, opts, horizon
        self.emit = on_event or _silent
        self.stop_requested: str | None = None
        torch.manual_seed(opts.seed)
        self.gen = torch.Generator().manual_seed(opts.seed)
        cfg.spread = 1.0  # training fits the spread itself; the factor is fitted afterwards (calibrate)
        self.model = GRUForecaster(cfg)
        z = transform(series.values, cfg)
        self.x, self.y = feature_matrix(z, cfg, series.calendar_phase())
        n, first = len(series), cfg.prefix
        self.val_n = max(1, min(horizon, (n - first) // 4))
        self.train_end = n - self.val_n  # targets [first, train_end) train; [train_end, n) validate
        self.window = min(MAX_WINDOW, max(2 * cfg.season, 32), self.train_end - first)
        self.first = first
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=opts.lr, weight_decay=1e-4)
        self.step, self.elapsed, self.evals_since_best = 0, 0.0, 0
        self.best_val = math.inf
        self.best_weights: dict[str, torch.Tensor] = {}
        if resume_from is not None:
            self._restore(resume_from)
        else:
            self.model.init_from_fit(self.x[first : self.train_end], self.y[first : self.train_end])

    # ------------------------------------------------ the pieces

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """BATCH windows of `window` steps at random places among the training steps."""
        hi = self.train_end - self.window - self.first + 1
        starts = torch.randint(0, hi, (BATCH,), generator=self.gen) + self.first
        idx = starts[:, None] + torch.arange(self.window)[None]
        return self.x[idx], self.y[idx]

    def _val_params(self, model: GRUForecaster) -> torch.Tensor:
        """The predicted parameters of the held-out steps, each one step ahead after a window of warm-up."""
        lo = max(self.first, self.train_end - self.window)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            params, _ = model(self.x[None, lo:])
        model.train(was_training)
        return params[0, self.train_end - lo :]

    def validate(self) -> float:
        """The mean loss on the held-out steps."""
        return float(nll(self._val_params(self.model), self.y[self.train_end :], self.cfg).mean())

    def calibrate(self) -> float:
        """The spread factor (0.7 to 3) that gives the best weights the lowest loss on the held-out steps (a
        small series' model is surer of itself on the steps it learned from than on new ones), shrunk towards 1
        by PRIOR_STEPS, as so few steps say it only roughly."""
        best = copy.deepcopy(self.model)  # a copy, not a new model: that would draw from the random state
        best.load_state_dict(self.best_weights or self.model.state_dict())
        params, y = self._val_params(best), self.y[self.train_end :]
        factors = np.exp(np.linspace(np.log(0.7), np.log(3.0), 41))
        losses = []
        for c in factors:
            self.cfg.spread = float(c)
            losses.append(float(nll(params, y, self.cfg).mean()))
        self.cfg.spread = 1.0
        c, m = float(factors[int(np.argmin(losses))]), len(y)
        return math.sqrt((PRIOR_STEPS + m * c * c) / (PRIOR_STEPS + m))

    def train_step(self) -> float:
        x, y = self.batch()
        params, _ = self.model(x)
        loss = nll(params, y, self.cfg).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.step += 1
        return float(loss.detach())

    def meta(self, spread: float = 1.0) -> dict[str, Any]:
        return {
            "kind": KIND,
            "step": self.step,
            "model": {**self.cfg.to_dict(), "spread": spread},
            "train": {**{k: getattr(self.opts, k) for k in ("likelihood", "lr", "max_time", "max_steps", "seed")},
                      "horizon": self.horizon, "window": self.window, "batch": BATCH, "val_steps": self.val_n},
            "series": self.series.to_dict(),
            "metrics": {"val_loss": self.best_val if math.isfinite(self.best_val) else None},
            "elapsed": self.elapsed,
            "evals_since_best": self.evals_since_best,
            "optimizer": {"param_groups": self.opt.state_dict()["param_groups"]},
        }  # fmt: skip

    def save(self, spread: float = 1.0) -> Path:
        from charlm.training.distributed import RankInfo
        from charlm.training.state import state_tensors

        state = state_tensors(self.opt, None, torch.device("cpu"), RankInfo())
        state["rng.batches"] = self.gen.get_state()
        state.update({f"current.{k}": v for k, v in self.model.state_dict().items()})
        try:
            path = ckpt_io.save(self.run, self.meta(spread), self.best_weights or self.model.state_dict(), state)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; continue later with: charlm forecast --resume --out {self.run}") from None
        ckpt_io.prune(self.run, keep=1)
        self.emit("save", {"path": path, "step": self.step})
        return path

    def _restore(self, ck: ckpt_io.Checkpoint) -> None:
        from charlm.training.state import load_optimizer

        state = ckpt_io.read_tensors(ck, ckpt_io.STATE)
        current = {k.removeprefix("current."): v for k, v in state.items() if k.startswith("current.")}
        try:
            self.model.load_state_dict(current)
        except RuntimeError as e:
            raise CheckpointError(f"{ck.path / ckpt_io.STATE}: does not fit the model ({str(e)[:120]})") from None
        load_optimizer(self.opt, state, ck)
        torch.set_rng_state(state["rng.cpu"])
        self.gen.set_state(state["rng.batches"])
        self.best_weights = ckpt_io.read_tensors(ck, ckpt_io.WEIGHTS)
        self.step, self.elapsed = ck.step, float(ck.meta.get("elapsed", 0.0))
        self.evals_since_best = int(ck.meta.get("evals_since_best", 0))
        val = ck.meta.get("metrics", {}).get("val_loss")
        self.best_val = float(val) if val is not None else math.inf

    def done_reason(self) -> str | None:
        if self.stop_requested:
            return self.stop_requested
        if self.opts.max_steps is not None and self.step >= self.opts.max_steps:
            return "max_steps"
        if self.opts.max_time is not None and self.elapsed >= self.opts.max_time:
            return "max_time"
        if self.evals_since_best >= PATIENCE:
            return "early_stop"
        return None

    def _evaluate(self) -> None:
        val = self.validate()
        best = val < self.best_val
        if best:
            self.best_val, self.evals_since_best = val, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.evals_since_best += 1
        self.emit("eval", {"step": self.step, "val_loss": val, "best": best})

    # ------------------------------------------------ the loop

    def fit(self) -> FitResult:
        from charlm.inference.threads import intra_op_threads
        from charlm.training.run import stop_on_signals

        # One thread: a model this small waits on torch's per-operation threads longer than it computes.
        with ckpt_io.RunLock(self.run), stop_on_signals(self), intra_op_threads(1):  # type: ignore[arg-type]
            already = self.done_reason()
            if already is not None and self.step > 0:
                return self._result("already_done", self.save(self.calibrate()))
            self.emit("start", {"params": count_params(self.model), "step": self.step, "steps": len(self.y)})
            if self.step == 0:
                self._evaluate()  # the autoregression alone: the GRU must beat it to be kept
            start, base, last_save = time.monotonic(), self.elapsed, time.monotonic()
            loss_ema: float | None = None
            while (reason := self.done_reason()) is None:
                loss = self.train_step()
                loss_ema = loss if loss_ema is None else 0.9 * loss_ema + 0.1 * loss
                self.elapsed = base + time.monotonic() - start
                if self.step % EVAL_EVERY == 0:
                    self._evaluate()
                self.emit("step", {"step": self.step, "loss": loss_ema, "elapsed": self.elapsed,
                                   "progress": self.progress(), "val_loss": self.best_val})  # fmt: skip
                if time.monotonic() - last_save >= SAVE_EVERY:
                    self.save()
                    last_save = time.monotonic()
            spread = self.calibrate()
            self.emit("note", {"message": f"spread factor {spread:.3g}, fitted on the last {self.val_n} values"})
            path = self.save(spread)
        return self._result(reason, path)

    def progress(self) -> float:
        parts = [self.step / self.opts.max_steps] if self.opts.max_steps else []
        if self.opts.max_time:
            parts.append(self.elapsed / self.opts.max_time)
        return min(1.0, max(parts + [self.evals_since_best / PATIENCE]))

    def _result(self, reason: str, path: Path) -> FitResult:
        self.cfg.spread = float(ckpt_io.read_meta(path)["model"]["spread"])
        if self.best_weights:
            self.model.load_state_dict(self.best_weights)
        self.model.eval()
        return FitResult(self.run, path, self.model, self.series, self.step, self.best_val, self.elapsed, reason)


# ---------------------------------------------------------------- loading a run


def load_run(path: Path | None) -> tuple[ckpt_io.Checkpoint, GRUForecaster, Series, dict[str, Any]]:
    """The newest checkpoint of a forecaster run (a run folder, a step folder or a file in one), its model in
    eval mode with the best weights, the series it trained on, and its training settings."""
    ck = ckpt_io.resolve(path, "latest")
    if ck.meta.get("kind") != KIND:
        raise CheckpointError(f"{ck.path}: a language model, not a forecaster (charlm forecast makes those)")
    try:
        cfg = ForecasterConfig.from_dict(ck.meta["model"])
        series = Series.from_dict(ck.meta["series"])
        train = dict(ck.meta["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ck.path / ckpt_io.META}: a field has a wrong value ({e})") from None
    model = GRUForecaster(cfg)
    ckpt_io.load_weights(ck, model)
    return ck, model.eval(), series, train

"""One forecasting job from start to end: train (or resume, or load a saved run and append new observations),
forecast from sample paths, and with a backtest score the held-out values. The CLI and `forecast()` both call
run_forecast.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from charlm import checkpoint as ckpt_io
from charlm.config import parse_duration
from charlm.errors import SeriesError, UsageError
from charlm.series.data import Series, advance, check_values
from charlm.series.forecast import DEFAULT_PATHS, Forecast, sample_paths, summarise
from charlm.series.train import DEFAULT_MAX_TIME, FitOptions, ForecastTrainer, held_out, load_run, plan
from charlm.training.types import OnEvent, _silent

MIN_PATHS = 100


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; the run folder holds a checkpoint to --resume from."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@dataclass
class ForecastJob:
    series: Series | None = None  # with from_run: new observations (or the saved series with new ones after it)
    horizon: int | None = None
    season: int | None = None
    likelihood: str = "student-t"
    max_time: float | str | None = None
    max_steps: int | None = None
    hidden: int | None = None
    layers: int | None = None
    paths: int = DEFAULT_PATHS
    seed: int = 1337
    out: Path | None = None  # None: a temporary run folder, removed at the end
    resume: bool = False
    from_run: Path | None = None
    backtest: bool = False
    log: bool | None = None
    notes: list[str] = field(default_factory=list)

    def options(self) -> FitOptions:
        budget = self.max_time
        if isinstance(budget, str):
            try:
                budget = parse_duration(budget)
            except ValueError as e:
                raise UsageError(f"--max-time: {e}") from None
        if budget is None and self.max_steps is None:
            budget = DEFAULT_MAX_TIME
        return FitOptions(
            horizon=self.horizon, season=self.season, likelihood=self.likelihood, hidden=self.hidden,
            layers=self.layers, max_time=budget, max_steps=self.max_steps, seed=self.seed, log=self.log,
        )  # fmt: skip


def extend(saved: Series, given: Series) -> tuple[Series, int]:
    """The saved series with the new observations in `given` after it: `given` either starts with the saved
    series (the same values, or the same timestamps) or holds only what came after. Returns it and how many
    values are new."""
    n = len(saved)
    if saved.timestamps is not None and given.timestamps is not None:
        last = saved.timestamps[-1]
        keep = [i for i, t in enumerate(given.timestamps) if t > last]
        if keep and keep[0] > 0 and given.timestamps[keep[0] - 1] != last:
            raise SeriesError(f"{given.source}: its timestamps overlap the saved series' without reaching its last")
        new_t, new_v = [given.timestamps[i] for i in keep], given.values[keep]
        if new_t and saved.step is not None:
            want = advance(last, saved.step, 1)
            if new_t[0] != want:
                raise SeriesError(
                    f"{given.source}: the first new observation is at {new_t[0].isoformat()}, but the saved series "
                    f"ends at {last.isoformat()} (next step {want.isoformat()})"
                )
        times = saved.timestamps + new_t
    else:  # values alone: new ones continue the saved series' step, where it has one
        prefix = len(given) >= n and np.allclose(given.values[:n], saved.values, rtol=1e-9, atol=0)
        new_v = given.values[n:] if prefix else given.values
        times = None
        if saved.timestamps is not None and saved.step is not None:
            times = saved.timestamps + [advance(saved.timestamps[-1], saved.step, k) for k in range(1, len(new_v) + 1)]
    merged = replace(saved, values=np.concatenate([saved.values, new_v]), timestamps=times, filled=list(saved.filled))
    return check_values(merged), len(new_v)


def _paths(job: ForecastJob) -> int:
    if job.paths < MIN_PATHS:
        raise UsageError(f"--paths must be at least {MIN_PATHS} (got {job.paths}): fewer give ragged quantiles")
    return job.paths


def _from_run(job: ForecastJob, on_event: OnEvent) -> Forecast:
    ck, model, series, train = load_run(job.from_run)
    if job.series is not None:
        series, added = extend(series, job.series)
        on_event("note", {"message": f"{added} new observation(s) after the {len(series) - added} it trained on"})
    horizon = job.horizon or int(train.get("horizon", model.cfg.season))
    paths = sample_paths(model, series, horizon, _paths(job), job.seed)
    return summarise(paths, series, model.cfg.season, ck.path.parent)


def _resume_point(run: Path) -> ckpt_io.Checkpoint:
    ckpts = ckpt_io.list_checkpoints(run) if run.is_dir() else []
    if not ckpts:
        raise UsageError(f"--resume: {run} holds no checkpoint to resume from")
    ck = ckpts[-1]
    if ck.kind != "forecaster":
        raise UsageError(f"--resume: {run} is a language model's run, not a forecaster's")
    return ck


def run_forecast(job: ForecastJob, on_event: OnEvent | None = None) -> Forecast:
    """Do the job; see ForecastJob. Progress and notes go through `on_event` (charlm's event kinds)."""
    emit = on_event or _silent
    if job.from_run is not None:
        return _from_run(job, emit)
    opts = job.options()
    _paths(job)
    temp = job.out is None
    run = Path(tempfile.mkdtemp(prefix="charlm-forecast-")) if temp else job.out
    assert run is not None
    resume_from = None
    if job.resume:
        resume_from = _resume_point(run)
        saved = Series.from_dict(resume_from.meta["series"])
        opts = replace(opts, horizon=job.horizon or resume_from.meta["train"]["horizon"])
    elif run.is_dir() and ckpt_io.list_checkpoints(run):
        raise UsageError(f"--out {run} already holds a run; choose another folder, or add --resume to continue it")
    if job.series is None and resume_from is None:
        raise UsageError("give a SERIES to forecast (or --from RUN to forecast again from a saved run)")
    try:
        full = job.series if job.series is not None else saved
        cfg, horizon, notes = plan(full, opts, job.backtest)
        fit_series, actual = held_out(full, horizon) if job.backtest else (full, None)
        if resume_from is not None:
            fit_series = Series.from_dict(resume_from.meta["series"])
            if job.series is not None and not np.array_equal(fit_series.values, job.series.values[: len(fit_series)]):
                raise UsageError(f"--resume: the series differs from the one {run} trained on")
            from charlm.series.model import ForecasterConfig

            cfg = ForecasterConfig.from_dict(resume_from.meta["model"])
        for line in notes:
            emit("note", {"message": line})
        trainer = ForecastTrainer(run, fit_series, cfg, opts, horizon, emit, resume_from)
        result = trainer.fit()
        emit("done", {"result": result})
        if result.interrupted:
            raise TrainingInterrupted(result.stopped_by)
        paths = sample_paths(result.model, fit_series, horizon, job.paths, job.seed)
        fc = summarise(paths, fit_series, cfg.season, None if temp else run)
        if actual is not None:
            from charlm.series.backtest import score

            fc.backtest = score(actual, fit_series.values, cfg.season, paths)
        return fc
    finally:
        if temp:
            shutil.rmtree(run, ignore_errors=True)


def forecast(
    values: Any,
    horizon: int | None = None,
    *,
    timestamps: Any = None,
    season: int | None = None,
    likelihood: str = "student-t",
    max_time: float | str | None = None,
    max_steps: int | None = None,
    fill: bool = False,
    paths: int = DEFAULT_PATHS,
    seed: int = 1337,
    out: str | Path | None = None,
    backtest: bool = False,
    on_event: Any = None,
) -> Forecast:
    """Train a GRU forecaster on `values` (a list, NumPy array or pandas Series; `timestamps` optional) and
    forecast the next `horizon` steps: a Forecast whose rows hold each step's median and 10%/90% quantiles.

    `max_time` is the training budget (seconds, or a duration like "20s"; 30 s by default); `out` a run folder
    to keep the trained model in (by default it lives in a temporary folder that is removed). With `backtest`,
    the last `horizon` values are held out, forecast, and scored (Forecast.backtest).
    Raises SeriesError (a UsageError) for a series that cannot be used.
    """
    from charlm.series.data import as_series

    series = as_series(values, timestamps, fill)
    job = ForecastJob(
        series=series, horizon=horizon, season=season, likelihood=likelihood, max_time=max_time,
        max_steps=max_steps, paths=paths, seed=seed, out=Path(out) if out is not None else None, backtest=backtest,
    )  # fmt: skip
    return run_forecast(job, on_event)

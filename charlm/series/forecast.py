"""Forecasts: sample paths drawn side by side in one batch, summarised as one row per future step (the median
and the 10% and 90% quantiles), and `forecast()`, the Python entry point.

The GRU first reads the last window of the observed series (the same length it trained on), then its state is
copied to every path; at each future step every path draws its next change from the predicted distribution, and
the features of the step after are computed from each path's own history, observed values and draws alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.inference.threads import intra_op_threads
from charlm.series.data import Series
from charlm.series.model import GRUForecaster, features, sample, transform, untransform

DEFAULT_PATHS = 200
QUANTILES = (0.1, 0.5, 0.9)


@dataclass
class ForecastRow:
    step: int  # 1 for the first step after the series
    timestamp: datetime | None
    median: float
    p10: float
    p90: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "timestamp": self.timestamp.isoformat() if self.timestamp is not None else None,
            "median": self.median,
            "p10": self.p10,
            "p90": self.p90,
        }


@dataclass
class Forecast:
    """One row per future step; `paths` (paths, horizon) are the sample paths the rows summarise."""

    rows: list[ForecastRow]
    paths: np.ndarray = field(repr=False)
    season: int = 1
    run: Path | None = None
    history: Series | None = field(default=None, repr=False)
    backtest: Any = None  # a charlm.series.backtest.Backtest when the forecast was a backtest

    @property
    def horizon(self) -> int:
        return len(self.rows)

    @property
    def median(self) -> np.ndarray:
        return np.array([r.median for r in self.rows])

    @property
    def p10(self) -> np.ndarray:
        return np.array([r.p10 for r in self.rows])

    @property
    def p90(self) -> np.ndarray:
        return np.array([r.p90 for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "horizon": self.horizon,
            "season": self.season,
            "paths": int(self.paths.shape[0]),
            "run": str(self.run) if self.run is not None else None,
            "rows": [r.to_dict() for r in self.rows],
        }
        if self.backtest is not None:
            d["backtest"] = self.backtest.to_dict()
        return d


def sample_paths(
    model: GRUForecaster, series: Series, horizon: int, n_paths: int = DEFAULT_PATHS, seed: int = 0
) -> np.ndarray:
    """`n_paths` sample paths of the `horizon` steps after `series`, in the series' own units: (paths, horizon)."""
    cfg = model.cfg
    n = len(series)
    z_obs = torch.as_tensor(transform(series.values, cfg), dtype=torch.float64)
    phase_np = series.calendar_phase(horizon)
    phase = torch.as_tensor(phase_np, dtype=torch.float64) if phase_np is not None else None
    window = min(n - cfg.prefix, 96)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), intra_op_threads(1):  # small operations: one thread beats waiting for two
        z = z_obs[None].clone()
        warm = torch.stack([features(z, t, cfg, phase)[0] for t in range(n - window, n)]).float()
        _, h = model(warm[None])
        z = torch.cat([z.expand(n_paths, n), torch.zeros(n_paths, horizon, dtype=torch.float64)], dim=1)
        h = h.expand(-1, n_paths, -1).contiguous()
        for k in range(horizon):
            t = n + k
            x = features(z, t, cfg, phase).float()
            params, h = model(x[:, None], h)
            z[:, t] = z[:, t - 1] + sample(params[:, 0].double(), cfg, gen)
    return np.asarray(untransform(z[:, n:].numpy(), cfg))


def summarise(paths: np.ndarray, series: Series, season: int, run: Path | None = None) -> Forecast:
    q10, q50, q90 = np.quantile(paths, QUANTILES, axis=0)
    future = series.future_timestamps(paths.shape[1])
    times: list[datetime | None] = list(future) if future is not None else [None] * paths.shape[1]
    rows = [
        ForecastRow(k + 1, times[k], float(q50[k]), float(q10[k]), float(q90[k])) for k in range(paths.shape[1])
    ]
    return Forecast(rows, paths, season, run, series)


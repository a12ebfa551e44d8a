"""Scoring a forecast of held-out values: MASE, sMAPE, CRPS, the mean pinball loss and the 80% interval's
coverage, for the forecaster and for the seasonal-naive forecast beside it.

MASE divides the mean absolute error by the in-sample mean absolute error of the seasonal-naive forecast one
season ahead (below 1: better than repeating the last season). sMAPE is 200/H Σ |y − f| / (|y| + |f|), in
percent. CRPS is estimated from the sample paths (E|X − y| − ½ E|X − X'|); the seasonal-naive forecast gets
the usual Gaussian intervals, σ from its in-sample errors widened by √(seasons ahead), and its CRPS in closed
form. The pinball loss is averaged over the 10%, 50% and 90% quantiles.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

Z90 = NormalDist().inv_cdf(0.9)


@dataclass
class Scores:
    mase: float
    smape: float
    crps: float
    pinball: float
    coverage: float  # share of the held-out values inside the 10%-90% interval

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Backtest:
    horizon: int
    season: int
    actual: np.ndarray
    charlm: Scores
    naive: Scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "horizon": self.horizon,
            "season": self.season,
            "actual": [float(v) for v in self.actual],
            "charlm": self.charlm.to_dict(),
            "seasonal_naive": self.naive.to_dict(),
        }


def mase_scale(history: np.ndarray, season: int) -> float:
    s = season if len(history) > season else 1
    scale = float(np.mean(np.abs(history[s:] - history[:-s])))
    return scale if scale > 0 else float(np.mean(np.abs(np.diff(history)))) or 1.0


def smape(actual: np.ndarray, point: np.ndarray) -> float:
    denom = np.abs(actual) + np.abs(point)
    return float(np.mean(np.where(denom > 0, 200 * np.abs(actual - point) / np.where(denom > 0, denom, 1), 0.0)))


def pinball(actual: np.ndarray, quantiles: dict[float, np.ndarray]) -> float:
    losses = [np.maximum(q * (actual - v), (q - 1) * (actual - v)).mean() for q, v in quantiles.items()]
    return float(np.mean(losses))


def crps_samples(actual: np.ndarray, paths: np.ndarray) -> float:
    """Mean over steps of the CRPS of each step's samples, by the sorted-samples formula (exact for them)."""
    m = paths.shape[0]
    x = np.sort(paths, axis=0)
    term1 = np.mean(np.abs(x - actual[None]), axis=0)
    weights = (2 * np.arange(1, m + 1) - m - 1)[:, None]
    term2 = np.sum(weights * x, axis=0) / (m * m)
    return float(np.mean(term1 - term2))


def crps_gaussian(actual: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    z = (actual - mu) / sigma
    nd = NormalDist()
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    cdf = np.array([nd.cdf(v) for v in z])
    return float(np.mean(sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))))


def seasonal_naive(history: np.ndarray, season: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The last season repeated, and each step's σ (in-sample one-season-ahead errors, × √(seasons ahead))."""
    s = season if len(history) > season else 1
    point = np.array([history[len(history) - s + (k % s)] for k in range(horizon)])
    resid = history[s:] - history[:-s]
    sigma = float(np.sqrt(np.mean(resid**2))) or 1e-9
    ahead = np.arange(horizon) // s + 1
    return point, sigma * np.sqrt(ahead)


def score(actual: np.ndarray, history: np.ndarray, season: int, paths: np.ndarray) -> Backtest:
    """The forecaster's sample paths and the seasonal-naive forecast, scored on the held-out `actual`."""
    scale = mase_scale(history, season)
    q10, q50, q90 = np.quantile(paths, (0.1, 0.5, 0.9), axis=0)
    ours = Scores(
        mase=float(np.mean(np.abs(actual - q50)) / scale),
        smape=smape(actual, q50),
        crps=crps_samples(actual, paths),
        pinball=pinball(actual, {0.1: q10, 0.5: q50, 0.9: q90}),
        coverage=float(np.mean((actual >= q10) & (actual <= q90))),
    )
    point, sigma = seasonal_naive(history, season, len(actual))
    n10, n90 = point - Z90 * sigma, point + Z90 * sigma
    naive = Scores(
        mase=float(np.mean(np.abs(actual - point)) / scale),
        smape=smape(actual, point),
        crps=crps_gaussian(actual, point, sigma),
        pinball=pinball(actual, {0.1: n10, 0.5: point, 0.9: n90}),
        coverage=float(np.mean((actual >= n10) & (actual <= n90))),
    )
    return Backtest(len(actual), season, actual, ours, naive)

"""The forecaster: an `nn.GRU` over a series' scaled changes, lag and calendar features, predicting the
distribution of the next change (DeepAR's design: Salinas et al., 2020).

The series is first put on a common scale (its log where every value is positive, then divided by the mean
absolute change), so one model shape fits series of any size. At each step t the inputs are features of what
came before t only:
  the last few changes                    z[t-1] - z[t-2], z[t-2] - z[t-3], ...
  the levels 1..K seasons back (K <= 6)     z[t-ks] - z[t-1] and z[t-ks-1] - z[t-1], k = 1..K
  the calendar (where timestamps exist)    sin and cos of the position in the year, week or day
and the target is the change z[t] - z[t-1]. The distribution's centre is a linear function of the features
(fitted first by least squares: an autoregression on the lags, which can express the seasonal naive forecast
with drift exactly) plus a correction read from the GRU's state; its spread (and the Student-t's degrees of
freedom, or the quantiles) come from the GRU's state. The GRU is PyTorch's: r = σ(W_ir x + b_ir + W_hr h + b_hr),
z = σ(W_iz x + b_iz + W_hz h + b_hz), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h
(charlm.model.gru_layer_reference writes it out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from charlm.config import _Saved

Likelihood = Literal["gaussian", "student-t", "quantile"]
LIKELIHOODS: tuple[str, ...] = ("gaussian", "student-t", "quantile")
QUANTILE_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
RECENT_CHANGES = 3  # changes z[t-1]-z[t-2] ... fed at every step (6 where there is no season)
MAX_SEASONS_BACK = 6  # K: at most this many seasons back whose level is fed
MIN_DF = 2.0  # the Student-t's degrees of freedom stay above this, so its variance is finite


@dataclass
class ForecasterConfig(_Saved):
    """The forecaster's shape and how it reads its series; saved in every checkpoint."""

    season: int = 1
    seasons_back: int = 0  # K
    recent: int = RECENT_CHANGES
    calendar: bool = False
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0
    likelihood: str = "student-t"
    log: bool = False  # the model works on log(values)
    scale: float = 1.0  # mean absolute change of the (logged) values it trained on
    spread: float = 1.0  # the predicted spread's factor, fitted on the held-out steps after training
    quantiles: list[float] = field(default_factory=lambda: list(QUANTILE_LEVELS))

    @property
    def n_features(self) -> int:
        return self.recent + 2 * self.seasons_back + (2 if self.calendar else 0)

    @property
    def prefix(self) -> int:
        """Values needed before the first step that can be predicted (the longest lag, plus one)."""
        return max(self.recent + 1, self.seasons_back * self.season + 2)


# ---------------------------------------------------------------- features


def transform(values: np.ndarray | torch.Tensor, cfg: ForecasterConfig) -> Any:
    """Values on the model's scale: z = log(values) / scale, or values / scale."""
    lib = torch if isinstance(values, torch.Tensor) else np
    return (lib.log(values) if cfg.log else values) / cfg.scale


def untransform(z: np.ndarray | torch.Tensor, cfg: ForecasterConfig) -> Any:
    lib = torch if isinstance(z, torch.Tensor) else np
    return lib.exp(z * cfg.scale) if cfg.log else z * cfg.scale


def features(z: torch.Tensor, t: int, cfg: ForecasterConfig, phase: torch.Tensor | None = None) -> torch.Tensor:
    """The inputs for predicting step t of every path in `z` (paths, time): (paths, n_features)."""
    last = z[:, t - 1 : t]
    cols = [z[:, t - 1 - i : t - i] - z[:, t - 2 - i : t - 1 - i] for i in range(cfg.recent)]
    for k in range(1, cfg.seasons_back + 1):
        back = t - k * cfg.season
        cols += [z[:, back : back + 1] - last, z[:, back - 1 : back] - last]
    if cfg.calendar:
        assert phase is not None
        angle = 2 * math.pi * phase[t]
        cols += [torch.sin(angle).expand(z.shape[0], 1), torch.cos(angle).expand(z.shape[0], 1)]
    return torch.cat(cols, dim=1)


def feature_matrix(z: np.ndarray, cfg: ForecasterConfig, phase: np.ndarray | None = None) -> tuple[Any, Any]:
    """Every step's inputs and target from the observed series (teacher forcing): (n, f) features and (n,)
    changes, as float32 tensors; rows before `cfg.prefix` are zeros (never used)."""
    zt = torch.as_tensor(z, dtype=torch.float64)[None]
    ph = torch.as_tensor(phase, dtype=torch.float64) if phase is not None else None
    n = zt.shape[1]
    x = torch.zeros(n, cfg.n_features, dtype=torch.float64)
    for t in range(cfg.prefix, n):
        x[t] = features(zt, t, cfg, ph)[0]
    y = torch.zeros(n, dtype=torch.float64)
    y[1:] = zt[0, 1:] - zt[0, :-1]
    return x.float(), y.float()


# ---------------------------------------------------------------- the model


class GRUForecaster(nn.Module):
    """Features at each step -> nn.GRU -> the distribution of the next change (its centre also linear in them)."""

    def __init__(self, cfg: ForecasterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.n_features
        self.gru = nn.GRU(f, cfg.hidden, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.linear = nn.Linear(f, 1)  # the autoregression on the lags (least squares before training)
        self.drop = nn.Dropout(cfg.dropout)
        outs = {"gaussian": 2, "student-t": 3, "quantile": len(cfg.quantiles)}[cfg.likelihood]
        self.head = nn.Linear(cfg.hidden, outs)
        nn.init.zeros_(self.head.weight)  # before training the GRU adds nothing: the model is the autoregression

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch, time, features) -> (batch, time, parameters) raw outputs, and the GRU's last state."""
        out, h = self.gru(x, h)
        raw = self.head(self.drop(out))
        centre = self.linear(x)
        if self.cfg.likelihood == "quantile":  # every quantile moves with the centre
            return raw + centre, h
        return torch.cat([raw[..., :1] + centre, raw[..., 1:]], dim=-1), h

    def init_from_fit(self, x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-2) -> float:
        """Fit the linear part by ridge least squares on (x, y) and set the spread to its residuals'; returns
        the residuals' standard deviation."""
        a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
        reg = ridge * len(x) * torch.eye(a.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0.0  # the intercept (drift) is not shrunk
        w = torch.linalg.solve(a.T @ a + reg, a.T @ y.double())
        resid = y.double() - a @ w
        sd = float(resid.std()) if len(resid) > 1 else 1.0
        sd = max(sd, 1e-3)
        with torch.no_grad():
            self.linear.weight.copy_(w[:-1].float()[None])
            self.linear.bias.fill_(float(w[-1]))
            bias = self.head.bias
            bias.zero_()
            if self.cfg.likelihood == "quantile":
                from statistics import NormalDist

                bias.copy_(torch.tensor([sd * NormalDist().inv_cdf(q) for q in self.cfg.quantiles]))
            else:
                bias[1] = _softplus_inverse(sd)
                if self.cfg.likelihood == "student-t":
                    bias[2] = _softplus_inverse(10.0 - MIN_DF)
        return sd


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _spread(raw: torch.Tensor) -> torch.Tensor:
    return nn.functional.softplus(raw) + 1e-4


def nll(params: torch.Tensor, y: torch.Tensor, cfg: ForecasterConfig) -> torch.Tensor:
    """The loss per step: the negative log-likelihood of y, or (quantile) the mean pinball loss."""
    mu = params[..., 0]
    if cfg.likelihood == "gaussian":
        sigma = _spread(params[..., 1]) * cfg.spread
        return torch.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2 + 0.5 * math.log(2 * math.pi)
    if cfg.likelihood == "student-t":
        sigma, df = _spread(params[..., 1]) * cfg.spread, _spread(params[..., 2]) + MIN_DF
        return -torch.distributions.StudentT(df, mu, sigma).log_prob(y)
    q = _quantiles(params, cfg)
    levels = torch.tensor(cfg.quantiles, dtype=q.dtype)
    diff = y[..., None] - q
    return torch.maximum(levels * diff, (levels - 1) * diff).mean(-1)


def _quantiles(params: torch.Tensor, cfg: ForecasterConfig) -> torch.Tensor:
    """The quantile head's values, put in increasing order (so they never cross), their distances from the
    median times the spread factor."""
    q = torch.sort(params, dim=-1).values
    if cfg.spread == 1.0:
        return q
    median = q[..., cfg.quantiles.index(0.5) : cfg.quantiles.index(0.5) + 1]
    return median + cfg.spread * (q - median)


def sample(params: torch.Tensor, cfg: ForecasterConfig, generator: torch.Generator) -> torch.Tensor:
    """One draw of the next change per row of `params` (rows, parameters)."""
    mu = params[:, 0]
    if cfg.likelihood == "gaussian":
        return mu + _spread(params[:, 1]) * cfg.spread * torch.randn(mu.shape, generator=generator)
    if cfg.likelihood == "student-t":
        sigma, df = _spread(params[:, 1]) * cfg.spread, _spread(params[:, 2]) + MIN_DF
        # t = N / sqrt(chi2_df / df); chi2_df = 2 * Gamma(df / 2), drawn with the generator via its normal draws
        normal = torch.randn(mu.shape, generator=generator)
        chi2 = _chi2(df, generator)
        return mu + sigma * normal / torch.sqrt(chi2 / df)
    q = _quantiles(params, cfg)
    u = torch.rand(mu.shape, generator=generator)
    levels = torch.tensor(cfg.quantiles, dtype=q.dtype)
    u = u.clamp(levels[0], levels[-1])
    i = torch.searchsorted(levels, u).clamp(1, len(levels) - 1)
    lo, hi = levels[i - 1], levels[i]
    qlo, qhi = q.gather(1, (i - 1)[:, None])[:, 0], q.gather(1, i[:, None])[:, 0]
    return qlo + (qhi - qlo) * (u - lo) / (hi - lo)


def _chi2(df: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Chi-squared draws with `df` degrees of freedom, from the generator (Wilson-Hilferty: accurate to within
    a fraction of a percent in the quantiles for df >= 2)."""
    normal = torch.randn(df.shape, generator=generator)
    c = 2.0 / (9.0 * df)
    return df * torch.clamp(1 - c + normal * torch.sqrt(c), min=1e-3) ** 3


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

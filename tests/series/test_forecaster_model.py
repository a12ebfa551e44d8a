"""The forecaster's model: its recurrence is PyTorch's nn.GRU and follows the equations of charlm.model, its
likelihoods' draws have the distributions they claim, and its features read only the past."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from charlm.model import gru_layer_reference
from charlm.series.model import ForecasterConfig, GRUForecaster, feature_matrix, features, nll, sample


def test_the_recurrence_is_nn_gru_and_follows_the_gru_equations() -> None:
    torch.manual_seed(0)
    model = GRUForecaster(ForecasterConfig(season=4, seasons_back=2, hidden=8, layers=2))
    assert type(model.gru) is nn.GRU
    recurrent = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    assert recurrent == [model.gru]  # the only recurrence there is
    x = torch.randn(5, 3, model.cfg.n_features)  # (time, batch, features)
    out, h_last = model.gru(x.transpose(0, 1))
    below = gru_layer_reference(x, torch.zeros(3, 8), model.gru, 0)
    top = gru_layer_reference(below.h, torch.zeros(3, 8), model.gru, 1)
    torch.testing.assert_close(top.h.transpose(0, 1), out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_last[1], top.h[-1])
    # r resets the state's contribution to the candidate; z interpolates between the candidate and the state
    (_, _, w_in), (_, _, w_hn), (_, _, b_in), (_, _, b_hn) = (
        getattr(model.gru, f"{n}_l0").chunk(3) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    h0 = torch.zeros(3, 8)
    step = gru_layer_reference(x[:1], h0, model.gru, 0)
    cand = torch.tanh(x[0] @ w_in.T + b_in + step.r[0] * (h0 @ w_hn.T + b_hn))
    torch.testing.assert_close(step.n[0], cand)
    torch.testing.assert_close(step.h[0], (1 - step.z[0]) * step.n[0] + step.z[0] * h0)


def test_features_read_only_the_past() -> None:
    cfg = ForecasterConfig(season=4, seasons_back=2, calendar=False)
    z = np.arange(30, dtype=float) ** 1.5
    x, y = feature_matrix(z, cfg)
    changed = z.copy()
    changed[20:] += 100.0  # the future of step 20 changed: its features must not
    x2, y2 = feature_matrix(changed, cfg)
    torch.testing.assert_close(x[: 21], x2[: 21])
    assert y[20] != y2[20]
    t = 15
    f = features(torch.tensor(z)[None], t, cfg)[0]
    assert f[0] == pytest.approx(z[t - 1] - z[t - 2])
    assert f[cfg.recent] == pytest.approx(z[t - 4] - z[t - 1])  # one season back
    assert f[cfg.recent + 3] == pytest.approx(z[t - 9] - z[t - 1])  # two seasons and one step back


@pytest.mark.parametrize("likelihood", ["gaussian", "student-t", "quantile"])
def test_draws_follow_the_predicted_distribution(likelihood: str) -> None:
    cfg = ForecasterConfig(likelihood=likelihood)
    model = GRUForecaster(cfg)
    x = torch.randn(400, cfg.n_features)
    y = 0.5 * x[:, 0] + torch.randn(400) * 2.0
    sd = model.init_from_fit(x, y)
    assert sd == pytest.approx(2.0, rel=0.15)
    with torch.no_grad():
        params, _ = model(x[None, :1])
    draws = sample(params[0].expand(20000, -1).double(), cfg, torch.Generator().manual_seed(0))
    lo, hi = np.quantile(draws.numpy(), [0.1, 0.9])
    centre = float(params[0, 0, 0]) if likelihood != "quantile" else float(np.median(draws.numpy()))
    width = 2 * 1.2816 * sd
    if likelihood == "student-t":  # 10 degrees of freedom at the start: its 10%-90% range is a bit wider
        width *= 1.3722 / 1.2816
    assert hi - lo == pytest.approx(width, rel=0.05)
    assert (lo + hi) / 2 == pytest.approx(centre, abs=0.05 * width)
    loss = nll(params[0, :1], torch.tensor([centre]), cfg)
    assert torch.isfinite(loss).all() and float(loss) < math.log(10 * sd)

"""Forecasting end to end through the Python API: a synthetic series with a known answer, backtest scores,
determinism, resuming training, and forecasting again from a saved run with new observations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from charlm import checkpoint as ckpt_io
from charlm.errors import SeriesError, UsageError
from charlm.series.backtest import crps_samples, mase_scale, seasonal_naive, smape
from charlm.series.forecast import Forecast
from charlm.series.run import ForecastJob, forecast, run_forecast

SIGMA = 1.0
Z80 = 2 * 1.2816  # the 10%-90% width of a standard normal


def signal(t: np.ndarray) -> np.ndarray:
    return 5 * np.sin(2 * np.pi * t / 12) + 2 * np.cos(4 * np.pi * t / 12)


def noisy(n: int, seed: int = 0) -> np.ndarray:
    return signal(np.arange(n)) + np.random.default_rng(seed).normal(0, SIGMA, n)


def test_known_answer_median_tracks_the_signal_and_the_interval_is_the_noises() -> None:
    n, h = 360, 12
    fc = forecast(noisy(n), h, likelihood="gaussian", max_steps=150, seed=3)
    truth = signal(np.arange(n, n + h))
    assert isinstance(fc, Forecast) and fc.horizon == h and fc.season == 12
    err = fc.median - truth
    # the seasonal shape is learned from a dozen noisy seasons: each step within the noise's own size
    assert np.sqrt(np.mean(err**2)) < 0.6 * SIGMA and np.max(np.abs(err)) < 1.5 * SIGMA
    assert np.corrcoef(fc.median, truth)[0, 1] > 0.98
    width = np.mean(fc.p90 - fc.p10)
    assert width == pytest.approx(Z80 * SIGMA, rel=0.15)
    assert np.all(fc.p10 < fc.median) and np.all(fc.median < fc.p90)
    assert fc.paths.shape == (200, h)


def test_rows_and_dict_and_determinism() -> None:
    v = noisy(120, seed=1)
    a = forecast(v, 6, max_steps=20, seed=5)
    b = forecast(v, 6, max_steps=20, seed=5)
    assert [r.to_dict() for r in a.rows] == [r.to_dict() for r in b.rows]
    d = a.to_dict()
    assert d["horizon"] == 6 and len(d["rows"]) == 6 and d["paths"] == 200
    assert set(d["rows"][0]) == {"step", "timestamp", "median", "p10", "p90"} and d["rows"][0]["step"] == 1


def test_backtest_scores_against_seasonal_naive() -> None:
    v = noisy(240, seed=2)
    fc = forecast(v, 12, max_steps=60, backtest=True, seed=0)
    bt = fc.backtest
    actual, history = v[-12:], v[:-12]
    np.testing.assert_allclose(bt.actual, actual)
    point, _ = seasonal_naive(history, 12, 12)
    assert bt.naive.mase == pytest.approx(np.mean(np.abs(actual - point)) / mase_scale(history, 12))
    assert bt.naive.smape == pytest.approx(smape(actual, point))
    assert bt.charlm.mase < bt.naive.mase  # the seasonal pattern averaged over seasons beats the last one alone
    assert 0 <= bt.charlm.coverage <= 1 and bt.charlm.crps > 0
    assert fc.to_dict()["backtest"]["seasonal_naive"]["mase"] == bt.naive.mase


def test_crps_of_samples_matches_the_closed_form() -> None:
    draws = np.random.default_rng(0).normal(0, 1, (4000, 1))
    # the CRPS of N(0, 1) at y = 0 is 2 phi(0) - 1/sqrt(pi) = 0.2337
    assert crps_samples(np.zeros(1), draws) == pytest.approx(0.2337, abs=0.01)


def test_resume_continues_exactly_where_training_stopped(tmp_path: Path) -> None:
    v = noisy(150, seed=4)
    straight = run_forecast(ForecastJob(series=_series(v), horizon=6, max_steps=40, out=tmp_path / "a"))
    run_forecast(ForecastJob(series=_series(v), horizon=6, max_steps=20, out=tmp_path / "b"))
    resumed = run_forecast(
        ForecastJob(series=_series(v), horizon=6, max_steps=40, out=tmp_path / "b", resume=True)
    )
    a, b = (ckpt_io.list_checkpoints(tmp_path / x)[-1] for x in "ab")
    assert a.step == b.step == 40
    for name in (ckpt_io.WEIGHTS, ckpt_io.STATE):
        wa, wb = load_file(a.path / name), load_file(b.path / name)
        assert wa.keys() == wb.keys()
        for k in wa:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)
    assert [r.to_dict() for r in straight.rows] == [r.to_dict() for r in resumed.rows]
    with pytest.raises(UsageError, match="already holds a run"):
        run_forecast(ForecastJob(series=_series(v), horizon=6, max_steps=10, out=tmp_path / "a"))


def test_from_a_saved_run_with_new_observations(tmp_path: Path) -> None:
    from datetime import datetime

    from charlm.series.data import as_series

    v = noisy(100, seed=5)
    times = [datetime(2000 + i // 12, i % 12 + 1, 1) for i in range(104)]
    trained = forecast(v[:96], 6, timestamps=times[:96], max_steps=20, out=tmp_path / "run", seed=1)
    again = run_forecast(ForecastJob(from_run=tmp_path / "run", seed=1))
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in trained.rows]  # the saved model, exactly
    # four new months, given alone or after the series it trained on: the forecast starts after them
    for given in (as_series(v[96:], times[96:100]), as_series(v[:100], times[:100])):
        fc = run_forecast(ForecastJob(series=given, from_run=tmp_path / "run", horizon=3))
        assert [r.timestamp for r in fc.rows] == times[100:103]
        assert fc.history is not None and len(fc.history) == 100
    fc = run_forecast(ForecastJob(series=_series(v[96:98]), from_run=tmp_path / "run", horizon=1))
    assert fc.rows[0].timestamp == times[98]  # values without times continue the saved monthly step
    with pytest.raises(SeriesError, match="the first new observation"):
        run_forecast(ForecastJob(series=as_series(v[98:100], times[98:100]), from_run=tmp_path / "run"))
    plain = forecast(v[:60], 4, max_steps=5, out=tmp_path / "plain")
    fc = run_forecast(ForecastJob(series=_series(v[60:63]), from_run=tmp_path / "plain"))
    assert fc.history is not None and np.array_equal(fc.history.values, v[:63])
    assert plain.run == tmp_path / "plain"


def test_too_short_for_two_seasons_and_the_horizon() -> None:
    with pytest.raises(SeriesError, match="at least 36 are needed"):
        forecast(noisy(35), 12, season=12, max_steps=1)
    with pytest.raises(UsageError, match="--paths must be at least 100"):
        forecast(noisy(60), 6, max_steps=1, paths=10)


def _series(v: np.ndarray):
    from charlm.series.data import as_series

    return as_series(v)

"""charlm's forecaster against seasonal naive and AutoETS on public series that packages ship, last H held out.

Series (nothing is downloaded): statsmodels' co2 (Mauna Loa, weekly, averaged to months; H=24), statsmodels'
sunspots (yearly; the season, 10, from the autocorrelation; H=11) and the airline passengers that statsforecast
ships (monthly; H=12). For each: MASE (scaled by the in-sample seasonal-naive error), sMAPE, and the share of
held-out values inside the 80% interval, for charlm, the seasonal-naive forecast and AutoETS (statsforecast's,
with its 80% prediction interval). Then the time to draw 100 sample paths of 100 steps on 2 threads.

    pip install -e '.[forecast-bench]'
    python benchmarks/forecast.py [--max-time 30] [--seeds 1]    # the README's figures: --seeds 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bf16_native() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def load_series() -> list[tuple[str, np.ndarray, list, int]]:
    """(name, values, timestamps or None, horizon)."""
    import statsmodels.api as sm
    from statsforecast.utils import AirPassengers

    co2 = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    sun = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(dtype=float)
    air_times = [f"{1949 + i // 12}-{i % 12 + 1:02d}" for i in range(len(AirPassengers))]
    return [
        ("co2 (monthly)", co2.to_numpy(), list(co2.index.to_pydatetime()), 24),
        ("sunspots (yearly)", sun, None, 11),
        ("air passengers (monthly)", np.asarray(AirPassengers, dtype=float), air_times, 12),
    ]


def auto_ets(history: np.ndarray, season: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from statsforecast.models import AutoETS

    model = AutoETS(season_length=season if season > 1 else 1)
    out = model.forecast(y=history.astype(np.float64), h=horizon, level=[80])
    return out["mean"], out["lo-80"], out["hi-80"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-time", type=float, default=30.0, help="charlm's training budget per series (seconds)")
    ap.add_argument("--max-steps", type=int, default=None, help="a step budget instead (a quick check of the script)")
    ap.add_argument("--seeds", type=int, default=1, help="charlm runs per series (figures are their mean)")
    args = ap.parse_args(argv)

    import torch

    from charlm import forecast
    from charlm.series import backtest as bt
    from charlm.series.data import as_series, detect_season

    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, bf16 native: {bf16_native()}, torch {torch.__version__}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    pooled = {"charlm": [], "seasonal naive": [], "AutoETS": []}
    for name, values, times, h in load_series():
        season = detect_season(as_series(values, times))[0]
        history, actual = values[:-h], values[-h:]
        scale = bt.mase_scale(history, season)
        runs = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            budget = {"max_steps": args.max_steps} if args.max_steps else {"max_time": args.max_time}
            fc = forecast(values, h, timestamps=times, backtest=True, seed=1337 + seed, **budget)
            runs.append(fc.backtest.charlm)
        took = (time.perf_counter() - t0) / args.seeds
        inside = np.mean([r.coverage for r in runs])
        pooled["charlm"] += [inside] * h
        ours = (np.mean([r.mase for r in runs]), np.mean([r.smape for r in runs]), inside)
        point, sigma = bt.seasonal_naive(history, season, h)
        lo, hi = point - bt.Z90 * sigma, point + bt.Z90 * sigma
        cover = np.mean((actual >= lo) & (actual <= hi))
        pooled["seasonal naive"] += [cover] * h
        naive = (np.mean(np.abs(actual - point)) / scale, bt.smape(actual, point), cover)
        mean, lo, hi = auto_ets(history, season, h)
        cover = np.mean((actual >= lo) & (actual <= hi))
        pooled["AutoETS"] += [cover] * h
        ets = (np.mean(np.abs(actual - mean)) / scale, bt.smape(actual, mean), cover)
        rows.append((name, len(values), season, h, ours, naive, ets, took))

    print()
    print("| series | n | season | H | method | MASE | sMAPE % | 80% coverage |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for name, n, season, h, ours, naive, ets, _ in rows:
        for method, (mase, smape, cover) in (("charlm", ours), ("seasonal naive", naive), ("AutoETS", ets)):
            print(f"| {name} | {n} | {season} | {h} | {method} | {mase:.3f} | {smape:.2f} | {cover:.0%} |")
    print()
    mean_ours = np.mean([r[4][0] for r in rows])
    mean_ets = np.mean([r[6][0] for r in rows])
    beats = all(r[4][0] < r[5][0] for r in rows)
    print(f"mean MASE: charlm {mean_ours:.3f}, AutoETS {mean_ets:.3f} (charlm/AutoETS {mean_ours / mean_ets:.3f})")
    print(f"charlm beats seasonal naive on every series: {beats}")
    for method, cov in pooled.items():
        print(f"pooled 80% coverage, {method}: {np.mean(cov):.1%}")
    print("charlm training + backtest per series: " + ", ".join(f"{r[0]} {r[7]:.1f}s" for r in rows))

    # 100 sample paths of 100 steps, on 2 threads
    from charlm.series.forecast import sample_paths
    from charlm.series.model import ForecasterConfig, GRUForecaster

    torch.set_num_threads(2)
    series = as_series(load_series()[0][1])
    model = GRUForecaster(ForecasterConfig(season=12, seasons_back=3, hidden=32)).eval()
    sample_paths(model, series, 10, 100)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        sample_paths(model, series, 100, 100)
        times.append(time.perf_counter() - t0)
    print(f"100 paths x 100 steps (hidden 32, 2 threads): {min(times):.3f}s best of 5, {np.median(times):.3f}s median")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

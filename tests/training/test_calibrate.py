"""Speed calibration: the shape arithmetic, the speed model's fit, and a real (tiny) timing run."""

from __future__ import annotations

import time

import pytest
import torch

from charlm.config import ModelConfig
from charlm.model import CharGRU
from charlm.training.calibrate import REFERENCE, Shape, SpeedModel, calibrate, calibration_shapes, measure


def test_params_match_the_model() -> None:
    for layers, hidden, embed in ((1, 8, 4), (2, 16, 8), (3, 12, 5)):
        model = CharGRU(ModelConfig(vocab_size=11, embed=embed, hidden=hidden, layers=layers))
        assert Shape(layers, hidden, embed).params(11) == model.num_params()


def test_flops_per_char_counts_gates_and_head() -> None:
    fwd_macs = 3 * 8 * (4 + 8) + 3 * 8 * (8 + 8) + 8 * 10  # two GRU layers of three gates, then the head
    assert Shape(2, 8, embed=4).flops_per_char(10) == 6 * fwd_macs


def test_fit_recovers_latency_and_rate() -> None:
    truth = SpeedModel(latency=4e-5, flop_rate=3e12)
    shapes = [Shape(1, 256), Shape(2, 512), Shape(2, 1024, batch_size=256)]
    fitted = SpeedModel.fit({s: truth.chars_per_sec(s, 65) for s in shapes}, 65)
    assert fitted.latency == pytest.approx(truth.latency, rel=1e-6)
    assert fitted.flop_rate == pytest.approx(truth.flop_rate, rel=1e-6)


def test_fit_from_one_measurement_reproduces_it_and_scales_the_reference() -> None:
    s = Shape(2, 256)
    fitted = SpeedModel.fit({s: 5000.0}, 65)
    assert fitted.chars_per_sec(s, 65) == pytest.approx(5000.0)
    assert fitted.latency * fitted.flop_rate == pytest.approx(REFERENCE.latency * REFERENCE.flop_rate)


def test_speed_grows_with_batch_until_arithmetic_dominates() -> None:
    gpu = SpeedModel(latency=3e-5, flop_rate=2e13)
    speeds = [gpu.chars_per_sec(Shape(2, 512, batch_size=b), 65) for b in (32, 64, 128, 4096)]
    assert speeds == sorted(speeds)
    assert speeds[-1] < gpu.flop_rate / Shape(2, 512).flops_per_char(65)  # never beyond the arithmetic's limit


def test_calibrate_times_real_steps() -> None:
    tiny = [Shape(1, 8, embed=4, batch_size=2, seq_len=4), Shape(2, 16, embed=4, batch_size=2, seq_len=4)]
    speeds = calibrate(torch.device("cpu"), 7, tiny, steps=1)
    assert list(speeds) == tiny and all(v > 0 for v in speeds.values())


def test_calibrate_skips_shapes_that_would_overrun_its_time() -> None:
    tiny = [Shape(1, 8, embed=4, batch_size=2, seq_len=4), Shape(2, 16, embed=4, batch_size=2, seq_len=4)]
    speeds = calibrate(torch.device("cpu"), 7, tiny, steps=1, max_seconds=0.0)
    assert list(speeds) == tiny[:1]  # the first is always timed, so there is something to fit


def test_a_gpu_is_timed_at_a_large_batch_too() -> None:
    assert max(s.batch_size for s in calibration_shapes("cuda")) > max(s.batch_size for s in calibration_shapes("cpu"))


def test_measure_keeps_to_a_share_of_a_short_budget() -> None:
    t0 = time.perf_counter()
    model, _ = measure(torch.device("cpu"), 65, budget_seconds=1.0)  # 4% of 1 s: only the first, small shape
    assert model.latency > 0 and model.flop_rate > 0
    assert time.perf_counter() - t0 < 5.0  # one small shape's three steps, even on a busy machine

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


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_each_cell_is_counted_and_costed_as_itself(cell: str) -> None:
    s = Shape(2, 16, embed=8, cell=cell)
    assert s.params(11) == CharGRU(ModelConfig(vocab_size=11, embed=8, hidden=16, layers=2, cell=cell)).num_params()
    blocks = {"gru": 3, "lstm": 4, "rnn": 1}[cell]
    assert s.flops_per_char(10) == 6 * (blocks * 16 * (8 + 16) + blocks * 16 * (16 + 16) + 16 * 10)
    assert all(c.cell == cell for c in calibration_shapes("cpu", cell) + calibration_shapes("cuda", cell))


def test_time_shape_trains_the_cell_it_is_given_on_the_ids_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from charlm.training import calibrate as cal

    built, read = [], []
    real_model, real_streams = cal.CharLM, cal.TokenStreams
    monkeypatch.setattr(cal, "CharLM", lambda cfg: built.append(cfg.cell) or real_model(cfg))
    monkeypatch.setattr(cal, "TokenStreams", lambda ids, *a: read.append(ids) or real_streams(ids, *a))
    ids = np.arange(200) % 7
    lstm = Shape(1, 8, embed=4, batch_size=2, seq_len=4, cell="lstm")
    speed = cal.time_shape(lstm, 7, torch.device("cpu"), None, 3, ids)
    assert speed > 0 and built == ["lstm"] and read[0] is ids


def test_the_median_step_counts_not_the_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    from charlm.training import calibrate as cal

    # a warm-up step (untimed), then timed steps of 1.0 s, 0.5 s and 3.5 s (one slowed down)
    ticks = iter([0.0, 0.2, 0.2, 1.2, 1.2, 1.7, 1.7, 5.2])
    monkeypatch.setattr(cal.time, "perf_counter", lambda: next(ticks))
    speed = cal.time_shape(Shape(1, 8, embed=4, batch_size=2, seq_len=4), 7, torch.device("cpu"), None, 3)
    assert speed == pytest.approx(2 * 4 / 1.0)  # the median, 1.0 s: not the fastest (0.5 s) nor the mean


def test_a_step_past_the_deadline_ends_the_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from charlm.training import calibrate as cal

    tiny = Shape(1, 8, embed=4, batch_size=2, seq_len=4)
    ticks = iter([0.0, 10.0])  # the warm-up step alone took 10 s, past the deadline at 3 s: it is the measure
    monkeypatch.setattr(cal.time, "perf_counter", lambda: next(ticks))
    assert cal.time_shape(tiny, 7, torch.device("cpu"), None, 3, deadline=3.0) == pytest.approx(8 / 10.0)
    ticks = iter([0.0, 1.0, 1.0, 4.0])  # one timed step, ending past the deadline: no more
    assert cal.time_shape(tiny, 7, torch.device("cpu"), None, 3, deadline=3.0) == pytest.approx(8 / 3.0)


def test_measure_also_times_what_the_rule_weighs() -> None:
    tiny = Shape(1, 8, embed=4, batch_size=2, seq_len=4)
    asked: list[SpeedModel] = []

    def consider(model: SpeedModel) -> list[Shape]:
        asked.append(model)
        return [tiny, tiny.with_batch(4)]

    model, speeds = measure(torch.device("cpu"), 7, budget_seconds=1e-6, consider=consider)
    assert len(asked) == 1 and tiny.with_batch(4) not in speeds  # no time left: only the first shape is timed
    assert list(speeds) == calibration_shapes("cpu")[:1]
    assert model.chars_per_sec(calibration_shapes("cpu")[0], 7) == pytest.approx(speeds[calibration_shapes("cpu")[0]])

"""The sizing rule: what it chooses for a CPU like this one, a laptop and a GPU, and that given options win.

The speeds are SpeedModels: REFERENCE is this project's 2-core AMD EPYC in fp32 (measured); the laptop and the
GPU are plausible profiles (a faster CPU; a GPU whose step is mostly latency until the batch is large), not
measurements. The rule is a pure function, so these tests need no training and no timing.
"""

from __future__ import annotations

import pytest

from charlm.training.autoconfig import MAX_PASSES, choose, dropout_for
from charlm.training.calibrate import REFERENCE, Shape, SpeedModel

LAPTOP = SpeedModel(latency=1.5e-4, flop_rate=3e11)
GPU = SpeedModel(latency=5e-5, flop_rate=3e13)
MB = 1_000_000


def shape(c) -> str:  # noqa: ANN001 - an AutoChoice
    return f"{c.model['layers']}x{c.model['hidden']}"


def test_a_small_corpus_for_45_seconds_on_this_cpu_gets_a_small_fast_model() -> None:
    c = choose(65, 180_000, REFERENCE, budget_seconds=45, val_chars=20_000)
    assert shape(c) == "1x256" and c.train["batch_size"] == 32 and c.train["lr"] == 3e-3
    assert 0.1 <= c.model["dropout"] <= 0.25  # 10 passes over the text: it would start to memorise it
    assert "max_steps" not in c.train  # under the pass cap: the whole budget is used
    assert "45 s at ~44k chars/s on cpu" in c.reason and "passes over 180k" in c.reason


def test_when_the_pass_cap_would_stop_a_small_model_early_a_larger_one_uses_the_time() -> None:
    small = choose(65, 180_000, REFERENCE, budget_seconds=45)
    minute = choose(65, 180_000, REFERENCE, budget_seconds=60)  # a 1x256 would stop after 12 passes at 50 s
    assert shape(small) == "1x256" and shape(minute) == "2x256"
    assert "max_steps" not in minute.train and 5 <= minute.passes < MAX_PASSES
    assert minute.model["dropout"] == 0.0  # 6 passes in a plan of 500 steps: too short for dropout to pay
    five = choose(65, 180_000, REFERENCE, budget_seconds=300)  # 2x384 has 8 parameters per character of text
    assert shape(five) == "2x256" and five.passes == pytest.approx(MAX_PASSES, rel=0.01)
    tiny = choose(65, 30_000, REFERENCE, budget_seconds=60)  # a 1x256 would have 9 parameters per character
    assert shape(tiny) == "1x128" and "it stops after 12 passes" in tiny.reason


def test_one_megabyte_on_this_cpu_three_then_ten_minutes() -> None:
    three = choose(65, MB, REFERENCE, budget_seconds=180, val_chars=111_000)
    ten = choose(65, MB, REFERENCE, budget_seconds=600, val_chars=111_000)
    assert shape(three) == "2x256" and three.model["dropout"] == 0.0  # 3 passes: nothing to regularise yet
    assert shape(ten) == "2x384"  # more time: a wider model, still reading 4 characters per parameter
    assert ten.model["dropout"] >= three.model["dropout"]
    assert "max_steps" not in ten.train  # 6 passes: the whole budget is used
    assert three.train["eval_every"] == ten.train["eval_every"] == 500  # validating 111k costs ~4% at 500


def test_twenty_megabytes_on_a_gpu_get_a_wide_model_and_a_large_batch() -> None:
    gpu = choose(100, 20 * MB, GPU, budget_seconds=600, val_chars=2 * MB, device_kind="cuda")
    cpu = choose(100, 20 * MB, REFERENCE, budget_seconds=600, val_chars=2 * MB)
    # this profile reads 1.42x as fast at 64 streams, 1.27x more at 128: the rule doubles once
    assert shape(gpu) == "3x1024" and gpu.train["batch_size"] == 64 and gpu.train["lr"] > 3e-3
    assert shape(cpu) == "2x384" and cpu.train["batch_size"] == 32
    assert 4 < gpu.passes < 5 and gpu.model["dropout"] == 0.0  # 4.9 passes over 20 MB: dropout starts at 5
    assert "on cuda" in gpu.reason


def test_a_laptop_sits_between() -> None:
    sizes = [shape(choose(65, 20 * MB, s, budget_seconds=600)) for s in (REFERENCE, LAPTOP, GPU)]
    assert sizes == ["2x384", "2x512", "3x1024"]


def test_long_budgets_on_a_small_text_stop_at_max_passes() -> None:
    c = choose(65, 180_000, GPU, budget_seconds=600, device_kind="cuda")
    steps = c.train["max_steps"]
    assert steps * c.train["batch_size"] * c.train["seq_len"] == pytest.approx(MAX_PASSES * 180_000, rel=0.01)
    assert c.model["dropout"] == dropout_for(MAX_PASSES)
    assert f"it stops after {MAX_PASSES:.0f} passes" in c.reason and "memorise" in c.reason


@pytest.mark.parametrize(("chars", "speed"), [(180_000, REFERENCE), (MB, REFERENCE), (MB, GPU), (20 * MB, GPU)])
def test_more_time_never_gets_a_smaller_model_or_fewer_characters(chars: int, speed: SpeedModel) -> None:
    choices = [choose(65, chars, speed, budget_seconds=t) for t in (15, 30, 60, 120, 180, 300, 600, 1800, 3600)]
    params = [Shape(c.model["layers"], c.model["hidden"], c.model["embed"]).params(65) for c in choices]
    assert params == sorted(params)
    assert [c.planned_chars for c in choices if shape(c) == shape(choices[-1])] == sorted(
        c.planned_chars for c in choices if shape(c) == shape(choices[-1])
    )


def test_a_step_budget_plans_exactly_those_steps() -> None:
    c = choose(65, MB, REFERENCE, budget_steps=1000)
    assert c.planned_chars == 1000 * 32 * 64 and "1,000 steps of 32x64" in c.reason
    both = choose(65, MB, REFERENCE, budget_seconds=10, budget_steps=100_000)  # whichever ends first
    assert both.planned_chars < 100_000 * 32 * 64 and "10 s at" in both.reason


def test_given_options_win_and_the_rest_is_chosen_around_them() -> None:
    given = {"hidden": 512, "dropout": 0.5, "batch_size": 16, "lr": 1e-3, "eval_every": 7}
    c = choose(65, MB, REFERENCE, budget_seconds=600, overrides=given)
    assert c.model["hidden"] == 512 and c.model["dropout"] == 0.5
    assert c.train["batch_size"] == 16 and c.train["lr"] == 1e-3 and c.train["eval_every"] == 7
    assert c.model["layers"] in (1, 2, 3)  # chosen: layers were not given
    assert "kept as given: --hidden, --dropout, --batch-size, --lr, --eval-every" in c.reason
    assert c.reason.count("\n") == 1  # one or two lines


def test_none_and_auto_mean_not_given() -> None:
    chosen = choose(65, MB, REFERENCE, budget_seconds=60)
    assert choose(65, MB, REFERENCE, budget_seconds=60, overrides={"hidden": None, "dropout": "auto"}) == chosen


def test_a_tiny_text_keeps_every_stream_long_enough() -> None:
    c = choose(30, 5_000, GPU, budget_seconds=60)
    assert (5_000 - 1) // c.train["batch_size"] >= c.train["seq_len"]


def test_dropout_starts_at_five_passes_in_a_long_plan_and_at_nine_in_a_short_one() -> None:
    long = [dropout_for(p, 5000) for p in (1, 4.9, 5, 8.5, 12, 20, 100)]
    assert long == [0.0, 0.0, 0.1, 0.15, 0.2, 0.2, 0.2]
    short = [dropout_for(p, 800) for p in (1, 8.9, 9, 10.5, 12, 20, 100)]
    assert short == [0.0, 0.0, 0.1, 0.15, 0.2, 0.2, 0.2]
    ten = choose(65, MB, REFERENCE, budget_seconds=600)  # 2x384, 5.9 passes in 2,800 steps: a little dropout
    assert shape(ten) == "2x384" and ten.model["dropout"] == 0.11


def test_no_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="budget"):
        choose(65, MB, REFERENCE)


def test_an_lstm_is_sized_with_its_own_parameter_count_and_speed() -> None:
    gru = choose(65, MB, REFERENCE, budget_seconds=180)
    lstm = choose(65, MB, REFERENCE, budget_seconds=180, overrides={"cell": "lstm"})
    assert lstm.shape.cell == "lstm" and gru.shape.cell == "gru"
    assert shape(gru) == "2x256" and shape(lstm) == "1x256"  # 4 blocks a layer: 2x256 is too big for 3 minutes
    assert lstm.planned_chars >= 3 * lstm.shape.params(65)
    two = Shape(2, 256, cell="lstm")
    assert 180 * 0.9 * REFERENCE.chars_per_sec(two, 65) < 3 * two.params(65)  # the next candidate reads too little
    assert lstm.chars_per_sec == pytest.approx(REFERENCE.chars_per_sec(lstm.shape, 65))
    assert "--cell" not in lstm.reason  # the cell is never chosen: nothing to say it was kept


def test_a_timed_shape_answers_with_its_measured_speed() -> None:
    s = Shape(2, 256)
    measured = SpeedModel.fit({Shape(1, 256): 40_000.0, s: 17_000.0, s.with_batch(64): 17_500.0}, 65)
    assert measured.chars_per_sec(s.with_batch(64), 65) == 17_500.0
    c = choose(65, MB, measured, budget_seconds=180)
    assert c.train["batch_size"] == 32  # doubling the batch was measured to gain 3%, not the 25% it needs


def test_replan_is_the_choice_made_knowing_the_speed() -> None:
    from charlm.training.autoconfig import replan

    s = Shape(2, 256)
    current = {"embed": 64, "hidden": 256, "layers": 2, "cell": "gru", "batch_size": 32, "seq_len": 64,
               "lr": 3e-3, "weight_decay": 0.01, "dropout": 0.12, "eval_every": 500, "max_steps": None}  # fmt: skip
    again = replan(s, 6_000.0, 65, MB, 600, current, set(), 111_000)
    speed = SpeedModel.fit({s: 6_000.0}, 65)
    known = choose(65, MB, speed, 600, val_chars=111_000, overrides={"layers": 2, "hidden": 256})
    assert again.model == known.model and {**again.train, "weight_decay": 0.01} == {**known.train, "weight_decay": 0.01}
    assert again.model["dropout"] == 0.0 and shape(again) == "2x256"  # 2 passes at that speed: no dropout
    kept = replan(s, 6_000.0, 65, MB, 600, current, {"dropout"}, 111_000)
    assert kept.model["dropout"] == 0.12

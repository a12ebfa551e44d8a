"""Re-planning from the speed a run measures: with a scripted clock, a run whose steps are half (or twice) as
fast as calibration said ends with the plan the rule would have chosen had it known, says so, stores it, and
a resumed run keeps it. No real timing: the calibration and the clock are both scripted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from charlm import checkpoint as ckpt_io
from charlm import training
from charlm.training import auto
from charlm.training.autoconfig import choose
from charlm.training.calibrate import Shape, SpeedModel
from charlm.training.run import prepare
from charlm.training.trainer import Trainer

GIVEN = {"hidden": 16, "layers": 2, "embed": 8, "batch_size": 4, "seq_len": 16, "lr": 0.01, "patience": 0,
         "device": "cpu", "precision": "fp32"}  # fmt: skip
SHAPE = Shape(2, 16, 8, 4, 16)
BUDGET = 60.0  # seconds of the scripted clock


class Clock:
    """Time that moves only when a training step is taken: each step costs its characters / `speed`."""

    def __init__(self) -> None:
        self.now, self.speed = 0.0, 1.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    """(calibrate to, train at): calibration reports `predicted` chars/s; training steps run at `actual`."""
    clock = Clock()
    monkeypatch.setattr(Trainer, "clock", staticmethod(clock))
    step = Trainer.train_step

    def timed_step(self: Trainer) -> tuple[float, bool]:
        out = step(self)
        clock.now += self.streams.chars_per_batch / clock.speed
        return out

    monkeypatch.setattr(Trainer, "train_step", timed_step)

    def set_speeds(predicted: float, actual: float) -> None:
        fake = lambda dev, vocab, *a, **k: (SpeedModel.fit({SHAPE: predicted}, vocab), {})  # noqa: E731
        monkeypatch.setattr(auto, "measure", fake)
        clock.speed = actual

    return set_speeds


def corpus(tmp_path: Path, text_maker: Any) -> tuple[Path, int, int, int]:
    path = tmp_path / "c.txt"
    text = text_maker(lines=170)[:3400]
    path.write_text(text, encoding="utf-8")
    val = int(len(text) * 0.1)
    return path, len(set(text)), len(text) - val, val


def run(path: Path, out: Path, notes: list[str], **over: Any) -> tuple[Trainer, training.TrainResult]:
    def on_event(kind: str, info: dict[str, Any]) -> None:
        if kind == "note":
            notes.append(info["message"])

    req = training.TrainRequest([str(path)], out, overrides={**GIVEN, **over})
    trainer = prepare(req, on_event)
    return trainer, trainer.fit()


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_a_misjudged_speed_ends_with_the_plan_it_would_have_chosen(tmp_path, text_maker, scripted, ratio) -> None:
    path, vocab, train_chars, val_chars = corpus(tmp_path, text_maker)
    predicted = 10 * train_chars / (BUDGET * 0.9)  # calibration's speed buys 10 passes: dropout, no cap
    scripted(predicted, ratio * predicted)
    notes: list[str] = []
    trainer, result = run(path, tmp_path / "run", notes, max_time=BUDGET)

    def plan(speed: float) -> Any:
        model = SpeedModel.fit({SHAPE: speed}, vocab)
        return choose(vocab, train_chars, model, BUDGET, None, val_chars, "cpu", overrides=GIVEN)

    first, known = plan(predicted), plan(ratio * predicted)
    assert (first.model["dropout"], first.train.get("max_steps")) != (
        known.model["dropout"],
        known.train.get("max_steps"),
    )  # the speed matters here: half of it is 5 passes (no dropout), twice is past the 12-pass cap
    ck = ckpt_io.resolve(tmp_path / "run", "latest")
    assert ck.model_config.dropout == known.model["dropout"] == trainer.model.drop.p
    assert trainer.model.recurrent.dropout == known.model["dropout"]
    assert ck.train_config.eval_every == known.train["eval_every"]
    assert ck.train_config.max_steps == known.train.get("max_steps")
    if ratio > 1:  # the cap it would have chosen is where it stopped
        assert result.stopped_by == "max_steps" and result.step == known.train["max_steps"]
    else:
        assert result.stopped_by == "max_time"
    replanned = ck.meta["auto"]["replanned"]
    assert replanned["measured_chars_per_sec"] == pytest.approx(ratio * predicted, abs=1)
    assert replanned["changed"]["dropout"] == [first.model["dropout"], known.model["dropout"]]
    assert replanned["step"] * 4 * 16 / (ratio * predicted) == pytest.approx(0.1 * BUDGET, abs=0.5)
    said = [n for n in notes if n.startswith("re-planned at step")]
    assert len(said) == 1 and f"dropout {first.model['dropout']:g} -> {known.model['dropout']:g}" in said[0]
    from charlm.ui.info import describe, render

    assert said[0] in render(describe(ck))  # charlm info shows it under the choice


def test_resume_keeps_the_re_plan_and_never_plans_again(tmp_path, text_maker, scripted) -> None:
    path, _, train_chars, _ = corpus(tmp_path, text_maker)
    predicted = 8 * train_chars / (BUDGET * 0.9)
    scripted(predicted, predicted / 2)
    run(path, tmp_path / "run", [], max_time=BUDGET)
    before = ckpt_io.resolve(tmp_path / "run", "latest")
    notes: list[str] = []
    req = training.TrainRequest([], tmp_path / "run", resume=True, overrides={"max_time": 1.5 * BUDGET})
    trainer = prepare(req, lambda kind, info: notes.append(info.get("message", "")) if kind == "note" else None)
    result = trainer.fit()
    after = ckpt_io.resolve(tmp_path / "run", "latest")
    assert result.stopped_by == "max_time" and after.step > before.step
    assert after.meta["auto"] == before.meta["auto"] and not [n for n in notes if n.startswith("re-planned")]
    assert after.model_config.dropout == before.model_config.dropout == 0.0
    assert after.train_config.eval_every == before.train_config.eval_every


def test_a_step_budget_or_given_settings_are_never_re_planned(tmp_path, text_maker, scripted) -> None:
    path, _, train_chars, _ = corpus(tmp_path, text_maker)
    predicted = 8 * train_chars / (BUDGET * 0.9)
    scripted(predicted, predicted / 2)
    notes: list[str] = []
    run(path, tmp_path / "run", notes, max_time=BUDGET, dropout=0.3)  # a given dropout, at 4 passes
    ck = ckpt_io.resolve(tmp_path / "run", "latest")
    assert ck.model_config.dropout == 0.3 and "dropout" not in ck.meta["auto"]["replanned"]["changed"]
    assert len([n for n in notes if n.startswith("re-planned")]) == 1
    notes.clear()
    run(path, tmp_path / "steps", notes, max_steps=30)
    assert "replanned" not in ckpt_io.resolve(tmp_path / "steps", "latest").meta["auto"]

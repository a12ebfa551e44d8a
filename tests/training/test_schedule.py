"""The plateau rule: when the learning rate is cut, when training stops early, and that it survives a resume."""

from __future__ import annotations

import json
import math

import pytest

from charlm.training.schedule import Plateau


def feed(p: Plateau, losses: list[float]) -> list[str]:
    return [p.update(loss, step=100 * (i + 1)).action for i, loss in enumerate(losses)]


def test_improving_loss_always_continues() -> None:
    assert feed(Plateau(patience=2), [2.0, 1.9, 1.8, 1.7, 1.6]) == ["continue"] * 5


def test_plateau_cuts_the_rate_then_stops_early() -> None:
    p = Plateau(patience=2, factor=0.5, max_decays=2)
    actions = feed(p, [2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6])
    assert actions == ["continue", "continue", "decay", "continue", "decay", "continue", "stop"]
    d = p.update(2.7, step=800)
    assert d.action == "stop" and "2.0000 nats/char at step 100" in d.reason and "stopped early" in d.reason


def test_an_improvement_after_a_cut_resets_the_count() -> None:
    p = Plateau(patience=2, max_decays=1)
    assert feed(p, [2.0, 2.1, 2.1]) == ["continue", "continue", "decay"]
    assert p.update(1.9, step=400).action == "continue" and p.decays == 0
    # a second plateau may cut the rate again before stopping
    assert feed(p, [1.95, 1.95, 1.95, 1.95]) == ["continue", "decay", "continue", "stop"]


def test_gains_below_min_delta_do_not_count() -> None:
    p = Plateau(patience=2, min_delta=0.01)
    assert feed(p, [2.0, 1.995, 1.991]) == ["continue", "continue", "decay"]
    assert p.best == pytest.approx(1.991)  # the best is still remembered exactly


def test_decision_reason_names_the_cut() -> None:
    p = Plateau(patience=1, factor=0.25)
    p.update(1.5, step=10)
    d = p.update(1.6, step=20)
    assert d.action == "decay" and "x0.25" in d.reason and "1.5000" in d.reason


def test_state_round_trips_through_json() -> None:
    p = Plateau(patience=2)
    fresh = Plateau.from_dict(json.loads(json.dumps(p.to_dict())))
    assert math.isinf(fresh.best)
    feed(p, [2.0, 2.1])
    q = Plateau.from_dict(json.loads(json.dumps(p.to_dict())))
    assert q == p and q.update(2.2, step=300).action == "decay"


@pytest.mark.parametrize("bad", [{"patience": 0}, {"factor": 1.0}, {"factor": 0.0}, {"max_decays": -1}])
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Plateau(**bad)

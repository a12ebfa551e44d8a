"""Automatic configuration and the plateau rule inside real runs: what the user gives wins, a resumed run keeps
the stored choice, and a run whose validation stops improving lowers its learning rate, then stops early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm import training
from charlm.cli import app
from charlm.training.trainer import Trainer

runner = CliRunner()


def train(*args: str):
    return runner.invoke(app, ["train", *args, "--device", "cpu", "--precision", "fp32"], prog_name="charlm")


def test_given_options_win_and_the_rest_is_chosen_and_stored(tiny_corpus: Path, tmp_path: Path) -> None:
    res = train(str(tiny_corpus), "--out", str(tmp_path / "run"), "--hidden", "40", "--max-steps", "20")
    assert res.exit_code == 0, res.output
    assert "auto: " in res.stderr and "kept as given: --hidden" in res.stderr
    assert "calibrated" not in res.stderr  # a budget in steps needs no speed: nothing is timed
    ck = ckpt_io.resolve(tmp_path / "run")
    assert ck.model_config.hidden == 40
    chosen = ck.meta["auto"]["chosen"]
    assert "hidden" not in chosen and chosen["layers"] == ck.model_config.layers
    assert chosen["batch_size"] == ck.train_config.batch_size and chosen["lr"] == ck.train_config.lr
    info = runner.invoke(app, ["info", str(tmp_path / "run"), "--json"])
    assert json.loads(info.stdout)["auto"]["chosen"] == chosen
    text = runner.invoke(app, ["info", str(tmp_path / "run")])
    assert "chosen          auto: " in text.stdout


def test_nothing_is_chosen_when_everything_is_given(tiny_corpus: Path, tmp_path: Path) -> None:
    given = ["--hidden", "16", "--layers", "1", "--embed", "8", "--dropout", "0", "--batch-size", "4",
             "--seq-len", "16", "--lr", "0.01", "--eval-every", "10"]  # fmt: skip
    res = train(str(tiny_corpus), "--out", str(tmp_path / "run"), *given, "--max-steps", "10")
    assert res.exit_code == 0 and "auto:" not in res.stderr, res.output
    assert "auto" not in ckpt_io.resolve(tmp_path / "run").meta


def test_a_time_budget_is_calibrated_and_resume_keeps_the_choice(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(str(tiny_corpus), "--out", str(out), "--max-time", "2s", "--embed", "8")
    assert first.exit_code == 0, first.output
    assert "calibrated cpu in" in first.stderr and "chars/s" in first.stderr
    before = ckpt_io.resolve(out, "latest")
    again = train("--resume", "--out", str(out), "--max-time", "4s")
    assert again.exit_code == 0, again.output
    assert "calibrated" not in again.stderr and "auto:" not in again.stderr  # never re-chosen mid-run
    after = ckpt_io.resolve(out, "latest")
    assert after.model_config == before.model_config and after.meta["auto"] == before.meta["auto"]
    for k in ("batch_size", "seq_len", "lr"):
        assert getattr(after.train_config, k) == getattr(before.train_config, k)


def test_an_lstm_run_is_calibrated_as_an_lstm(tiny_corpus: Path, tmp_path: Path) -> None:
    res = train(str(tiny_corpus), "--out", str(tmp_path / "run"), "--max-time", "1s", "--cell", "lstm", "--embed", "8")
    assert res.exit_code == 0, res.output
    auto = ckpt_io.resolve(tmp_path / "run", "latest").meta["auto"]
    assert list(auto["calibration"]) == ["lstm 1x256@32x64"]  # 4% of 1 s: the first shape only, as an LSTM
    assert "lstm 1x256@32x64" in res.stderr and "calibration_seconds" in auto


def plateau_run(tiny_corpus: Path, out: Path, monkeypatch: pytest.MonkeyPatch, patience: int):
    """A run whose validation improves once, then never again (bits/char 3.0, then 2.0 for ever)."""
    scores = iter([3.0] + [2.0] * 1000)
    monkeypatch.setattr(Trainer, "validate", lambda self: next(scores))
    events: list[tuple[str, dict]] = []
    over = {"hidden": 8, "embed": 4, "batch_size": 4, "seq_len": 8, "max_steps": 60, "eval_every": 2,
            "patience": patience, "device": "cpu"}  # fmt: skip
    req = training.TrainRequest([str(tiny_corpus)], out, overrides=over)
    result = training.train(req, lambda kind, info: events.append((kind, info)))
    # the plateau rule's notes (automatic configuration says what it chose in a note of its own)
    return result, [info["message"] for kind, info in events if kind == "note" and info["message"].startswith("step")]


def test_a_plateau_halves_the_learning_rate_twice_then_stops_early(tiny_corpus, tmp_path, monkeypatch) -> None:
    result, notes = plateau_run(tiny_corpus, tmp_path / "run", monkeypatch, patience=2)
    # validations at steps 2, 4, 6, ...: best at step 4 (2.0); 2 without a new best -> x0.5 (step 8),
    # 2 more -> x0.5 again (step 12), 2 more -> stop (step 16)
    decays = [n for n in notes if "learning rate x0.5" in n]
    assert [n.split(":")[0] for n in decays] == ["step 8", "step 12"]
    assert result.stopped_by == "early_stop" and result.step == 16 and not result.interrupted
    assert result.early_stop is not None and "stopped early" in result.early_stop
    last = ckpt_io.resolve(tmp_path / "run", "latest")
    assert last.meta["lr_scale"] == 0.25 and last.step == 16
    assert ckpt_io.resolve(tmp_path / "run").val_bpc == 2.0  # the best checkpoint is kept


def test_patience_0_trains_the_whole_budget(tiny_corpus, tmp_path, monkeypatch) -> None:
    result, notes = plateau_run(tiny_corpus, tmp_path / "run", monkeypatch, patience=0)
    assert result.stopped_by == "max_steps" and result.step == 60 and notes == []
    assert ckpt_io.resolve(tmp_path / "run", "latest").meta["lr_scale"] == 1.0


def test_bad_patience_is_a_usage_error(tiny_corpus: Path) -> None:
    res = train(str(tiny_corpus), "--patience", "-1", "--max-steps", "5")
    assert res.exit_code == 2 and "--patience must be 0 (off) or more (got -1)" in res.stderr


@pytest.mark.parametrize(("gain", "batch"), [(1.0, 32), (1.3, 32), (1.9, 64)])
def test_calibration_times_the_batches_the_rule_weighs(monkeypatch, gain: float, batch: int) -> None:
    """The doubled batch the rule considers is timed, and its measured speed decides: no gain keeps 32 streams
    (whatever the fitted model would predict), nor does a CPU-like 1.3x; a GPU-like gain doubles them."""
    from charlm.config import TrainConfig
    from charlm.training import auto
    from charlm.training import calibrate as cal

    def scripted(shape, vocab, *args, **kwargs):  # noqa: ANN001, ANN202 - time_shape's signature
        return cal.REFERENCE.chars_per_sec(shape.with_batch(32), vocab) * (gain if shape.batch_size == 64 else 1.0)

    monkeypatch.setattr(cal, "time_shape", scripted)
    cfg = TrainConfig(max_time=600, device="cpu", precision="fp32")
    model, cfg, record = auto.configure({}, {}, cfg, 65, 20_000_000, 2_000_000)
    assert record is not None and f"{model['layers']}x{model['hidden']}@64x64" in record["calibration"]
    assert cfg.batch_size == batch

"""The options for more quality per minute: the learning-rate schedules, the average of the weights (--ema) and
weight decay. What each schedule gives at each point of the budget, that a run with --ema validates and saves
the average while it trains (and resumes) the weights themselves, and that bad values are usage errors."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.config import TrainConfig
from charlm.inference.evaluate import score_ids
from charlm.training import run
from charlm.training.schedule import get_lr
from charlm.training.step import make_ema

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden": 16, "embed": 8, "seq_len": 16, "batch_size": 4, "eval_every": 5, "seed": 3, "device": "cpu",
        "precision": "fp32", "dropout": 0.0, "layers": 1, "lr": 0.01}  # fmt: skip


@pytest.mark.parametrize(
    ("schedule", "floor", "expected"),
    [
        ("cosine", 0.1, [1.0, 0.55, 0.1]),
        ("linear", 0.0, [1.0, 0.5, 0.0]),
        ("linear", 0.1, [1.0, 0.55, 0.1]),
        ("wsd", 0.0, [1.0, 1.0, 0.0]),
    ],
)
def test_each_schedule_decays_from_the_peak_to_its_floor(schedule: str, floor: float, expected: list[float]) -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule=schedule, min_lr_ratio=floor, decay_fraction=0.2)
    assert get_lr(4, 0.0, cfg) == pytest.approx(0.5)  # warmup is the same for all
    assert [get_lr(100, p, cfg) for p in (0.0, 0.5, 1.0)] == pytest.approx(expected)


def test_wsd_is_flat_until_its_decay_fraction_then_linear() -> None:
    cfg = TrainConfig(lr=2.0, warmup_steps=0, lr_schedule="wsd", min_lr_ratio=0.0, decay_fraction=0.25)
    assert [get_lr(50, p, cfg) for p in (0.7, 0.75, 0.875, 1.2)] == pytest.approx([2.0, 2.0, 1.0, 0.0])


def test_the_average_starts_as_an_even_mean_and_tends_to_its_decay() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(model, 0.9)
    seen = []
    for value in (1.0, 2.0, 3.0):
        model.weight.data.fill_(value)
        ema.update_parameters(model)
        seen.append(float(ema.module.weight.detach()))
    # the first update copies; then decay (1 + n) / (10 + n): 2/11, 3/12 of the old value kept
    assert seen[0] == 1.0 and seen[1] == pytest.approx(2 / 11 * 1 + 9 / 11 * 2)
    assert seen[2] == pytest.approx(3 / 12 * seen[1] + 9 / 12 * 3)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text((ROOT / "corpora" / "markov.txt").read_text(encoding="utf-8")[:12000], encoding="utf-8")
    return path


def test_an_ema_run_saves_and_validates_the_average_and_resumes_bit_for_bit(corpus: Path, tmp_path: Path) -> None:
    over = {**TINY, "ema": 0.9, "max_steps": 12, "save_every": 3, "lr_schedule": "linear", "min_lr_ratio": 0.0}
    one_go = run.train(run.TrainRequest([str(corpus)], tmp_path / "one", overrides=over))
    ck = ckpt_io.resolve(tmp_path / "one", "latest")
    saved, state = ckpt_io.read_tensors(ck.path), ckpt_io.read_tensors(ck.path, ckpt_io.STATE)
    trained = {k.removeprefix("trained."): v for k, v in state.items() if k.startswith("trained.")}
    assert trained.keys() == saved.keys() and int(state["ema.n_averaged"]) == 12
    assert not torch.equal(trained["head.weight"], saved["head.weight"])  # the average, not the last weights
    model, tok = ckpt_io.load_model(ck, torch.device("cpu"))
    val = tok.encode(corpus.read_text(encoding="utf-8")[-1200:])
    assert score_ids(model, val, torch.device("cpu")).bits_per_char == pytest.approx(ck.val_bpc, rel=1e-5)
    assert ck.train_config.ema == 0.9 and ck.train_config.lr_schedule == "linear"

    stop_at = 7

    def on_event(kind: str, info: dict) -> None:
        if kind == "step" and info["step"] == stop_at:
            signal.raise_signal(signal.SIGINT)

    first = run.train(run.TrainRequest([str(corpus)], tmp_path / "two", overrides=over), on_event)
    assert first.stopped_by == "SIGINT" and first.step == stop_at
    second = run.train(run.TrainRequest([], tmp_path / "two", resume=True))
    assert second.step == 12
    a = {**ckpt_io.read_tensors(one_go.last), **ckpt_io.read_tensors(one_go.last, ckpt_io.STATE)}
    b = {**ckpt_io.read_tensors(second.last), **ckpt_io.read_tensors(second.last, ckpt_io.STATE)}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weight_decay_reaches_the_optimizer(corpus: Path, tmp_path: Path) -> None:
    over = {**TINY, "weight_decay": 0.2, "max_steps": 2}
    run.train(run.TrainRequest([str(corpus)], tmp_path / "run", overrides=over))
    ck = ckpt_io.resolve(tmp_path / "run", "latest")
    assert ck.train_config.weight_decay == 0.2
    assert [g["weight_decay"] for g in ck.meta["optimizer"]["param_groups"]] == [0.2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr-schedule", "step"], "--lr-schedule must be cosine, linear or wsd (got 'step')"),
        (["--ema", "1"], "--ema must be in [0, 1)"),
        (["--min-lr-ratio", "1.5"], "--min-lr-ratio must be in [0, 1] (got 1.5)"),
        (["--decay-fraction", "0"], "--decay-fraction must be in (0, 1] (got 0.0)"),
        (["--weight-decay", "-1"], "--weight-decay must be 0 or more (got -1.0)"),
    ],
)
def test_bad_values_are_usage_errors(corpus: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(app, ["train", str(corpus), "--max-steps", "2", *args], prog_name="charlm")
    assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.output

"""The training loop: it learns, the schedule has its shape, checkpoints and metrics are written and pruned."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import split_text
from charlm.device import pick_precision
from charlm.errors import CharlmError
from charlm.tokenizer import CharTokenizer
from charlm.training.schedule import get_lr
from charlm.training.trainer import TrainData, Trainer


def _trainer(run: Path, text: str, events: list | None = None, **overrides) -> Trainer:
    tok = CharTokenizer.from_text(text)
    train, val = split_text(text, 0.2)
    data = TrainData(tok, tok.encode(train), tok.encode(val), {"sources": ["tiny"]})
    cfg = TrainConfig(**{"batch_size": 8, "seq_len": 32, "lr": 1e-2, "warmup_steps": 5, "device": "cpu", **overrides})
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, embed=8, hidden=32, layers=1)
    on_event = (lambda kind, info: events.append((kind, info))) if events is not None else None
    return Trainer(run, model_cfg, cfg, data, on_event)


def test_loss_decreases(tmp_path: Path, tiny_text: str) -> None:
    t = _trainer(tmp_path / "run", tiny_text, max_steps=150)
    before = t.validate()
    losses = [t.train_step()[0] for _ in range(150)]
    after = t.validate()
    assert before > math.log2(t.data.tokenizer.vocab_size) - 0.5  # untrained: close to a uniform guess
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    assert after < 0.6 * before


def test_hidden_state_is_carried_detached_and_reset_each_pass(tmp_path: Path, tiny_text: str) -> None:
    t = _trainer(tmp_path / "run", tiny_text)
    assert t.hidden is None
    t.train_step()
    assert t.hidden is not None and t.hidden.shape == (1, 8, 32) and not t.hidden.requires_grad
    first = t.hidden.clone()
    t.train_step()
    assert not torch.equal(t.hidden, first)
    for _ in range(t.streams.windows - 2):  # to the end of the pass
        t.train_step()
    assert t.streams.offset == 0
    batch_reset = t.streams.next_batch().reset
    assert batch_reset  # the next step starts a new pass, whose state starts from zero


def test_lr_warmup_then_cosine() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=10, lr_schedule="cosine", min_lr_ratio=0.1)
    warm = [get_lr(s, 0.0, cfg) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear up to the peak
    assert get_lr(10, 0.0, cfg) == pytest.approx(1.0)
    assert get_lr(10, 0.5, cfg) == pytest.approx(0.55)  # halfway down the cosine, between 1.0 and 0.1
    assert get_lr(10, 1.0, cfg) == pytest.approx(0.1)
    assert get_lr(10, 3.0, cfg) == pytest.approx(0.1)  # past the budget: stays at the floor
    decay = [get_lr(100, p / 20, cfg) for p in range(21)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert get_lr(10, 0.25, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert get_lr(50, 0.0, cfg, scale=0.5) == pytest.approx(0.5)  # after a rollback the whole curve is scaled


def test_no_warmup() -> None:
    cfg = TrainConfig(lr=2.0, warmup_steps=0, min_lr_ratio=0.0)
    assert get_lr(0, 0.0, cfg) == pytest.approx(2.0)
    assert get_lr(0, 1.0, cfg) == pytest.approx(0.0)


def test_the_default_schedule_is_flat_then_falls_to_zero_over_the_last_40_percent() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=10)
    assert (cfg.lr_schedule, cfg.min_lr_ratio, cfg.decay_fraction) == ("wsd", 0.0, 0.4)
    assert [get_lr(100, p, cfg) for p in (0.0, 0.3, 0.6)] == pytest.approx([1.0, 1.0, 1.0])
    assert [get_lr(100, p, cfg) for p in (0.7, 0.9, 1.0)] == pytest.approx([0.75, 0.25, 0.0])


def test_fit_writes_metrics_and_prunes_checkpoints(tmp_path: Path, tiny_text: str) -> None:
    run, events = tmp_path / "run", []
    result = _trainer(run, tiny_text, events, max_steps=30, eval_every=10, save_every=4, keep=2).fit()
    assert result.step == 30 and result.stopped_by == "max_steps" and not result.interrupted

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30]  # one per validation; extra saves add no record
    assert all(math.isfinite(r["val_bpc"]) and r["val_bpc"] > 0 for r in records)
    assert all(r["val_loss"] == pytest.approx(r["val_bpc"] * math.log(2)) for r in records)
    evals = [info for kind, info in events if kind == "eval"]
    assert [e["step"] for e in evals] == [10, 20, 30]

    saved = [info["step"] for kind, info in events if kind == "save"]
    assert saved == [0, 4, 8, 10, 12, 16, 20, 24, 28, 30]  # step 0: saved before the first step
    best_step = min(records, key=lambda r: r["val_bpc"])["step"]
    on_disk = sorted(p.name for p in run.glob("step-*"))
    assert on_disk == sorted({f"step-{s:08d}" for s in (28, 30, best_step)})
    assert result.best == ckpt_io.step_dir(run, best_step)
    assert result.best_val_bpc == pytest.approx(min(r["val_bpc"] for r in records))
    assert result.last == ckpt_io.step_dir(run, 30)
    for d in run.glob("step-*"):
        assert sorted(p.name for p in d.iterdir()) == ["checkpoint.json", "model.safetensors", "state.safetensors"]
    assert not list(run.glob(".tmp-*"))


def test_checkpoint_records_the_run(tmp_path: Path, tiny_text: str) -> None:
    run = tmp_path / "run"
    t = _trainer(run, tiny_text, max_steps=12, eval_every=6)
    t.fit()
    ck = ckpt_io.resolve(run, "latest")
    assert ck.step == 12
    assert ck.meta["chars_seen"] == 12 * 8 * 32
    assert ck.meta["data"]["offset"] == t.streams.offset
    assert ck.train_config == t.cfg
    assert ck.model_config == t.model.config
    assert ck.tokenizer.chars == t.data.tokenizer.chars
    assert ck.meta["metrics"]["val_bpc"] == pytest.approx(ckpt_io.read_metrics(run)[-1]["val_bpc"])
    loaded, _ = ckpt_io.load_model(ck)
    for name, p in t.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], p), name


def test_already_done(tmp_path: Path, tiny_text: str) -> None:
    t = _trainer(tmp_path / "run", tiny_text, max_steps=3, eval_every=100)
    t.fit()
    assert t.fit().stopped_by == "already_done"


def _native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)


def test_precision_auto_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    _native_bf16(monkeypatch, True)
    assert pick_precision("auto", cpu) is torch.bfloat16
    assert pick_precision("bf16", cpu) is torch.bfloat16
    assert pick_precision("fp32", cpu) is None
    _native_bf16(monkeypatch, False)
    assert pick_precision("auto", cpu) is None
    with pytest.raises(CharlmError, match="no native bfloat16"):
        pick_precision("bf16", cpu)
    assert TrainConfig(precision="fp16").problems() == ["precision must be auto, fp32 or bf16 (got 'fp16')"]


def test_bf16_steps_run_under_autocast_and_keep_fp32_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_text: str
) -> None:
    _native_bf16(monkeypatch, True)  # autocast to bf16 works on any CPU, natively fast or not
    t32 = _trainer(tmp_path / "a", tiny_text, precision="fp32")
    t16 = _trainer(tmp_path / "b", tiny_text, precision="bf16")
    seen: list[torch.dtype] = []
    t16.model.head.register_forward_hook(lambda m, inp, out: seen.append(out.dtype))
    l32 = [t32.train_step()[0] for _ in range(60)]
    l16 = [t16.train_step()[0] for _ in range(60)]
    assert seen[0] is torch.bfloat16  # the head's product is bf16: autocast is on ...
    assert not torch.equal(t16.model.gru.weight_hh_l0, t32.model.gru.weight_hh_l0)  # ... and rounds the GRU differently
    assert all(p.dtype is torch.float32 for p in t16.model.parameters())
    assert t16.hidden is not None and t16.hidden.dtype is torch.float32
    assert abs(l16[0] - l32[0]) < 0.02  # same start, only rounding differs ...
    assert sum(l16[-10:]) / 10 < 0.85 * sum(l16[:10]) / 10  # ... and bf16 learns as fp32 does
    assert abs(sum(l16[-10:]) - sum(l32[-10:])) / 10 < 0.1

"""Checkpoints: an exact save/load round trip, finding a checkpoint from what the user gives, clear errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CheckpointError, CheckpointNotFoundError
from charlm.model import CharLM
from charlm.tokenizer import CharTokenizer


def _save(run: Path, step: int, val_bpc: float | None = None, seed: int = 0, cell: str = "gru") -> tuple[Path, CharLM]:
    torch.manual_seed(seed)
    tok = CharTokenizer.from_text("abc xyz\n漢😀")
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=4, hidden=8, layers=2, cell=cell))
    meta = {
        "model": model.config.to_dict(),
        "train": TrainConfig().to_dict(),
        "vocab": tok.to_dict(),
        "step": step,
        "metrics": {} if val_bpc is None else {"val_bpc": val_bpc},
    }
    path = ckpt_io.save(run, meta, model.state_dict(), {"hidden": model.init_hidden(1)})
    return path, model


def _error(fn, *args) -> str:
    with pytest.raises(CheckpointError) as e:
        fn(*args)
    msg = str(e.value)
    # a checkpoint that is not there is a usage error (2); one that is there but damaged, a runtime error (1)
    assert "\n" not in msg and e.value.exit_code == (2 if isinstance(e.value, CheckpointNotFoundError) else 1)
    return msg


def test_save_then_load_gives_the_same_logits(tmp_path: Path) -> None:
    path, model = _save(tmp_path / "run", 5)
    assert path == tmp_path / "run" / "step-00000005"
    assert sorted(p.name for p in path.iterdir()) == ["checkpoint.json", "model.safetensors", "state.safetensors"]
    loaded, tok = ckpt_io.load_model(ckpt_io.resolve(path))
    assert not loaded.training
    idx = torch.tensor([tok.encode("abc 漢😀 xyz\n").tolist()])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])
    meta = json.loads((path / "checkpoint.json").read_text())
    assert meta["format"] == "charlm-checkpoint" and meta["version"] == ckpt_io.VERSION


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_each_cell_saves_and_loads(tmp_path: Path, cell: str) -> None:
    path, model = _save(tmp_path / "run", 5, cell=cell)
    loaded, tok = ckpt_io.load_model(ckpt_io.resolve(path))
    assert loaded.config.cell == cell and json.loads((path / "checkpoint.json").read_text())["model"]["cell"] == cell
    idx = torch.tensor([tok.encode("abc 漢😀 xyz\n").tolist()])
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


def test_a_checkpoint_from_before_cells_is_a_gru(tmp_path: Path) -> None:
    path, model = _save(tmp_path / "run", 5)
    meta = json.loads((path / "checkpoint.json").read_text())
    del meta["model"]["cell"]
    (path / "checkpoint.json").write_text(json.dumps(meta))
    loaded, _ = ckpt_io.load_model(ckpt_io.resolve(path))
    assert loaded.config.cell == "gru" and torch.equal(loaded.gru.weight_hh_l1, model.gru.weight_hh_l1)


def test_trained_run_reloads_exactly(tiny_run: Path, tiny_model) -> None:
    model, tok = tiny_model
    again, _ = ckpt_io.load_model(ckpt_io.resolve(tiny_run))
    idx = torch.tensor([tok.encode("the cat sees 🌙.\n猫").tolist()])
    with torch.no_grad():
        assert torch.equal(again(idx)[0], model(idx)[0])


def test_saving_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _save(run, 3, seed=0)
    path, model = _save(run, 3, seed=1)
    loaded, _ = ckpt_io.load_model(ckpt_io.resolve(path))
    assert torch.equal(loaded.head.weight, model.head.weight)
    assert sorted(p.name for p in run.iterdir()) == ["step-00000003"]


def test_prune_keeps_the_newest_and_the_best(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step, bpc in [(1, 3.0), (2, 1.5), (3, 2.5), (4, 2.0), (5, None), (6, 2.2)]:
        _save(run, step, bpc)
    gone = ckpt_io.prune(run, keep=2)
    assert sorted(p.name for p in gone) == ["step-00000001", "step-00000003", "step-00000004"]
    assert [c.step for c in ckpt_io.list_checkpoints(run)] == [2, 5, 6]
    assert ckpt_io.best_of(ckpt_io.list_checkpoints(run)).step == 2


# ---------------------------------------------------------------- resolve


def test_resolve_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step, bpc in [(10, 2.0), (20, 1.0), (30, 1.2)]:
        _save(run, step, bpc)
    assert ckpt_io.resolve(run).step == 20  # the best
    assert ckpt_io.resolve(run, "latest").step == 30


def test_resolve_a_step_folder_or_a_file_in_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _save(run, 10, 2.0)
    _save(run, 20, 1.0)
    step10 = run / "step-00000010"
    assert ckpt_io.resolve(step10).path == step10
    for name in ("model.safetensors", "checkpoint.json", "state.safetensors"):
        assert ckpt_io.resolve(step10 / name).path == step10


def test_resolve_none_finds_the_newest_run_under_checkpoints() -> None:
    old, _ = _save(Path("checkpoints/older"), 100, 1.0)
    new, _ = _save(Path("checkpoints/newer"), 5, 3.0)
    os.utime(old, (1_000_000_000, 1_000_000_000))
    assert ckpt_io.resolve(None).path == new
    os.utime(old, None)  # train into the other run again: now it is the newest
    os.utime(new, (1_000_000_000, 1_000_000_000))
    assert ckpt_io.resolve(None).path == old
    Path("checkpoints/empty").mkdir()  # a folder with no checkpoint is not a run
    Path("checkpoints/README.md").write_text("not a run")
    assert ckpt_io.resolve(None).path == old


def test_resolve_none_without_runs() -> None:
    assert "train one with: charlm train CORPUS" in _error(ckpt_io.resolve, None)
    Path("checkpoints").mkdir()
    assert "none found under checkpoints" in _error(ckpt_io.resolve, None)


def test_resolve_errors_name_the_path(tmp_path: Path) -> None:
    assert (
        _error(ckpt_io.resolve, tmp_path / "nowhere")
        == f"{tmp_path / 'nowhere'}: no such checkpoint or run folder (and no runs under checkpoints/)"
    )
    stray = tmp_path / "notes.txt"
    stray.write_text("hello")
    assert _error(ckpt_io.resolve, stray).startswith(f"{stray}: not a charlm checkpoint")
    (tmp_path / "empty").mkdir()
    assert "holds no readable checkpoint" in _error(ckpt_io.resolve, tmp_path / "empty")


# ---------------------------------------------------------------- damaged files


@pytest.fixture
def step(tmp_path: Path) -> Path:
    path, _ = _save(tmp_path / "run", 7, 1.0)
    return path


def test_missing_weights(step: Path) -> None:
    ck = ckpt_io.resolve(step)
    (step / "model.safetensors").unlink()  # a checkpoint once resolved holds its weights open: still loads
    assert set(ckpt_io.load_model(ck)[0].state_dict()) == set(ckpt_io.read_tensors(ck))
    assert _error(ckpt_io.resolve, step) == f"{step / 'model.safetensors'}: missing"


def test_truncated_weights(step: Path) -> None:
    ck = ckpt_io.resolve(step)
    f = step / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    assert _error(ckpt_io.load_model, ck).startswith(f"{f}: damaged or not a safetensors file")


def test_garbage_weights(step: Path) -> None:
    ck = ckpt_io.resolve(step)
    (step / "model.safetensors").write_bytes(b"\x80\x04\x95 this is not safetensors (it looks like a pickle)")
    assert "model.safetensors: damaged or not a safetensors file" in _error(ckpt_io.load_model, ck)


def test_weights_that_do_not_fit_the_config(step: Path) -> None:
    meta = json.loads((step / "checkpoint.json").read_text())
    meta["model"]["hidden"] = 9
    (step / "checkpoint.json").write_text(json.dumps(meta))
    msg = _error(ckpt_io.resolve, step)  # found from the header, before the weights are read
    assert msg.startswith(f"{step / 'model.safetensors'}: does not fit the model in checkpoint.json")
    assert "but the config needs" in msg


def test_tensors_are_checked_against_the_checkpoint_already_read(step: Path) -> None:
    ck = ckpt_io.resolve(step)
    (step / "checkpoint.json").unlink()  # the digests come from ck.meta: checkpoint.json is not read again
    assert set(ckpt_io.read_tensors(ck)) == set(ckpt_io.load_model(ck)[0].state_dict())
    ck.meta["sha256"]["model.safetensors"] = "0" * 64
    assert "its SHA-256 differs" in _error(ckpt_io.read_tensors, ck)


def test_an_unknown_cell_in_the_description(step: Path) -> None:
    meta = json.loads((step / "checkpoint.json").read_text())
    meta["model"]["cell"] = "gru2"
    (step / "checkpoint.json").write_text(json.dumps(meta))
    msg = _error(ckpt_io.resolve, step)
    assert msg == f"{step / 'checkpoint.json'}: model.cell must be one of gru, lstm, rnn (got 'gru2')"


@pytest.mark.parametrize(("saved", "claimed"), [("lstm", "gru"), ("gru", "lstm"), ("rnn", "gru"), ("gru", "rnn")])
def test_weights_of_another_cell_are_refused(tmp_path: Path, saved: str, claimed: str) -> None:
    """A checkpoint relabelled as another cell names the weights the claimed cell needs, in one line."""
    step, _ = _save(tmp_path / "run", 7, cell=saved)
    meta = json.loads((step / "checkpoint.json").read_text())
    meta["model"]["cell"] = claimed
    (step / "checkpoint.json").write_text(json.dumps(meta))
    msg = _error(ckpt_io.resolve, step)
    assert msg.startswith(f"{step / 'model.safetensors'}: does not fit the model in checkpoint.json: missing")
    assert f"{claimed}.weight_ih_l0" in msg


def test_missing_meta(step: Path) -> None:
    (step / "checkpoint.json").unlink()
    assert _error(ckpt_io.read_meta, step) == f"{step / 'checkpoint.json'}: missing"
    assert "holds no readable checkpoint" in _error(ckpt_io.resolve, step.parent)  # the run has no other


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"format": "charlm-checkpoint", "vers', "not a readable checkpoint description"),
        ("[1, 2, 3]", "not a charlm checkpoint"),
        ('{"format": "something-else"}', "not a charlm checkpoint"),
        ('{"format": "charlm-checkpoint", "version": 1, "step": 3}', "field(s) missing: model, train, vocab"),
    ],
)
def test_damaged_meta(step: Path, content: str, expected: str) -> None:
    (step / "checkpoint.json").write_text(content)
    msg = _error(ckpt_io.resolve, step)
    assert msg.startswith(f"{step / 'checkpoint.json'}: ") and expected in msg


def test_newer_format_version(step: Path) -> None:
    meta = json.loads((step / "checkpoint.json").read_text())
    meta["version"] = ckpt_io.VERSION + 1
    (step / "checkpoint.json").write_text(json.dumps(meta))
    assert "is newer than this charlm reads" in _error(ckpt_io.resolve, step)


def test_damaged_checkpoint_is_passed_over_in_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _save(run, 1, 2.0)
    newest, _ = _save(run, 2, 1.0)
    (newest / "checkpoint.json").write_text("{")
    assert ckpt_io.resolve(run).step == 1
    assert [c.step for c in ckpt_io.list_checkpoints(run)] == [1]


def test_metrics_lines_cut_short_are_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ckpt_io.append_metrics(run, {"step": 1, "val_bpc": 2.0})
    ckpt_io.append_metrics(run, {"step": 2, "val_bpc": 1.5})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "val_')
    assert ckpt_io.read_metrics(run) == [{"step": 1, "val_bpc": 2.0}, {"step": 2, "val_bpc": 1.5}]
    assert ckpt_io.read_metrics(tmp_path / "nowhere") == []


def test_tiny_run_folder_layout(tiny_run: Path) -> None:
    steps = sorted(p.name for p in tiny_run.glob("step-*"))
    assert steps == ["step-00000050", "step-00000100"]
    assert (tiny_run / "metrics.jsonl").is_file()
    shutil.copytree(tiny_run, "copy")  # a run folder is self-contained: a copy resolves and loads
    ck = ckpt_io.resolve(Path("copy"), "latest")
    assert ck.step == 100
    ckpt_io.load_model(ck)

"""What the checks of charlm.checkpoint.schema promise: nothing is allocated from a size the weight file does not
back, the expected tensors are exactly the model's, NaN weights are named, bf16 weights read the same everywhere."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm import checkpoint as ckpt_io
from charlm.checkpoint import schema
from charlm.config import ModelConfig
from charlm.errors import CheckpointError
from charlm.model import CharLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import redteam_checkpoint as redteam  # noqa: E402


@pytest.fixture
def step(tiny_run: Path, tmp_path: Path) -> Path:
    return redteam.steps(shutil.copytree(tiny_run, tmp_path / "run"))[-1]


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_the_expected_tensors_are_the_models_own(cell: str) -> None:
    cfg = ModelConfig(vocab_size=7, embed=3, hidden=5, layers=3, cell=cell)
    own = {k: tuple(v.shape) for k, v in CharLM(cfg).state_dict().items()}
    assert schema.expected_shapes(cfg.to_dict()) == own


def test_a_claimed_size_is_never_allocated(step: Path, monkeypatch) -> None:
    """Even a Checkpoint made by hand, past read_meta, is checked against its weights before the model is built."""
    meta = json.loads((step / "checkpoint.json").read_text())
    meta["model"].update(hidden=4000)

    def never(*args, **kwargs):
        raise AssertionError("the model was allocated")

    monkeypatch.setattr("charlm.model.CharLM.__init__", never)
    with pytest.raises(CheckpointError, match="does not fit the model in checkpoint.json"):
        ckpt_io.load_model(ckpt_io.Checkpoint(step, meta))
    (step / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"gru.weight_ih_l0 has shape \(72, 8\) but the config needs \(12000"):
        ckpt_io.resolve(step)


def test_nan_weights_are_named(step: Path) -> None:
    redteam.rewrite_tensors(step, "model.safetensors", redteam._nan)
    for framework in ("torch", "numpy"):
        with pytest.raises(CheckpointError) as e:
            ckpt_io.read_tensors(ckpt_io.resolve(step), framework=framework)
        assert str(e.value) == f"{step / 'model.safetensors'}: tensor head.weight holds NaN or infinite values; " + (
            "the checkpoint is unusable"
        )


def test_bf16_weights_read_as_float32_the_same_by_every_reader(step: Path) -> None:
    redteam.rewrite_tensors(step, "model.safetensors", redteam._bf16)
    ck = ckpt_io.resolve(step)
    as_torch = ckpt_io.read_tensors(ck)
    as_numpy = ckpt_io.read_tensors(ck, framework="numpy")
    for k, v in as_torch.items():
        assert v.dtype == torch.float32 and as_numpy[k].dtype == np.float32
        assert np.array_equal(v.numpy(), as_numpy[k])
    model, _ = ckpt_io.load_model(ck)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_limits_of_the_json_reader() -> None:
    for text, says in [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"a": ' + "9" * 5000 + "}", "5000 digits"),
        ('{"a": NaN}', "NaN, which is not a number JSON allows"),
        ('{"a": 1e999}', "too large to be finite"),
        (b"\xff", "not UTF-8"),
    ]:
        with pytest.raises(schema.Bad, match=says):
            schema.parse(text if isinstance(text, bytes) else text.encode())

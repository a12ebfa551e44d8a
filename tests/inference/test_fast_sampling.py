"""The fast sampling steps compute what the model computes, every path draws the same samples for a seed,
and `charlm sample` on a CPU never loads torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig
from charlm.inference import torch_step
from charlm.inference.gru_numpy import GRUStep, GRUWeights
from charlm.inference.sample import INT8_MIN_BATCH, Gumbel, SampleOptions, filter_logits, generate_chunks, load, stream
from charlm.inference.threads import intra_op_threads
from charlm.model import CharGRU


def model(layers: int = 1) -> CharGRU:
    torch.manual_seed(0)
    return CharGRU(ModelConfig(vocab_size=12, embed=6, hidden=16, layers=layers)).eval()


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize(("layers", "batch"), [(1, 1), (2, 1), (3, 4)])
def test_numpy_step_equals_the_model(layers: int, batch: int) -> None:
    m, h = model(layers), torch.randn(layers, batch, 16)
    step = GRUStep(GRUWeights.of(m), batch, h.numpy())
    x = torch.tensor([1, 5, 7, 11][:batch])
    with torch.no_grad():
        for _ in range(4):
            want, h = m(x[:, None], h)
            got = step(x.numpy())
            np.testing.assert_allclose(softmax(got), softmax(want[:, 0].numpy()), rtol=0, atol=1e-5)
            np.testing.assert_allclose(got, want[:, 0].numpy(), rtol=1e-5, atol=1e-5)
            x = want[:, 0].argmax(-1)
    np.testing.assert_allclose(step.state(), h.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 2])
def test_torch_step_equals_the_model(layers: int) -> None:
    m = model(layers)
    h0 = torch.randn(layers, 3, 16)
    step = torch_step.FusedGRUStep(m, h0, 3)
    x = torch.tensor([1, 5, 7])
    with torch.no_grad():
        for _ in range(3):
            want, h0 = m(x[:, None], h0)
            got = step(x)
            torch.testing.assert_close(got, want[:, 0], rtol=1e-5, atol=1e-5)
            x = want[:, 0].argmax(-1)
    torch.testing.assert_close(torch.stack(step.h), h0, rtol=1e-5, atol=1e-5)


def test_int8_step_stays_close() -> None:
    m = model(2)
    h = torch.zeros(2, 4, 16)
    exact, quant = torch_step.FusedGRUStep(m, h, 4), torch_step.FusedGRUStep(m, h, 4, int8=True)
    x = torch.tensor([0, 3, 6, 9])
    with torch.no_grad():
        a, b = exact(x).clone(), quant(x).clone()
    assert (a - b).abs().max() < 0.05 and not torch.equal(a, b)


def ids(m: nn.Module, batch: int = 1, **kw: object) -> np.ndarray:
    return np.concatenate(list(generate_chunks(m, [1, 2, 3], SampleOptions(**kw), batch)))


def test_same_seed_same_text_and_longer_extends_shorter() -> None:
    m = model()
    long = ids(m, length=150, seed=7)
    assert np.array_equal(long, ids(m, length=150, seed=7)) and not np.array_equal(long, ids(m, length=150, seed=8))
    assert np.array_equal(ids(m, length=70, seed=7), long[:70])


@pytest.mark.parametrize("kw", [{}, {"top_k": 4}, {"top_p": 0.8, "temperature": 1.5}, {"temperature": 0.0}])
def test_numpy_and_torch_steps_draw_the_same_samples(kw: dict) -> None:
    m, opts = model(2), SampleOptions(length=150, seed=7, **kw)
    on_torch = torch_step.chunks(m, [1, 2, 3], opts, 3, "cpu", Gumbel(opts.seed, opts.temperature))
    assert np.array_equal(np.concatenate(list(on_torch)), ids(m, 3, **vars(opts)))


def test_greedy_and_top_k_one_follow_the_model() -> None:
    m = model()
    greedy = ids(m, length=20, temperature=0.0)
    assert np.array_equal(greedy, ids(m, length=20, top_k=1, seed=3))
    x, h, want = torch.tensor([[1, 2, 3]]), None, []
    with torch.no_grad():
        for _ in range(20):
            logits, h = m(x, h)
            x = logits[:, -1:].argmax(-1)
            want.append(x[:, 0].numpy())
    assert np.array_equal(greedy, np.stack(want))


def test_numpy_and_torch_filters_agree() -> None:
    logits = torch.randn(6, 30).round(decimals=1)  # rounded: ties too
    for k, p in [(1, None), (5, None), (None, 0.3), (None, 0.9), (7, 0.5), (40, 1.0)]:
        want = torch_step.filter_logits(logits, 0.7, k, p).isinf()
        assert np.array_equal(np.isinf(filter_logits(logits.numpy(), 0.7, k, p)), want.numpy()), (k, p)


class StandIn(nn.Module):
    """A model that declares another cell, so sampling steps it through its forward; it computes a GRU."""

    def __init__(self, inner: CharGRU) -> None:
        super().__init__()
        self.inner, self.config = inner, SimpleNamespace(**{**inner.config.to_dict(), "cell": "lstm"})
        self.calls = 0

    def forward(self, idx: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.inner(idx, state)

    def init_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.inner.init_hidden(batch, device)


def test_other_cells_step_through_their_forward() -> None:
    m = model(2)
    stand_in = StandIn(m)
    got = ids(stand_in, 2, length=100, seed=3, top_k=5)
    assert stand_in.calls == 1 + 100  # the prime in one call, then one per character
    assert np.array_equal(got, ids(m, 2, length=100, seed=3, top_k=5))


def test_many_samples_use_int8_and_only_allowed_characters() -> None:
    m = model()
    assert torch_step.uses_int8(INT8_MIN_BATCH, "cpu") and not torch_step.uses_int8(INT8_MIN_BATCH - 1, "cpu")
    out = ids(m, batch=INT8_MIN_BATCH, length=30, top_k=2, seed=1)
    assert out.shape == (30, INT8_MIN_BATCH) and out.min() >= 0 and out.max() < 12
    assert len(np.unique(out)) > 2  # each step picks among its own top two, which vary


def test_load_reads_numpy_weights_for_the_cpu(tiny_run: Path) -> None:
    ck = ckpt_io.resolve(tiny_run)
    weights, tok, dev = load(ck, "cpu", 1)
    assert isinstance(weights, GRUWeights) and dev == "cpu"
    assert isinstance(load(ck, "auto", 3)[0], GRUWeights)  # a small model: the CPU, GPU or not
    torch_model, _, _ = load(ck, "cpu", INT8_MIN_BATCH)  # enough samples for int8
    assert isinstance(torch_model, CharGRU)
    opts = SampleOptions(length=100, seed=4)
    assert "".join(stream(weights, tok, opts)) == "".join(stream(torch_model, tok, opts))


def test_cli_sample_on_a_cpu_never_imports_torch(tiny_run: Path) -> None:
    code = (
        "import sys\nfrom charlm.cli import main\n"
        f"sys.argv = ['charlm', 'sample', {str(tiny_run)!r}, '--length', '50', '--seed', '2', '--device', 'cpu']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\ntorch loaded:', 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # the repository root
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.endswith("\ntorch loaded: False\n")
    m, tok = ckpt_io.load_model(ckpt_io.resolve(tiny_run))
    assert out[: -len("\ntorch loaded: False\n")] == "".join(stream(m, tok, SampleOptions(length=50, seed=2)))


def test_many_samples_do_not_depend_on_the_thread_count() -> None:
    m, batch = model(), 2 * torch_step.SHARE_ROWS + 1  # three shares
    with intra_op_threads(2):
        two = ids(m, batch=batch, length=20, seed=5)
    with intra_op_threads(1):
        assert np.array_equal(ids(m, batch=batch, length=20, seed=5), two)

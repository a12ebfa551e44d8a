"""The fused sampling step computes what the model computes, and sampling stays reproducible."""

from __future__ import annotations

import pytest
import torch

from charlm.config import ModelConfig
from charlm.inference.sample import INT8_MIN_BATCH, SampleOptions, _Stepper, generate_ids
from charlm.model import CharGRU


def model(layers: int = 1) -> CharGRU:
    torch.manual_seed(0)
    return CharGRU(ModelConfig(vocab_size=12, embed=6, hidden=16, layers=layers)).eval()


@pytest.mark.parametrize("layers", [1, 2])
def test_step_equals_the_model(layers: int) -> None:
    m = model(layers)
    h0 = torch.randn(layers, 3, 16)
    step = _Stepper(m, h0, 3)
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
    exact, quant = _Stepper(m, torch.zeros(2, 4, 16), 4), _Stepper(m, torch.zeros(2, 4, 16), 4, int8=True)
    x = torch.tensor([0, 3, 6, 9])
    with torch.no_grad():
        a, b = exact(x).clone(), quant(x).clone()
    assert (a - b).abs().max() < 0.05 and not torch.equal(a, b)


def ids(m: CharGRU, batch: int = 1, **kw: object) -> torch.Tensor:
    return torch.stack(list(generate_ids(m, [1, 2, 3], SampleOptions(**kw), batch)))


def test_same_seed_same_text_and_longer_extends_shorter() -> None:
    m = model()
    long = ids(m, length=150, seed=7)
    assert torch.equal(long, ids(m, length=150, seed=7)) and not torch.equal(long, ids(m, length=150, seed=8))
    assert torch.equal(ids(m, length=70, seed=7), long[:70])


def test_greedy_and_top_k_one_follow_the_model() -> None:
    m = model()
    greedy = ids(m, length=20, temperature=0.0)
    assert torch.equal(greedy, ids(m, length=20, top_k=1, seed=3))
    x, h, want = torch.tensor([[1, 2, 3]]), None, []
    with torch.no_grad():
        for _ in range(20):
            logits, h = m(x, h)
            x = logits[:, -1:].argmax(-1)
            want.append(x[:, 0])
    assert torch.equal(greedy, torch.stack(want))


def test_many_samples_use_only_allowed_characters() -> None:
    m = model()
    out = ids(m, batch=INT8_MIN_BATCH, length=30, top_k=2, seed=1)
    assert out.shape == (30, INT8_MIN_BATCH) and out.min() >= 0 and out.max() < 12
    assert len(out.unique()) > 2  # each step picks among its own top two, which vary

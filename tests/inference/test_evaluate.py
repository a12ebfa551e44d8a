"""Scoring: parallel segments with burn-in give what one sequential pass gives; the unit arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.config import ModelConfig
from charlm.inference.evaluate import EvalResult, score_ids
from charlm.model import CharGRU


def _one_pass_nats(model: CharGRU, ids: np.ndarray) -> float:
    """Read the whole text in a single call from a zero state; the sum of -log p(next character)."""
    x = torch.from_numpy(ids)
    with torch.no_grad():
        logits, _ = model(x[None, :-1])
        return F.cross_entropy(logits.transpose(1, 2), x[None, 1:], reduction="none").double().sum().item()


@pytest.fixture(scope="module")
def held_out(tiny_model, text_maker) -> np.ndarray:
    """Text in the tiny run's style that it did not train on (about 6,800 characters)."""
    return tiny_model[1].encode(text_maker(lines=400, seed=5))


def test_one_stream_is_exactly_one_sequential_pass(tiny_model, held_out: np.ndarray) -> None:
    model, _ = tiny_model
    expected = _one_pass_nats(model, held_out)
    r = score_ids(model, held_out, streams=1, chunk=len(held_out))
    assert r.chars == len(held_out) - 1
    assert r.nats == expected
    # Reading in chunks carries the state across them; only float32 rounding may differ.
    for chunk in (512, 100):
        assert score_ids(model, held_out, streams=1, chunk=chunk).nats == pytest.approx(expected, rel=1e-9, abs=0)


@pytest.mark.parametrize(("streams", "burn_in"), [(8, 64), (64, 128), (64, 32)])
def test_parallel_segments_match_a_sequential_pass(tiny_model, held_out: np.ndarray, streams, burn_in) -> None:
    model, _ = tiny_model
    sequential = score_ids(model, held_out, streams=1)
    parallel = score_ids(model, held_out, streams=streams, burn_in=burn_in)
    assert parallel.chars == sequential.chars == len(held_out) - 1  # every character scored once
    assert abs(parallel.bits_per_char - sequential.bits_per_char) < 1e-3


def test_without_burn_in_segments_start_cold(tiny_model, held_out: np.ndarray) -> None:
    """The control for the test above: with no burn-in, 64 segments each lose their context."""
    model, _ = tiny_model
    sequential = score_ids(model, held_out, streams=1)
    cold = score_ids(model, held_out, streams=64, burn_in=0)
    assert cold.chars == sequential.chars
    assert cold.bits_per_char - sequential.bits_per_char > 5e-3


def test_short_texts(tiny_model) -> None:
    model, tok = tiny_model
    ids = tok.encode("a dog")
    assert score_ids(model, ids).nats == pytest.approx(_one_pass_nats(model, ids), rel=1e-6)
    assert score_ids(model, ids).chars == 4
    assert score_ids(model, ids[:1]) == EvalResult(0, 0.0)


def test_uniform_model_scores_log2_of_the_vocabulary() -> None:
    model = CharGRU(ModelConfig(vocab_size=37, embed=4, hidden=8))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    ids = np.random.default_rng(0).integers(0, 37, size=2000)
    r = score_ids(model, ids, streams=16, burn_in=16)
    assert r.chars == 1999
    assert r.bits_per_char == pytest.approx(math.log2(37), rel=1e-6)
    assert r.perplexity == pytest.approx(37, rel=1e-5)


def test_training_mode_is_restored(tiny_model) -> None:
    model = CharGRU(ModelConfig(vocab_size=5, embed=4, hidden=8, layers=2, dropout=0.3))
    model.train()
    ids = np.arange(50) % 5
    a, b = score_ids(model, ids), score_ids(model, ids)
    assert a == b  # scored in eval mode: dropout off, so deterministic
    assert model.training


def test_units() -> None:
    r = EvalResult(chars=10, nats=10 * math.log(2))
    assert r.loss == pytest.approx(math.log(2))
    assert r.bits_per_char == pytest.approx(1.0)
    assert r.perplexity == pytest.approx(2.0)
    r = EvalResult(chars=4, nats=4 * math.log(5))
    assert r.bits_per_char == pytest.approx(math.log2(5)) and r.perplexity == pytest.approx(5.0)
    assert r.to_dict() == {
        "chars": 4,
        "nats": pytest.approx(4 * math.log(5)),
        "loss": pytest.approx(math.log(5)),
        "bits_per_char": pytest.approx(math.log2(5)),
        "perplexity": pytest.approx(5.0),
    }
    empty = EvalResult(0, 0.0)
    assert math.isnan(empty.loss) and math.isnan(empty.bits_per_char) and math.isnan(empty.perplexity)

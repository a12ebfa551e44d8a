"""What a sampling request may cost: groups of bounded memory, samples streamed in order, a prime read once,
requests the machine cannot hold refused first, temperatures that would overflow capped, seeds in range."""

from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from charlm.config import SEED_MAX, ModelConfig  # noqa: E402
from charlm.errors import UsageError  # noqa: E402
from charlm.inference import sample as sampling  # noqa: E402
from charlm.inference import torch_step  # noqa: E402
from charlm.inference.gru_numpy import GRUWeights  # noqa: E402
from charlm.inference.sample import (  # noqa: E402
    INT8_MIN_BATCH,
    Primed,
    SampleOptions,
    check,
    group_size,
    memory_needed,
    sample_many,
    sample_pieces,
    stream,
)
from charlm.model import CharGRU  # noqa: E402


def test_a_million_samples_need_no_more_than_a_group() -> None:
    cfg = ModelConfig(vocab_size=100, hidden=256, layers=2)
    g = group_size(cfg, 1, 1_000_000)
    assert 1 < g < 1_000_000
    assert memory_needed(cfg, 1, 1_000_000) < 1 << 30  # was 6.44 GiB at once
    assert memory_needed(cfg, 1, 1_000_000) == memory_needed(cfg, 1, 10 * g)


def test_samples_too_long_to_hold_are_generated_one_after_another() -> None:
    cfg = ModelConfig(vocab_size=100)
    assert group_size(cfg, 10**9, 2) == 1
    assert group_size(cfg, 1000, 50) == 50  # an ordinary request keeps them side by side, as before


def test_groups_give_every_sample_in_order(tiny_model, monkeypatch) -> None:
    model, tok = tiny_model
    opts = SampleOptions(length=70, seed=4, temperature=0.9)
    whole = sample_many(model, tok, opts, 5)
    monkeypatch.setattr(sampling, "WORK_BYTES", 2 * sampling._sample_bytes(model.config))  # groups of two
    assert group_size(model.config, 70, 5) == 2
    pieces = list(sample_pieces(model, tok, opts, 5))
    order = [i for i, _ in pieces]
    assert order == sorted(order) and set(order) == set(range(5))  # each sample whole, in turn
    texts = ["".join(p for i, p in pieces if i == n) for n in range(5)]
    assert [len(t) for t in texts] == [70] * 5
    assert texts == sample_many(model, tok, opts, 5)  # the same seed, the same text
    assert texts[:1] != whole[:1] or texts != whole  # a group's draws are its own: no sample repeats another
    assert len(set(texts)) == 5


def test_the_first_sample_streams_before_the_rest_is_generated(tiny_model) -> None:
    model, tok = tiny_model
    t = time.monotonic()
    first = list(itertools.islice(sample_pieces(model, tok, SampleOptions(length=10**9, seed=1), 2), 3))
    assert time.monotonic() - t < 30 and {i for i, _ in first} == {0}
    assert sum(len(p) for _, p in first) > 0


def test_an_empty_sample_still_counts(tiny_model) -> None:
    model, tok = tiny_model
    opts = SampleOptions(length=0, seed=1)
    assert [i for i, _ in sample_pieces(model, tok, opts, 3)] == [0, 1, 2]
    assert sample_many(model, tok, opts, 3) == ["", "", ""]


def test_a_request_the_machine_cannot_hold_is_refused_first(tiny_model, monkeypatch) -> None:
    model, tok = tiny_model
    monkeypatch.setattr(sampling, "available_memory", lambda: 1 << 20)
    with pytest.raises(UsageError, match=r"need about .* GiB of memory; 0\.0 GiB is free"):
        next(sample_pieces(model, tok, SampleOptions(length=10, prime="the cat " * 100_000), 2))


def test_free_memory_is_read_with_a_fallback(monkeypatch) -> None:
    free = sampling.available_memory()
    assert free is None or free > 0

    def no_proc(*a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr("builtins.open", no_proc)
    fallback = sampling.available_memory()
    assert fallback is None or fallback > 0


@pytest.mark.parametrize("batch", [3, INT8_MIN_BATCH])  # the NumPy step, and torch's int8 step
def test_the_prime_is_read_once_for_every_sample(tiny_model, batch: int) -> None:
    model, tok = tiny_model
    prime = tok.encode("the cat sees the moon.\n" * 40)
    with torch.no_grad():
        _, expected = model(torch.from_numpy(prime[:-1])[None], None)
    primed = Primed(prime)
    state = primed.numpy_state(GRUWeights.of(model))
    assert state.shape == (model.config.layers, 1, model.config.hidden)
    assert np.allclose(state, expected.numpy(), atol=1e-5)
    assert primed.numpy_state(GRUWeights.of(model)) is state  # computed once, shared by every group
    assert torch.allclose(torch_step.prime_state(model, prime[:-1], "cpu"), expected, atol=1e-5)
    chunks = list(sampling.generate_chunks(model, primed, SampleOptions(length=20, seed=2), batch))
    assert np.concatenate(chunks).shape == (20, batch)


def test_a_long_prime_costs_the_memory_of_one_sample() -> None:
    cfg = ModelConfig(vocab_size=100)
    one, many = memory_needed(cfg, 10, 1, 10_000_000), memory_needed(cfg, 10, 64, 10_000_000)
    assert many - one < 64 * sampling._sample_bytes(cfg)  # not 64 passes over the prime (was 5 GB)
    assert many < 1 << 30


@pytest.mark.parametrize("n", [1, 3, INT8_MIN_BATCH])
def test_huge_temperatures_sample_uniformly_without_warnings(tiny_model, n: int) -> None:
    model, tok = tiny_model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hot = sample_many(model, tok, SampleOptions(length=400, temperature=1e300, seed=3), n)
        capped = sample_many(model, tok, SampleOptions(length=400, temperature=sampling.MAX_TEMPERATURE, seed=3), n)
    assert hot == capped
    counts = np.unique(list("".join(hot)), return_counts=True)[1]
    assert len(counts) > tok.vocab_size * 0.6  # spread over the vocabulary, not one character repeated


def test_uniform_means_every_character_equally_likely() -> None:
    cfg = ModelConfig(vocab_size=5, hidden=4, embed=2, layers=1)
    torch.manual_seed(0)
    model = CharGRU(cfg).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([30.0, 0, 0, 0, -30.0]))  # one character overwhelmingly likely
    ids = np.concatenate(list(sampling.generate_chunks(model, [0], SampleOptions(length=20000, temperature=1e300))))
    freq = np.bincount(ids.ravel(), minlength=5) / ids.size
    assert np.all(np.abs(freq - 0.2) < 0.02), freq


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 10**26])
def test_seeds_out_of_range_are_refused_by_name(seed: int) -> None:
    with pytest.raises(UsageError, match=rf"^seed must be in 0\.\.{SEED_MAX} \(got {seed}\)$"):
        check(SampleOptions(seed=seed))


def test_stream_is_the_first_of_the_samples(tiny_model) -> None:
    model, tok = tiny_model
    opts = SampleOptions(length=150, seed=8, stop="moon")
    assert "".join(stream(model, tok, opts)) == sample_many(model, tok, opts, 1)[0]
    assert all("moon" not in t for t in sample_many(model, tok, opts, 4))
    assert math.isfinite(sampling.MAX_TEMPERATURE)

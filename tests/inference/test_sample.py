"""Sampling: seeds, greedy decoding, exact lengths, top-k and top-p filtering, priming and stop strings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from charlm.errors import UsageError
from charlm.inference.sample import (
    CHUNK,
    SampleOptions,
    check,
    filter_logits,
    generate_ids,
    sample_many,
    start_ids,
    stream,
)


def _text(model_tok, **kw) -> str:
    model, tok = model_tok
    return "".join(stream(model, tok, SampleOptions(**{"length": 200, **kw})))


def _greedy_by_hand(model, tok, prime: str, length: int) -> str:
    """Feed the whole text so far and take the most likely next character, every step."""
    ids = start_ids(tok, prime, "error")
    out = []
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(torch.tensor([ids]))
            nxt = int(logits[0, -1].argmax())
            ids.append(nxt)
            out.append(tok.chars[nxt])
    return "".join(out)


def test_same_seed_same_text(tiny_model) -> None:
    a = _text(tiny_model, seed=11, temperature=1.5)
    assert a == _text(tiny_model, seed=11, temperature=1.5)
    assert a != _text(tiny_model, seed=12, temperature=1.5)


def test_same_seed_same_batch_of_samples(tiny_model) -> None:
    model, tok = tiny_model
    opts = SampleOptions(length=80, seed=5, temperature=1.5)
    texts = sample_many(model, tok, opts, 4)
    assert texts == sample_many(model, tok, opts, 4)
    assert len(texts) == 4 and all(len(t) == 80 for t in texts)
    assert len(set(texts)) > 1  # the samples are drawn independently


def test_temperature_zero_is_greedy(tiny_model) -> None:
    model, tok = tiny_model
    greedy = _text(tiny_model, temperature=0, length=60, seed=1)
    assert greedy == _greedy_by_hand(model, tok, "", 60)
    assert greedy == _text(tiny_model, temperature=0, length=60, seed=2)  # no randomness left
    primed = _text(tiny_model, temperature=0, length=40, prime="a dog ")
    assert primed == _greedy_by_hand(model, tok, "a dog ", 40)


def test_top_k_one_is_greedy(tiny_model) -> None:
    greedy = _text(tiny_model, temperature=0, length=100)
    assert _text(tiny_model, temperature=1.0, top_k=1, seed=3, length=100) == greedy
    assert _text(tiny_model, temperature=5.0, top_k=1, seed=4, length=100) == greedy


@pytest.mark.parametrize("length", [0, 1, 7, 300])
def test_length_is_exact(tiny_model, length: int) -> None:
    text = _text(tiny_model, length=length, seed=0, temperature=2.0)
    assert len(text) == length  # characters, not bytes or ids:
    if length == 300:
        assert any(ord(c) > 0xFFFF for c in text) and any(0x3000 <= ord(c) <= 0x9FFF for c in text)
    model, tok = tiny_model
    assert [len(t) for t in sample_many(model, tok, SampleOptions(length=length, seed=0), 3)] == [length] * 3


def test_generate_ids_yields_one_id_per_sample_per_step(tiny_model) -> None:
    model, tok = tiny_model
    steps = list(generate_ids(model, [0, 1, 2], SampleOptions(length=5, seed=0), batch=3))
    assert len(steps) == 5 and all(s.shape == (3,) and s.dtype == np.int64 for s in steps)
    assert all(0 <= int(i) < tok.vocab_size for s in steps for i in s)


# ---------------------------------------------------------------- filtering


def _logits(probs: list[float]) -> np.ndarray:
    return np.log([probs])


def _kept(logits: np.ndarray) -> set[int]:
    return {i for i, v in enumerate(logits[0].tolist()) if v != -math.inf}


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.3, {1}),  # the most likely alone already reaches p
        (0.5, {1}),
        (0.6, {1, 3}),  # 0.5 < 0.6 <= 0.5 + 0.3
        (0.85, {1, 3, 0}),
        (0.97, {1, 3, 0, 2}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p: float, kept: set[int]) -> None:
    logits = _logits([0.15, 0.5, 0.05, 0.3])
    out = filter_logits(logits, 1.0, None, p)
    assert _kept(out) == kept
    probs = _softmax(out)[0]
    total = sum(0.15 if i == 0 else 0.5 if i == 1 else 0.05 if i == 2 else 0.3 for i in kept)
    for i in kept:  # the kept characters keep their relative odds
        assert probs[i].item() == pytest.approx([0.15, 0.5, 0.05, 0.3][i] / total)


def test_top_p_and_top_k_per_row() -> None:
    logits = np.concatenate([_logits([0.7, 0.1, 0.1, 0.1]), _logits([0.24, 0.26, 0.3, 0.2])])
    out = filter_logits(logits, 1.0, None, 0.6)
    assert (out > -math.inf).tolist() == [[True, False, False, False], [True, True, True, False]]
    out = filter_logits(logits, 1.0, 2, None)
    assert (out[1] > -math.inf).tolist() == [False, True, True, False]


def test_top_k_keeps_the_k_most_likely() -> None:
    logits = _logits([0.1, 0.4, 0.2, 0.3])
    assert _kept(filter_logits(logits, 1.0, 2, None)) == {1, 3}
    assert _kept(filter_logits(logits, 1.0, 10, None)) == {0, 1, 2, 3}


def test_temperature_scales_the_logits() -> None:
    logits = np.array([[1.0, 2.0, 4.0]], np.float32)
    assert np.array_equal(filter_logits(logits, 0.5, None, None), logits * 2)


def test_sampled_characters_come_from_the_kept_set(tiny_model) -> None:
    model, tok = tiny_model
    prime = start_ids(tok, "the ", "error")
    with torch.no_grad():
        logits, _ = model(torch.tensor([prime]))
    allowed = _kept(filter_logits(logits[:, -1].numpy(), 1.0, 3, None))
    firsts = {int(next(generate_ids(model, prime, SampleOptions(length=1, top_k=3, seed=s)))[0]) for s in range(40)}
    assert firsts <= allowed and len(firsts) >= 2


# ---------------------------------------------------------------- prime and stop


def test_stop_string_ends_the_sample(tiny_model) -> None:
    full = _text(tiny_model, temperature=0.8, seed=9, length=300)
    stop = full[120:123]
    first = full.index(stop)
    assert _text(tiny_model, temperature=0.8, seed=9, length=300, stop=stop) == full[:first]
    model, tok = tiny_model
    opts = SampleOptions(length=300, temperature=0.8, seed=9, stop="never in this text")
    assert _text(tiny_model, temperature=0.8, seed=9, length=300, stop="never in this text") == full
    assert all(len(t) == 300 for t in sample_many(model, tok, opts, 2))
    cut = sample_many(model, tok, SampleOptions(length=300, temperature=0.8, seed=9, stop="."), 3)
    assert all("." not in t and len(t) < 300 for t in cut)


def test_stop_is_streamed_in_pieces(tiny_model) -> None:
    model, tok = tiny_model
    pieces = list(stream(model, tok, SampleOptions(length=5 * CHUNK, seed=1, stop="zzz")))
    # a piece per chunk of steps, holding back only what could start the stop string (its length less one)
    assert [len(p) for p in pieces] == [CHUNK - 2] + [CHUNK] * 4 + [2]
    assert "".join(pieces) == "".join(stream(model, tok, SampleOptions(length=5 * CHUNK, seed=1)))


def test_prime_is_read_first(tiny_model) -> None:
    model, tok = tiny_model
    assert start_ids(tok, "", "error") == [tok.id_of("\n")]
    # The first character follows the model's prediction after the whole prime (its odds, at temperature 1).
    for prime in ("a dog ", "猫 ", "the cat"):
        with torch.no_grad():
            logits, _ = model(torch.tensor([tok.encode(prime).tolist()]))
        probs = logits[0, -1].softmax(-1)
        assert _text(tiny_model, prime=prime, temperature=0, length=1) == tok.chars[int(probs.argmax())]
        firsts = [_text(tiny_model, prime=prime, seed=s, length=1) for s in range(400)]
        freq = torch.tensor([firsts.count(c) for c in tok.chars], dtype=torch.float) / len(firsts)
        assert (freq - probs).abs().max() < 0.1


def test_prime_with_unknown_characters(tiny_model) -> None:
    with pytest.raises(UsageError, match=r"prime has 2 character\(s\) the model never saw in training: 'Q', 'ß'"):
        _text(tiny_model, prime="Qa ß")
    model, tok = tiny_model
    assert start_ids(tok, "Qa ß", "skip") == tok.encode("a ").tolist()
    assert start_ids(tok, "QQ", "skip") == [tok.id_of("\n")]  # nothing left: start as at a line's start


def test_check_lists_every_bad_option() -> None:
    with pytest.raises(UsageError) as e:
        check(SampleOptions(length=-1, temperature=-0.5, top_k=0, top_p=1.5), num_samples=0)
    assert len(e.value.problems) == 5
    assert [p.params for p in e.value.problems] == [["temperature"], ["top_k"], ["top_p"], ["length"], ["n"]]
    assert str(e.value).startswith("temperature must be a finite number >= 0 (got -0.5); top_k must be")
    check(SampleOptions(length=0, temperature=0, top_k=1, top_p=1.0))
    with pytest.raises(UsageError, match="^temperature must"):
        check(SampleOptions(temperature=math.nan))

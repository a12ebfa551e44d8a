"""Properties that hold for any input, checked with hypothesis on small, fast examples."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig
from charlm.inference.evaluate import score_ids
from charlm.inference.sample import SampleOptions, sample_many, stream
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every code point, lone surrogates included: a Python str can hold them (they cannot come from a UTF-8 file,
# which charlm reads strictly or with U+FFFD, but can from the library API), and the tokenizer keeps them.
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(alphabet=ANY_CHAR, min_size=1, max_size=200)


@FAST
@given(ANY_TEXT, ANY_TEXT)
def test_tokenizer_round_trips_any_text(text: str, more: str) -> None:
    tok = CharTokenizer.from_text(text, more)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.unknown(text + more) == []
    # the vocabulary survives the trip through checkpoint.json
    again = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.chars == tok.chars and again.decode(again.encode(more)) == more


@FAST
@given(ANY_TEXT, ANY_TEXT)
def test_unknown_characters_are_named_or_dropped(known: str, other: str) -> None:
    tok = CharTokenizer.from_text(known)
    unknown = [c for c in dict.fromkeys(other) if c not in set(known)]
    assert tok.unknown(other) == unknown
    kept = tok.encode(other, on_unknown="skip")
    assert tok.decode(kept) == "".join(c for c in other if c in set(known))


def random_model(vocab: int, seed: int) -> CharGRU:
    torch.manual_seed(seed)
    model = CharGRU(ModelConfig(vocab_size=vocab, embed=4, hidden=8, layers=1))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)  # sharper than at initialisation, so that filtering has something to cut
    return model.eval()


VOCAB = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)
OPTIONS = st.builds(
    SampleOptions,
    length=st.integers(0, 40),
    temperature=st.one_of(st.just(0.0), st.floats(0.05, 5.0)),
    top_k=st.one_of(st.none(), st.integers(1, 40)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
    seed=st.integers(0, 2**31),
)


@FAST
@given(VOCAB, OPTIONS, st.integers(0, 1000), st.integers(1, 3))
def test_sampling_emits_only_vocabulary_characters_and_exactly_length(vocab, opts, seed, n) -> None:
    tok = CharTokenizer.from_text(vocab)
    model = random_model(tok.vocab_size, seed)
    allowed = set(tok.chars)
    text = "".join(stream(model, tok, opts))
    assert len(text) == opts.length and set(text) <= allowed
    texts = sample_many(model, tok, opts, n)
    assert len(texts) == n and all(len(t) == opts.length and set(t) <= allowed for t in texts)


@FAST
@given(st.data(), st.integers(0, 1000))
def test_evaluation_of_any_in_vocabulary_text_is_finite(data, seed) -> None:
    vocab = data.draw(VOCAB)
    tok = CharTokenizer.from_text(vocab)
    text = data.draw(st.text(alphabet=st.sampled_from(tok.chars), min_size=2, max_size=400))
    model = random_model(tok.vocab_size, seed)
    # small segments and burn-in, so that the parallel segmenting is exercised on short texts too
    for kw in ({}, {"streams": 4, "burn_in": 8, "chunk": 16}):
        r = score_ids(model, tok.encode(text), **kw)
        assert r.chars == len(text) - 1
        assert all(math.isfinite(v) for v in (r.loss, r.bits_per_char, r.perplexity)) and r.loss >= 0


@pytest.fixture(scope="module")
def checkpoint(tiny_run: Path) -> Path:
    return ckpt_io.resolve(tiny_run, "latest").path


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 300), st.integers(0, 2**31), st.sampled_from(["0", "0.7", "1", "2.5"]))
def test_cli_length_n_prints_exactly_n_characters(checkpoint: Path, monkeypatch, n, seed, temperature) -> None:
    from charlm.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = ["charlm", "sample", str(checkpoint), "--length", str(n), "--seed", str(seed), "-q"]
    monkeypatch.setattr("sys.argv", [*argv, "--temperature", temperature])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 0, err.getvalue()
    assert len(out.getvalue()) == n
    assert set(out.getvalue()) <= set(ckpt_io.resolve(checkpoint).tokenizer.chars)

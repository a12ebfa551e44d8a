"""The shipped corpus: corpora/markov.txt is what corpora/make_markov.py writes, its stated entropy rate is
right, and a small model trained on it for a few seconds gets close to that floor."""

from __future__ import annotations

import importlib.util
import math
import random
import re
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from charlm import training as run

CORPORA = Path(__file__).resolve().parents[2] / "corpora"
MARKOV = CORPORA / "markov.txt"
FLOOR = 0.250618  # bits/char: the entropy rate make_markov.py states for markov.txt
MARGIN = 0.02  # how close to the floor the training test must get (it reaches about floor + 0.008)


@pytest.fixture(scope="module")
def make_markov():
    spec = importlib.util.spec_from_file_location("make_markov", CORPORA / "make_markov.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chain(make_markov) -> tuple[list[str], np.ndarray]:
    """The generator's token chain, rebuilt exactly as its main() builds it."""
    rng = random.Random(make_markov.SEED)
    while True:
        tokens, P = make_markov.build_chain(rng)
        if make_markov.is_irreducible(P):
            return tokens, P


@pytest.fixture(scope="module")
def text() -> str:
    return MARKOV.read_text(encoding="utf-8")


def _token_ids(text: str, tokens: list[str]) -> tuple[list[str], np.ndarray]:
    """Split the text into its tokens (a word and the separator after it): there is only one way to."""
    found = re.findall(r"[^ \n]*[ \n]", text)
    assert "".join(found) == text
    index = {t: i for i, t in enumerate(tokens)}
    return found, np.array([index[t] for t in found])


def test_shipped_file_is_what_the_generator_writes(tmp_path: Path, text: str) -> None:
    shutil.copy(CORPORA / "make_markov.py", tmp_path / "make_markov.py")
    runpy.run_path(str(tmp_path / "make_markov.py"), run_name="__main__")
    assert (tmp_path / "markov.txt").read_text(encoding="utf-8") == text
    assert 250_000 <= len(text) <= 400_000


def test_stated_entropy_rate(make_markov, chain) -> None:
    tokens, P = chain
    assert np.allclose(P.sum(axis=1), 1.0)
    pi = make_markov.stationary(P)
    assert np.allclose(pi @ P, pi) and (pi > 0).all()
    h, length, bpc = make_markov.entropy_rate(tokens, P)
    assert bpc == pytest.approx(h / length)
    assert round(bpc, 6) == FLOOR
    assert all(" " not in t[:-1] and "\n" not in t[:-1] and t[-1] in " \n" for t in tokens)


def test_true_chain_log_loss_on_the_file_matches_the_rate(chain, text: str) -> None:
    """Score the file with the chain that made it: the per-character log-loss is the entropy rate."""
    tokens, P = chain
    found, seq = _token_ids(text, tokens)
    p = P[seq[:-1], seq[1:]]
    assert (p > 0).all()  # every transition in the file is one the chain can make
    bits = -np.log2(p).sum()
    chars = len(text) - len(found[0])
    assert bits / chars == pytest.approx(FLOOR, abs=0.005)  # measured: 0.24961


def _validation_chain_bpc(chain, text: str, val_chars: int) -> float:
    """The true chain's bits/char on the tokens that start inside the validation part (the last val_chars)."""
    tokens, P = chain
    found, seq = _token_ids(text, tokens)
    start, pos, bits, chars = len(text) - val_chars, 0, 0.0, 0
    for i, tok in enumerate(found):
        if i > 0 and pos >= start:
            bits -= math.log2(P[seq[i - 1], seq[i]])
            chars += len(tok)
        pos += len(tok)
    return bits / chars


def test_training_gets_close_to_the_floor(chain, text: str) -> None:
    """300 steps of 256 streams x 16 characters, a 96-unit GRU: about 15 s of training on one core.

    Reached: 0.2587 bits/char (floor 0.250618 + 0.008) with the default seed; seeds 1, 2 and 3 gave 0.2588,
    0.2582 and 0.2585. The margin asserted is floor + 0.02, so a real regression fails it. The validation
    part happens to be a little easier than the chain's average (the true chain scores 0.2457 on it).
    """
    options = {
        "hidden": 96,
        "layers": 1,
        "embed": 32,
        "batch_size": 256,
        "seq_len": 16,
        "lr": 1e-2,
        "warmup_steps": 20,
        "max_steps": 300,
        "eval_every": 300,
        "device": "cpu",
        "precision": "fp32",  # the same arithmetic on every CPU, so the figures above hold everywhere
    }
    result = run.train(run.TrainRequest([str(MARKOV)], out=Path("markov-run"), overrides=options))
    assert result.step == 300
    bpc = result.best_val_bpc
    assert bpc < FLOOR + MARGIN
    # and no better than the process allows: the model cannot beat the chain that wrote the text
    assert bpc > _validation_chain_bpc(chain, text, int(len(text) * 0.1)) - 0.005

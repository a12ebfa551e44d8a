"""Shared fixtures: a tiny corpus, one tiny trained run per session, and a private working directory per test.

Every test runs in its own temporary directory, so nothing a test does (a default `checkpoints/` run folder,
a stray output file) can reach the repository's own `./checkpoints`.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

# The model shape and schedule of the session's tiny run (small enough to train in a second or two).
TINY_RUN = {
    "hidden": 24,
    "layers": 2,
    "embed": 8,
    "batch_size": 8,
    "seq_len": 32,
    "lr": 1e-2,
    "warmup_steps": 5,
    "max_steps": 100,
    "eval_every": 50,
    "val_fraction": 0.2,
    "keep": 2,
    "seed": 7,
    "device": "cpu",
}


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread: the models here are tiny, and on a busy 2-core machine torch's default of one
    # thread per core spends its time waiting at barriers (measured: 20 training steps took 0.2 s with one
    # thread and 24 s with two while other jobs ran). Results do not depend on the thread count.
    torch.set_num_threads(1)


def make_tiny_text(lines: int = 300, seed: int = 0) -> str:
    """A small, learnable text with CJK characters and emoji in it (several thousand characters)."""
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "猫", "小狗"]
    verbs = ["sees", "likes", "chases", "見る"]
    objects = ["the moon", "a ball", "🌙", "🎾", "fish"]
    out = [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(lines)]
    return "\n".join(out) + "\n"


@pytest.fixture(autouse=True)
def _private_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in its own empty directory (so ./checkpoints is the test's own)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def text_maker():
    """make_tiny_text itself, for tests that need other lengths or seeds of the same kind of text."""
    return make_tiny_text


@pytest.fixture
def tiny_text() -> str:
    return make_tiny_text()


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_tiny_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run_settings() -> dict:
    """The tiny run's settings, for tests that train a run of their own of the same size (another cell, say)."""
    return dict(TINY_RUN)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained once per session through the library: 2 layers x 24 hidden, 100 steps."""
    from charlm import training as run

    base = tmp_path_factory.mktemp("tiny-run")
    corpus = base / "tiny.txt"
    corpus.write_text(make_tiny_text(), encoding="utf-8")
    out = base / "run"
    result = run.train(run.TrainRequest([str(corpus)], out=out, overrides=dict(TINY_RUN)))
    assert result.step == TINY_RUN["max_steps"]
    return out


@pytest.fixture(scope="session")
def save_model():
    """save_model(run, model, tokenizer) writes `model` as a checkpoint (step 1) of the run folder `run`, without
    training it: for tests that need a checkpoint of a model they built by hand. Returns `run`."""
    from charlm import checkpoint as ckpt_io
    from charlm.config import TrainConfig

    def save(run: Path, model, tok) -> Path:
        meta = {"model": model.config.to_dict(), "train": TrainConfig().to_dict(), "vocab": tok.to_dict(), "step": 1}
        ckpt_io.save(run, meta, model.state_dict(), {})
        return run

    return save


@pytest.fixture(scope="session")
def tiny_model(tiny_run: Path):
    """(model, tokenizer) of the tiny run's best checkpoint, in eval mode on the CPU. Tests must not modify it."""
    from charlm import checkpoint as ckpt_io

    return ckpt_io.load_model(ckpt_io.resolve(tiny_run))

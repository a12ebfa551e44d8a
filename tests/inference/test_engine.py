"""The batching engine as a library component: seeds as `charlm sample`, stops, logprobs, cancel, swap."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import charlm
from charlm import checkpoint as ckpt_io
from charlm.inference import engine as E
from charlm.inference import sample as sampling


class Got:
    """What a request was handed: text per sample, logprobs per sample, finish reasons, done."""

    def __init__(self, n: int) -> None:
        self.texts, self.lps, self.finish = [""] * n, [[] for _ in range(n)], [None] * n
        self.done = threading.Event()

    def __call__(self, pieces: list[E.Piece], done: bool) -> None:
        for p in pieces:
            self.texts[p.index] += p.text
            self.lps[p.index] += p.logprobs or []
            self.finish[p.index] = p.finish or self.finish[p.index]
        if done:
            self.done.set()


@pytest.fixture
def engine(tiny_run: Path):
    eng = E.Engine(E.load_served(charlm.load(tiny_run)), max_rows=256, max_queue=256).start()
    yield eng
    eng.close()


def submit(eng: E.Engine, job: E.Job) -> tuple[E.Ticket, Got]:
    got = Got(job.n)
    return eng.submit(job, got), got


def test_seeded_requests_match_sample_whatever_shares_the_batch(engine, tiny_run: Path) -> None:
    model, tok, dev = sampling.load(ckpt_io.resolve(tiny_run), "cpu", 1)
    others = [submit(engine, E.Job("my", 3000, 1, 1.0, None, 0.9))[1] for _ in range(70)]  # int8 past 64
    a = submit(engine, E.Job("the cat", 700, 1, 0.7, 5, None, seed=21))[1]
    b = submit(engine, E.Job("", 500, 3, 1.2, None, 0.8, seed=22))[1]
    for g in [a, b, *others]:
        assert g.done.wait(120)
    one = "".join(sampling.stream(model, tok, sampling.SampleOptions(700, 0.7, 5, None, 21, "the cat"), dev))
    assert a.texts == [one]
    assert b.texts == sampling.sample_many(model, tok, sampling.SampleOptions(500, 1.2, None, 0.8, 22, ""), 3, dev)
    assert all(len(g.texts[0]) == 3000 and g.finish == ["length"] for g in others)
    assert engine.stats.rows == 0


def test_stop_strings_end_a_sample_before_them(engine) -> None:
    _, g = submit(engine, E.Job("the", 2000, 4, 1.0, stop=(".", "ch")))
    assert g.done.wait(60)
    for text, why in zip(g.texts, g.finish, strict=True):
        assert why == "stop" and "." not in text and "ch" not in text and len(text) < 2000


def test_logprobs_are_the_models_own(engine, tiny_model) -> None:
    from charlm.interpret.explain import explain

    _, g = submit(engine, E.Job("a dog", 200, 1, 0.0, logprobs=3))
    assert g.done.wait(60)
    model, tok = tiny_model
    text, lps = g.texts[0], g.lps[0]
    assert [e.char for e in lps] == list(text) and len(text) == 200
    ex = explain(model, tok, tok.encode("a dog" + text), top_k=3, gates=False)
    want = -ex.bits[5:] * math.log(2)
    assert np.allclose([e.logprob for e in lps], want, atol=1e-4)
    # greedy: the chosen character is the top alternative
    assert all(e.top[0][0] == e.char and len(e.top) == 3 for e in lps)


def test_cancel_frees_the_rows_and_a_full_queue_is_refused(tiny_run: Path) -> None:
    eng = E.Engine(E.load_served(charlm.load(tiny_run)), max_rows=2, max_queue=1).start()
    try:
        t1, g1 = submit(eng, E.Job("", 10**7, 2))
        while eng.stats.rows < 2:  # admitted
            time.sleep(0.01)
        t2, g2 = submit(eng, E.Job("", 10, 1))  # waits: the batch is full
        with pytest.raises(E.QueueFullError):
            submit(eng, E.Job("", 10, 1))
        t1.cancel()
        assert g1.done.wait(10) and g2.done.wait(10)
        assert len(g2.texts[0]) == 10 and eng.stats.rows == 0
    finally:
        eng.close()


def test_unknown_prime_characters_are_an_error_unless_skipped(engine) -> None:
    from charlm.errors import UsageError

    with pytest.raises(UsageError, match="☃"):
        submit(engine, E.Job("the ☃", 5))
    _, g = submit(engine, E.Job("the ☃", 5, on_unknown="skip"))
    assert g.done.wait(10) and len(g.texts[0]) == 5


def test_swap_serves_new_requests_and_lets_running_ones_finish(engine, tiny_run: Path) -> None:
    old = engine.served
    model, tok, dev = sampling.load(ckpt_io.resolve(tiny_run), "cpu", 1)
    _, running = submit(engine, E.Job("the", 20000, 1, 1.0, seed=3))
    new = E.load_served(charlm.load(tiny_run))
    engine.swap(new)
    t, _ = submit(engine, E.Job("the", 5))
    assert t.served is new and engine.served is new and old is not new
    assert running.done.wait(60)
    assert running.texts[0] == "".join(
        sampling.stream(model, tok, sampling.SampleOptions(20000, seed=3, prime="the"), dev)
    )


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_other_cells_step_through_torch_and_seeds_still_match(cell: str, save_model, tmp_path: Path) -> None:
    import torch

    from charlm.config import ModelConfig
    from charlm.model import CharLM
    from charlm.tokenizer import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer("abcdefgh \n")
    run = save_model(tmp_path / cell, CharLM(ModelConfig(tok.vocab_size, embed=8, hidden=16, layers=2, cell=cell)), tok)
    ck = ckpt_io.resolve(run)
    eng = E.Engine(E.load_served(charlm.load(ck.path, device="cpu"))).start()
    try:
        assert isinstance(eng.served.backend, E.TorchModel)
        others = [submit(eng, E.Job("abc", 300, 2))[1] for _ in range(3)]
        _, seeded = submit(eng, E.Job("abc", 300, 1, 0.9, seed=8))
        for g in [seeded, *others]:
            assert g.done.wait(60)
        model, tok, dev = sampling.load(ck, "cpu", 1)
        assert seeded.texts == [
            "".join(sampling.stream(model, tok, sampling.SampleOptions(300, 0.9, seed=8, prime="abc"), dev))
        ]
        assert all(len(t) == 300 for g in others for t in g.texts)
    finally:
        eng.close()


def test_shared_groups_step_on_int8_from_32_samples_seeded_ones_as_sample_does(tiny_run: Path) -> None:
    import torch

    from charlm.inference.gru_numpy import GRUStep

    if torch.backends.quantized.engine == "none":
        pytest.skip("this torch has no int8 kernels")
    backend = E.load_served(charlm.load(tiny_run)).backend
    parts = [backend.begin(1) for _ in range(E.SHARED_INT8_MIN)]
    backend.feed(parts[0], [3, 4, 5])
    assert isinstance(backend.begin(E.SHARED_INT8_MIN), GRUStep)  # a seeded group: NumPy below 64, as sample
    assert isinstance(backend.begin(sampling.INT8_MIN_BATCH), E._Int8Step)
    assert isinstance(backend.join(parts[:-1]), GRUStep)
    joined = backend.join(parts)
    assert isinstance(joined, E._Int8Step)
    np.testing.assert_allclose(joined.state()[:, 0], parts[0].state()[:, 0], rtol=1e-6)  # its state came along
    assert isinstance(backend.keep(joined, list(range(E.SHARED_INT8_MIN - 1))), GRUStep)


def test_requests_arriving_together_join_the_batch_in_one_rebuild_each_with_its_own_state(tiny_run: Path) -> None:
    served = E.load_served(charlm.load(tiny_run))
    eng = E.Engine(served)  # not started: the round is driven by hand
    backend, calls = served.backend, {"begin": 0, "join": 0}

    def counted(name: str):  # noqa: ANN202 - wraps a backend method
        inner = getattr(backend, name)

        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return inner(*args, **kwargs)

        return call

    backend.begin, backend.join = counted("begin"), counted("join")  # type: ignore[method-assign]
    primes = ["the cat", "", "", "my", "", "the cat"] * 6  # 36 requests: 12 of them have a prime to read
    tickets = [E.Ticket(E.Job(p, 50), served, eng.encode_prime(p), Got(1)) for p in primes]
    eng._priming = [(t, backend.begin(1) if len(t.prime) > 1 else None, 0) for t in tickets]
    calls["begin"] = 0
    eng._prime()
    # one zero-state stepper for the 24 empty primes, and one rebuild (the join's own begin) for all 36
    assert calls == {"begin": 2, "join": 1}
    (group,) = eng._groups
    state = group.step.state()
    for i, row in enumerate(group.rows):
        alone = backend.begin(1)
        backend.feed(alone, row.ticket.prime[:-1])
        np.testing.assert_allclose(state[:, i], alone.state()[:, 0], atol=1e-5)
        assert group.x[i] == row.ticket.prime[-1]
    assert sorted(id(r.ticket) for r in group.rows) == sorted(id(t) for t in tickets)

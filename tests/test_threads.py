"""Work split into one share of rows per thread gives what one thread gives, and the thread count comes back."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from charlm.inference.evaluate import score_ids
from charlm.inference.threads import intra_op_threads, run_shares, shares


@pytest.fixture
def two_threads():
    with intra_op_threads(2):
        yield


def test_shares_cover_the_rows_once(two_threads) -> None:
    assert shares(5, "cpu") == [slice(0, 2), slice(2, 5)]
    assert shares(1, "cpu") == [slice(0, 1)]
    assert shares(5, torch.device("cuda")) == [slice(0, 5)]  # a GPU is one share


def test_each_share_runs_on_its_own_thread_with_one_torch_thread(two_threads) -> None:
    seen = run_shares(lambda rows: (rows, threading.get_ident(), torch.get_num_threads()), shares(4, "cpu"))
    assert [s for s, _, _ in seen] == [slice(0, 2), slice(2, 4)]
    assert len({t for _, t, _ in seen}) == 2 and {n for _, _, n in seen} == {1}
    assert torch.get_num_threads() == 2  # restored


def test_scoring_in_shares_equals_scoring_on_one_thread(tiny_model, text_maker, two_threads) -> None:
    model, tok = tiny_model
    ids = tok.encode(text_maker(lines=200, seed=3))
    split = score_ids(model, ids, streams=8, burn_in=32)
    with intra_op_threads(1):
        whole = score_ids(model, ids, streams=8, burn_in=32)
    assert split.chars == whole.chars and split.nats == pytest.approx(whole.nats, rel=1e-12)
    assert np.isfinite(split.loss)

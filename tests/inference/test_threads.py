"""Work split into shares of rows, one thread each, gives what one thread gives, and the thread count comes back."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from charlm.inference.evaluate import score_ids
from charlm.inference.threads import cpu_threads, intra_op_threads, run_shares, split


@pytest.fixture
def two_threads():
    with intra_op_threads(2):
        yield


def test_split_covers_the_rows_once(two_threads) -> None:
    assert split(5, 2) == [slice(0, 2), slice(2, 5)]
    assert split(1, 2) == [slice(0, 1)] and split(3, 0) == [slice(0, 3)]
    assert cpu_threads("cpu") == 2 and cpu_threads(torch.device("cuda")) == 1  # a GPU is one share


def test_shares_run_side_by_side_each_with_one_torch_thread(two_threads) -> None:
    both = threading.Barrier(2, timeout=10)  # passes only if the two shares run at the same time

    def share(rows: slice) -> tuple[slice, int, int]:
        both.wait()
        return rows, threading.get_ident(), torch.get_num_threads()

    seen = run_shares(share, split(4, 2), 2)
    assert [s for s, _, _ in seen] == [slice(0, 2), slice(2, 4)]
    assert len({t for _, t, _ in seen}) == 2 and {n for _, _, n in seen} == {1}
    assert torch.get_num_threads() == 2  # restored
    assert run_shares(lambda rows: threading.get_ident(), split(4, 2), 1) == [threading.get_ident()] * 2


def test_scoring_in_shares_equals_scoring_on_one_thread(tiny_model, text_maker, two_threads) -> None:
    model, tok = tiny_model
    ids = tok.encode(text_maker(lines=200, seed=3))
    split_up = score_ids(model, ids, streams=8, burn_in=32)
    with intra_op_threads(1):
        whole = score_ids(model, ids, streams=8, burn_in=32)
    assert split_up.chars == whole.chars and split_up.nats == pytest.approx(whole.nats, rel=1e-12)
    assert np.isfinite(split_up.loss)

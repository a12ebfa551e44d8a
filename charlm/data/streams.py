"""The stream batcher for truncated BPTT: the training ids cut into parallel streams, read window by window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlm.data.corpus import streams_problem
from charlm.errors import CorpusError


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) input ids
    y: torch.Tensor  # (B, T) the next character for each input
    reset: bool  # True at the start of a pass: the carried hidden state must be zeroed


class TokenStreams:
    """Stateful truncated BPTT: the text is cut into `num_streams` contiguous streams read side by side.

    Step k reads characters [offset, offset + seq_len) of every stream, so row b of one batch continues
    exactly where row b of the previous batch stopped, and the hidden state can be carried across steps.
    After the last full window the offset returns to 0 (a new pass) and `reset` says so.
    The only state is `offset`, which a checkpoint stores for an exact resume.
    `rows` picks a block of the streams: one rank's share in data-parallel training (RankInfo.rows).
    """

    def __init__(self, ids: np.ndarray, num_streams: int, seq_len: int, rows: slice | None = None) -> None:
        if problem := streams_problem(len(ids), num_streams, seq_len):
            raise CorpusError(problem)
        self.num_streams, self.seq_len = num_streams, seq_len
        self.stream_len = (len(ids) - 1) // num_streams
        usable = self.stream_len * num_streams
        rows = rows or slice(None)
        # Row b holds stream b; the targets are the same text shifted by one character. These are views,
        # so a memory-mapped id file is never read whole: each batch copies only its own window.
        self._x = ids[:usable].reshape(num_streams, -1)[rows]
        self._y = ids[1 : usable + 1].reshape(num_streams, -1)[rows]
        self.windows = self.stream_len // seq_len
        self.offset = 0

    @property
    def chars_per_batch(self) -> int:
        """What one step reads from all the streams (all ranks together, when `rows` is one rank's share)."""
        return self.num_streams * self.seq_len

    def next_batch(self) -> Batch:
        reset = self.offset == 0
        a, b = self.offset, self.offset + self.seq_len
        x = torch.from_numpy(self._x[:, a:b].astype(np.int64))
        y = torch.from_numpy(self._y[:, a:b].astype(np.int64))
        batch = Batch(x, y, reset)
        self.offset = 0 if b + self.seq_len > self.stream_len else b
        return batch
